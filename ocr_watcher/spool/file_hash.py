"""A file's size and sha256 in one read: what a job was made from (at its claim, and again when its input
changed after it)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def size_and_sha256(path: Path) -> tuple[int, str | None]:
    """Size and digest; an unreadable file (permissions) still becomes a job, which then fails.
    Read with os.read: a buffered file object adds three system calls (fstat, isatty, lseek) to
    every claim, each a hand-over of the GIL on a busy daemon."""
    digest = hashlib.sha256()
    size = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        return path.stat().st_size, None
    try:
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return size, digest.hexdigest()
