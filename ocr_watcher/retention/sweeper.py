"""Retention's I/O for one outbox: the census of job folders and their sizes, the crash-safe
deletion under a lease, and the trash (see the package's doc)."""

from __future__ import annotations

import heapq
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..spool.atomic import fsync_dir
from ..spool.completed import age_key, ended_ms, from_ms, ms_of, size_of
from ..spool.done import remove_done
from ..spool.layout import RETRY
from ..spool.model import JobMeta, Status, utc_now
from ..spool.store import JobStore
from ..spool.walk import OutboxWalker
from .policy import Deletion, JobUsage, Limits, choose_oldest, oldest_first, over_count_or_storage

log = logging.getLogger("ocr_watcher.retention")

TRASH_DIR = "trash"
MAX_LEASE_STEPS = 16  # abandoned leases stepped over on one job before giving up


# -- measuring -----------------------------------------------------------------------------------
def folder_size(path: Path | str) -> int:
    """Sum of the sizes of the files under `path`; symlinks are not followed, vanished files skipped."""
    total = 0
    stack = [os.fspath(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    return total


@dataclass(slots=True)
class _Cached:
    usage: JobUsage
    status: Status
    dir_mtime_ns: int


@dataclass(slots=True)
class _Census:
    count: int = 0  # job folders
    total_bytes: int = 0
    others: list[JobUsage] = field(default_factory=list)  # every job that is not completed


# -- one outbox: inventory, crash-safe deletion, trash -------------------------------------------
@dataclass
class PassResult:
    deletions: list[Deletion] = field(default_factory=list)  # done (or, on a dry run, that would be)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (job id, why) chosen but kept
    jobs: dict[str, JobUsage] = field(default_factory=dict)  # the jobs the choice looked at (the oldest)
    total_bytes: int = 0  # job folders left afterwards
    job_count: int = 0
    trash_removed: int = 0
    outbox_missing: str | None = None  # the pass did nothing: the outbox was away (JobStore.missing)

    @property
    def deleted_bytes(self) -> int:
        return sum(d.size_bytes for d in self.deletions)


class Retention:
    """The I/O around `choose_deletions` for one outbox. Not thread-safe: one pass at a time."""

    def __init__(self, store: JobStore, *, lease_grace_seconds: float = 60.0) -> None:
        self.store = store
        self.lease_grace_seconds = lease_grace_seconds
        self.completed = store.completed  # completed jobs, with the sizes measured here
        self._cache: dict[str, _Cached] = {}  # failed and cancelled jobs
        self._others: list[str] = []  # every job not completed at the last census
        self._walker = OutboxWalker(store)
        self._root = os.fspath(store.root)

    @property
    def trash(self) -> Path:
        return self.store.layout.internal / TRASH_DIR

    def run_pass(
        self,
        limits: Limits,
        now: datetime | None = None,
        *,
        dry_run: bool = False,
        on_deleted: Callable[[Deletion, JobUsage], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> PassResult:
        now = now or utc_now()
        result = PassResult()
        result.outbox_missing = self.store.missing()
        if result.outbox_missing is not None:  # an empty listing then says nothing about the jobs
            return result
        if not dry_run:
            result.trash_removed = self.sweep_trash()
        census = self._census()
        result.job_count, result.total_bytes = census.count, census.total_bytes
        candidates = self._candidates(census, limits, now, result.jobs)
        for deletion in choose_oldest(candidates, census.count, census.total_bytes, limits, now):
            if should_stop():
                break
            why_kept = None if dry_run else self.delete(deletion.job_id)
            if why_kept is not None:
                result.skipped.append((deletion.job_id, why_kept))
                continue
            result.deletions.append(deletion)
            result.job_count -= 1
            result.total_bytes -= deletion.size_bytes
            if on_deleted is not None:
                on_deleted(deletion, result.jobs[deletion.job_id])
        return result

    # -- inventory ---------------------------------------------------------------------------------
    def inventory(self) -> list[JobUsage]:
        """Every job folder with its size; measures only folders it has not seen finished."""
        census = self._census()
        completed = (self._completed_usage(job_id) for job_id in self.completed.ids())
        return [*(usage for usage in completed if usage is not None), *census.others]

    def _census(self) -> _Census:
        """How many job folders and bytes the outbox holds, and the usage of every job but the
        completed ones, which stay in the store's `completed`: with 100,000 jobs, a pass allocates
        nothing per completed job, measures each once, and lists the outbox only when its folders
        may have changed (spool/walk.py)."""
        census = _Census()
        walk = self._walker.walk(self._others)
        for job_id in walk:
            usage = self._usage(job_id)
            if usage is None:  # completed: noted by `_usage`
                walk.completed_found()
                continue
            census.count += 1
            census.others.append(usage)
            census.total_bytes += usage.size_bytes
        if walk.finish():  # a full listing: the failed and cancelled jobs not in it are gone
            listed = {usage.job_id for usage in census.others}
            for gone in [job_id for job_id in self._cache if job_id not in listed]:
                del self._cache[gone]
        self._others = [usage.job_id for usage in census.others]
        completed = self.completed
        for job_id in completed.ids():
            value = completed.packed(job_id)
            if value is None:
                continue  # deleted meanwhile
            size = size_of(value)
            if size is None:
                size = folder_size(os.path.join(self._root, job_id))
                completed.set_size(job_id, size)
            census.count += 1
            census.total_bytes += size
        return census

    def _candidates(
        self, census: _Census, limits: Limits, now: datetime, seen: dict[str, JobUsage]
    ) -> Iterator[JobUsage]:
        """The deletable jobs, oldest first, made as `choose_oldest` reads them (each one read is
        kept in `seen`). Completed jobs are sorted by their packed times alone, and when no count or
        storage limit is exceeded only those old enough for the age limit are looked at."""
        packed = self.completed.packed
        if over_count_or_storage(census.count, census.total_bytes, limits):
            ids = sorted(self.completed.ids())  # by id first: the stable sorts below keep it for ties
            oldest = _oldest_ids(ids, key=lambda job_id: age_key(packed(job_id)))
        elif limits.max_age is not None:
            cutoff = ms_of(now - limits.max_age)
            ids = sorted(job_id for job_id in self.completed.ids() if ended_ms(packed(job_id)) <= cutoff)
            oldest = iter(sorted(ids, key=lambda job_id: age_key(packed(job_id))))
        else:
            return
        completed = (self._completed_usage(job_id) for job_id in oldest)
        others = sorted((u for u in census.others if u.terminal and u.ended_at is not None), key=oldest_first)
        for usage in heapq.merge((u for u in completed if u is not None and u.terminal), others, key=oldest_first):
            seen[usage.job_id] = usage
            yield usage

    def _completed_usage(self, job_id: str) -> JobUsage | None:
        known = self.completed.get(job_id)
        if known is None:
            return None  # gone meanwhile
        deletable = not self.store.has_control(job_id, RETRY)  # pending, it keeps the job (the daemon clears it)
        return JobUsage(job_id, known.size or 0, deletable, from_ms(known.finished_ms), from_ms(known.created_ms))

    def _usage(self, job_id: str) -> JobUsage | None:
        """A job's usage, or None when it turns out to be completed (then noted in `completed`)."""
        cached = self._cache.get(job_id)
        mtime_ns = self._dir_mtime_ns(job_id)
        if cached is not None and cached.dir_mtime_ns == mtime_ns:
            return cached.usage  # failed/cancelled, and nothing was replaced or added since
        self._cache.pop(job_id, None)
        paths = self.store.paths(job_id)
        meta = self.store.load_unless_completed(job_id)
        if meta is None and job_id in self.completed:
            return None
        size = folder_size(paths.dir)
        if meta is None:  # unreadable or vanished: counted, never deleted
            return JobUsage(job_id, size, terminal=False)
        deletable = meta.status.terminal and not paths.retry.exists()
        usage = JobUsage(job_id, size, deletable, meta.finished_at, meta.created_at)
        if meta.status.terminal and mtime_ns is not None:
            self._cache[job_id] = _Cached(usage, meta.status, mtime_ns)
        return usage

    def _dir_mtime_ns(self, job_id: str) -> int | None:
        try:
            return os.stat(os.path.join(self._root, job_id)).st_mtime_ns  # os.path: this runs per job per pass
        except OSError:
            return None

    # -- deletion ----------------------------------------------------------------------------------
    def delete(self, job_id: str) -> str | None:
        """Delete one terminal job, crash-safely. None when done, else why the job was kept."""
        self._cache.pop(job_id, None)  # whatever happens, look at it afresh next time
        meta = self.store.try_load(job_id)
        why = self._deletable(meta, job_id)
        if meta is None or why is not None:
            return why
        epoch = meta.worker.epoch
        held = self.store.take_next_lease(
            job_id, epoch, abandoned_after=self.lease_grace_seconds, max_steps=MAX_LEASE_STEPS
        )
        if not held:
            return "another process holds its lease (a retry or takeover in progress)"
        current = self.store.try_load(job_id)
        why = self._deletable(current, job_id)
        if why is None and current is not None and current.worker.epoch != epoch:
            why = f"its owner changed (epoch {epoch} -> {current.worker.epoch})"
        if why is not None:
            self._release(job_id, held, current.worker.epoch if current is not None else epoch)
            return why
        try:
            self._move_to_trash(job_id)
        except FileNotFoundError:
            self.completed.forget(job_id)
            return "it vanished (deleted by someone else)"
        except OSError as exc:
            self._release(job_id, held, epoch)
            return f"cannot move it to the trash: {exc}"
        self.completed.forget(job_id)
        return None

    def _deletable(self, meta: JobMeta | None, job_id: str) -> str | None:
        if meta is None:
            return "its metadata.json is missing or unreadable"
        if not meta.status.terminal:
            return f"it is {meta.status.value}"
        if self.store.has_control(job_id, RETRY):
            return "a RETRY is pending"
        return None

    def _release(self, job_id: str, epochs: list[int], owner_epoch: int) -> None:
        """Give a kept job back: the leases above its owner's epoch (abandoned ones first, ours last)
        are removed, so that a RETRY can take it over; a lease that fences its owner stays."""
        for epoch in epochs:
            if epoch > owner_epoch:
                try:
                    self.store.paths(job_id).lease(epoch).unlink()
                except FileNotFoundError:
                    pass

    def _move_to_trash(self, job_id: str) -> None:
        self.trash.mkdir(parents=True, exist_ok=True)
        target = self.trash / f"{job_id}-{secrets.token_hex(4)}"
        paths = self.store.paths(job_id)
        remove_done(paths.done, fsync=self.store.fsync)  # a watcher holding the job's path sees it end first
        os.rename(paths.dir, target)
        if self.store.fsync:
            fsync_dir(self.store.root)
        shutil.rmtree(target, ignore_errors=True)  # what is left is removed by the next pass

    def sweep_trash(self) -> int:
        """Remove what a crash (or a failed removal) left in the trash."""
        try:
            names = os.listdir(self.trash)
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            path = self.trash / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            if os.path.lexists(path):
                log.warning("cannot remove %s from the retention trash (will try again)", path)
            else:
                removed += 1
        return removed


def _oldest_ids(ids: list[str], key: Callable[[str], int], first: int = 256) -> Iterator[str]:
    """`ids` sorted by `key`, made as read: the first few without sorting them all (a key object
    for each of 100,000 jobs, all alive at once, would leave the process that much larger), the
    rest only if a pass deletes that many."""
    head = heapq.nsmallest(first, ids, key=key)  # as sorted(...)[:first], ties kept in order
    yield from head
    if len(head) == first:
        yield from sorted(ids, key=key)[first:]
