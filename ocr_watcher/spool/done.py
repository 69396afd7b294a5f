"""The DONE marker: the last file a job's result writes, listing each result file with its size and
sha256, so that a program watching the outbox never reads a half-finished job.

Order is the whole point. Writing a result: DONE goes first (removed, and that removal made
durable), then the result files (each by temp name, fsync and rename), then DONE, written the same
way. Retrying a job, replacing its results or deleting it: DONE goes first. So a DONE that a reader
sees always names files that are there with the sizes and digests it lists, across a crash at any
point; after a crash mid-write there is no DONE until the write is done again.

DONE is JSON: {"job_id", "status": "completed", "written_at", "files": [{"name", "bytes",
"sha256"}]} with names relative to the job folder (result.md, result_metadata.json, result.txt).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, fsync_dir
from .model import iso, utc_now

_CHUNK = 1 << 20


def manifest(job_id: str, files: dict[str, bytes]) -> dict[str, Any]:
    """DONE's content for the result files written (name -> their bytes), in writing order."""
    entries = [
        {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()
    ]
    return {"job_id": job_id, "status": "completed", "written_at": iso(utc_now()), "files": entries}


def file_entry(path: Path) -> dict[str, Any]:
    """A DONE entry for a file on disk (results shared by hard link, which were not in memory)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"name": path.name, "bytes": size, "sha256": digest.hexdigest()}


def write_done(path: Path, content: dict[str, Any], *, fsync: bool) -> None:
    atomic_write_json(path, content, fsync=fsync)


def remove_done(path: Path, *, fsync: bool) -> None:
    """DONE gone, durably, before anything it lists changes."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    if fsync:
        fsync_dir(path.parent)


def read_done(path: Path) -> dict[str, Any] | None:
    """DONE's content; None when there is none (or it cannot be read as one)."""
    try:
        content = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return content if isinstance(content, dict) else None
