"""A file's size and sha256 in one read: what a job was made from (at its claim, and again when its input
changed after it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def size_and_sha256(path: Path) -> tuple[int, str | None]:
    """Size and digest; an unreadable file (permissions) still becomes a job, which then fails."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except PermissionError:
        return path.stat().st_size, None
    return size, digest.hexdigest()
