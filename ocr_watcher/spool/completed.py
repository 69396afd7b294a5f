"""Completed jobs, as the parts that walk the outbox need them: read once, kept small, shared.

A completed job never changes (no transition leaves `completed`, and a RETRY of one is ignored), so
what its metadata.json said can be kept for good, and one copy serves every walker of the outbox: the
main loop's outbox scan, the job API's listing index and retention. Each is a dict slot and one int
packing the created and finished times (milliseconds) and, once retention has measured it, the size
of the job folder: with a hundred thousand jobs every object per job counts, and that int takes 40
bytes where a small dataclass holding two datetimes takes about 200.

Failed and cancelled jobs are not kept here: a RETRY can change them, and each walker watches them
its own way. Shared by the main thread, HTTP threads and retention's thread: writes take a lock,
reads are single dict look-ups (atomic in CPython).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from bisect import bisect_left
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from heapq import merge
from itertools import groupby
from typing import Any

from .model import JobMeta, Status

_COMPLETED = Status.COMPLETED.value
_MS_BITS = 42  # milliseconds since 1970 fit in 42 bits until the year 2109
_MS_MASK = (1 << _MS_BITS) - 1
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Completed:
    created_ms: int
    finished_ms: int | None
    size: int | None  # bytes of the job folder, once measured

    @property
    def ended_ms(self) -> int:
        return self.finished_ms if self.finished_ms is not None else self.created_ms


def iso_ms(text: object) -> int | None:
    """metadata.json's ISO 8601 time -> milliseconds since 1970 (UTC when no zone is given)."""
    if not isinstance(text, str):
        return None
    try:  # "Z" cut off (older Pythons refuse it), and naive arithmetic: a third of the time
        moment = datetime.fromisoformat(text[:-1] if text.endswith(("Z", "z")) else text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    except ValueError:
        return None
    ms = (moment - _EPOCH_NAIVE) // _ONE_MS
    return ms if 0 <= ms <= _MS_MASK else None  # outside 1970..2109: left to the full validation


def ms_of(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return min(max(0, (moment - EPOCH) // timedelta(milliseconds=1)), _MS_MASK)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else EPOCH + timedelta(milliseconds=ms)


def completed_times(doc: Any, job_id: str) -> tuple[int, int | None] | None:
    """(created, finished) in ms when `doc`, a parsed metadata.json, is this job's and says completed."""
    if not isinstance(doc, dict) or doc.get("status") != _COMPLETED or doc.get("job_id") != job_id:
        return None
    created = iso_ms(doc.get("created_at"))
    if created is None:
        return None  # not a job's metadata as the model reads it: left to the full validation
    return created, iso_ms(doc.get("finished_at"))


# metadata.json as the daemon writes it (json.dumps with indent 2, in the model's field order) begins
# so. This header alone proves the status and the job id: nothing nested comes before it.
_HEADER = re.compile(
    rb'\{\n  "schema_version": \d+,\n(?:  "revision": \d+,\n)?  "job_id": "([^"\\]*)",\n  "status": "completed",\n'
)
# With indent 2, only top-level keys are exactly two spaces in (a raw newline is never inside a string).
_TOP_TIME = re.compile(rb'\n  "(created_at|finished_at)": (?:"([^"\\]*)"|null)')


def header_completed_times(raw: bytes, job_id: str) -> tuple[int, int | None] | None:
    """`completed_times` without parsing the JSON, for a metadata.json in the daemon's own layout
    (twice as fast, and start-up reads one per job); None for any other, which is then parsed."""
    header = _HEADER.match(raw)
    if header is None or header.group(1) != job_id.encode():
        return None
    times = dict(_TOP_TIME.findall(raw, header.end()))
    created = iso_ms(times.get(b"created_at", b"").decode(errors="replace"))
    if created is None:
        return None
    return created, iso_ms(times.get(b"finished_at", b"").decode(errors="replace"))


# One int per job, created in the high bits so that the ints sort like (created, finished):
# created << 92 | (finished + 1) << 50 | (size + 1); 0 in a field is "not known".
_SIZE_BITS = 50  # a petabyte
_SIZE_MASK = (1 << _SIZE_BITS) - 1
_CREATED_SHIFT = _SIZE_BITS + _MS_BITS


def pack(created_ms: int, finished_ms: int | None, size: int | None) -> int:
    finished = 0 if finished_ms is None else finished_ms + 1
    measured = 0 if size is None else min(size + 1, _SIZE_MASK)
    return created_ms << _CREATED_SHIFT | finished << _SIZE_BITS | measured


def unpack(value: int) -> Completed:
    finished = (value >> _SIZE_BITS) & _MS_MASK
    measured = value & _SIZE_MASK
    return Completed(value >> _CREATED_SHIFT, finished - 1 if finished else None, measured - 1 if measured else None)


def created_of(value: int) -> int:
    return value >> _CREATED_SHIFT


def ended_ms(value: int | None) -> int:
    """When the job ended (finished, else created); 0 for an unknown job."""
    if value is None:
        return 0
    finished = (value >> _SIZE_BITS) & _MS_MASK
    return finished - 1 if finished else value >> _CREATED_SHIFT


def age_key(value: int | None) -> int:
    """One int that sorts like (ended, created): retention's oldest first, ties aside."""
    return ended_ms(value) << _MS_BITS | (0 if value is None else value >> _CREATED_SHIFT)


def size_of(value: int) -> int | None:
    measured = value & _SIZE_MASK
    return measured - 1 if measured else None


def _is_folder(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)  # a symlink put in its place is not the job
    except OSError:
        return False


class CompletedJobs:
    """job id -> what its metadata.json said, for the completed jobs seen in one outbox."""

    def __init__(self) -> None:
        self._jobs: dict[str, int] = {}
        self._lock = threading.Lock()
        # Oldest first by (created, id), for the listing index: made on first use, then kept up to date.
        self._order: list[str] | None = None
        self._unordered: list[str] = []  # noted since `_order` was last brought up to date
        self._dropped = 0  # forgotten since then: `_order` still holds them

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> Completed | None:
        value = self._jobs.get(job_id)
        return None if value is None else unpack(value)

    def ids(self) -> list[str]:
        """A snapshot of the ids, in no particular order."""
        with self._lock:
            return list(self._jobs)

    def packed(self, job_id: str) -> int | None:
        """The raw int (see `pack`), for walkers that decode only what they need of many jobs."""
        return self._jobs.get(job_id)

    def add(self, job_id: str, created_ms: int, finished_ms: int | None) -> None:
        """Note a completed job (a size already measured is kept)."""
        with self._lock:
            old = self._jobs.get(job_id)
            size = None if old is None else unpack(old).size
            self._jobs[job_id] = pack(created_ms, finished_ms, size)
            if old is None and self._order is not None:
                self._unordered.append(job_id)

    def note(self, job_id: str, doc: Any) -> bool:
        """Note the job when `doc`, its parsed metadata.json, says completed; whether it did."""
        times = completed_times(doc, job_id)
        if times is None:
            return False
        self.add(job_id, *times)
        return True

    def add_meta(self, meta: JobMeta) -> None:
        """Note a job the daemon has just seen complete."""
        if meta.status is Status.COMPLETED:
            self.add(meta.job_id, ms_of(meta.created_at), None if meta.finished_at is None else ms_of(meta.finished_at))

    def note_raw(self, job_id: str, raw: bytes) -> bool:
        """`note` on metadata.json's bytes, when they are in the daemon's own layout; False otherwise
        (then parse them and call `note`)."""
        times = header_completed_times(raw, job_id)
        if times is None:
            return False
        self.add(job_id, *times)
        return True

    def set_size(self, job_id: str, size: int) -> None:
        with self._lock:
            value = self._jobs.get(job_id)
            if value is not None:
                known = unpack(value)
                self._jobs[job_id] = pack(known.created_ms, known.finished_ms, size)

    def forget(self, job_id: str) -> None:
        with self._lock:
            if self._jobs.pop(job_id, None) is not None:
                self._dropped += 1

    def prune(self, listed: Container[str], root: str | os.PathLike[str]) -> int:
        """Forget the jobs missing from `listed` (a listing of the outbox) whose folder is gone. The
        look at the folder covers a job noted by another walker after this listing was taken."""
        with self._lock:
            missing = [job_id for job_id in self._jobs if job_id not in listed]
        gone = [job_id for job_id in missing if not _is_folder(os.path.join(root, job_id))]
        with self._lock:
            for job_id in gone:
                if self._jobs.pop(job_id, None) is not None:
                    self._dropped += 1
        return len(gone)

    def ordered(self) -> list[str]:
        """Every id, oldest first by (created, finished), then mostly by id. The list is never
        changed once returned (a new one replaces it), so it may be read without the lock; ids
        forgotten since may be in it."""
        with self._lock:
            jobs = self._jobs
            if self._order is None:
                # Sorted by the packed ints themselves: no key object per job (100,000 tuples
                # would be freed at once, but leave the process that much larger).
                self._order = sorted(jobs)
                self._order.sort(key=jobs.__getitem__)
            else:
                if self._dropped:
                    self._order = [job_id for job_id in self._order if job_id in jobs]
                new = sorted({job_id for job_id in self._unordered if job_id in jobs})
                new.sort(key=jobs.__getitem__)
                if new:
                    self._order = self._with(new)
            self._unordered = []
            self._dropped = 0
            return self._order

    def _with(self, new: list[str]) -> list[str]:
        """`_order` with `new` (sorted) put in place; sizes set since (the low bits) may have
        reordered jobs of the same times, so places are found by the times alone."""
        jobs, order = self._jobs, self._order or []

        def times(job_id: str) -> int:
            return jobs[job_id] >> _SIZE_BITS

        if not order or times(new[0]) > times(order[-1]):
            return order + new  # the usual case: newer than every job before
        if len(new) > 64:  # many out of order: merge the two (the ints refine the times)
            merged = merge(order, new, key=jobs.__getitem__)
            return [job_id for job_id, _ in groupby(merged)]
        order = list(order)
        for job_id in new:  # finished out of order, or noted late: each put in its place
            at = bisect_left(order, times(job_id), key=times)
            end = at
            while end < len(order) and times(order[end]) == times(job_id):
                end += 1
            if job_id not in order[at:end]:  # not there already (noted again); same times: by id
                order.insert(at + sum(1 for other in order[at:end] if other < job_id), job_id)
        return order
