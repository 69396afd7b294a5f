"""Inputs whose writer was not done when they were claimed.

Intake claims a file once it has looked complete and unchanged for the settle time. A writer that
pauses longer than that right after bytes that look complete (a PDF whose incremental update is
still to come) goes on writing into the claimed file, because on one filesystem the claim's rename
keeps the inode. So the claim records the input's size and mtime (its stamp), and the service
compares them with the file before a job opens and before it completes: a job whose input changed
starts over, once the file has been unchanged for the settle time, with the new size and digest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..spool.model import Source

InputStamp = tuple[int, int]  # (size, mtime in ns)


def stamp_of(path: Path) -> InputStamp | None:
    """The file's stamp; None when it cannot be read (gone, no permission)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def changed_since_claim(source: Source, path: Path) -> InputStamp | None:
    """The input's stamp when it differs from the one its claim recorded, else None (also when the
    claim recorded none: a copy from another filesystem, or a job claimed by an older version)."""
    if source.mtime_ns is None:
        return None
    stamp = stamp_of(path)
    if stamp is None or stamp == (source.size, source.mtime_ns):
        return None
    return stamp


class SettleWatch:
    """Jobs waiting for their input to stop changing: job id -> (last stamp seen, since when)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[InputStamp | None, float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._seen

    def add(self, job_id: str, stamp: InputStamp | None, now: float) -> None:
        self._seen[job_id] = (stamp, now)

    def discard(self, job_id: str) -> None:
        self._seen.pop(job_id, None)

    def settled(self, now: float, settle_seconds: float, stamp: Callable[[str], InputStamp | None]) -> list[str]:
        """Jobs whose input has not changed for `settle_seconds` (they leave the watch); the others'
        stamps are taken again, and a change starts their wait over."""
        done: list[str] = []
        for job_id, (seen, since) in list(self._seen.items()):
            current = stamp(job_id)
            if current != seen:
                self._seen[job_id] = (current, now)
            elif now - since >= settle_seconds:
                del self._seen[job_id]
                done.append(job_id)
        return done
