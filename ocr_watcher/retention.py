"""Retention: remove whole terminal jobs, oldest first, while the outbox is over a limit.

Limits (the `retention` section of the config; `MAX_JOB_*` in the environment):

- `max_job_age_hours`: a terminal job that finished more than this long ago is deleted (reason "age").
- `max_job_count`: while there are more job folders than this, the oldest terminal jobs are deleted
  (reason "count"). Every job folder counts, queued, processing and unreadable ones too, but only
  terminal ones are deleted, so the count may stay above the limit while many jobs are running.
- `max_job_storage_mb`: while the job folders hold more than this many MiB (sum of file sizes), the
  oldest terminal jobs are deleted (reason "storage"). Every job folder counts, as for the count.

A limit of 0 means "no limit", for each of the three (retention that deletes everything because a
value was left at 0 would be the worse surprise). "Oldest" is by `finished_at`, else `created_at`;
ties go to the earlier `created_at`, then the smaller job id, so the order is always the same. A job
over several limits is reported under the first that applies, in the order age, count, storage.

Only job folders are ever removed: names that are job ids, real directories (not symlinks), with a
metadata.json that says completed, failed or cancelled and no RETRY file (invariant 5). Deleting one
is crash-safe: take the job's ownership lease at the next epoch (which fences a daemon that might be
retrying it, and another host's retention), re-read metadata.json under the lease, rename the folder
into the hidden trash in the outbox's internal area, then remove it. A crash leaves either an intact
job or hidden trash, which the next pass removes. A lease that a crash left behind (older than the
heartbeat lease, with metadata.json still at the old epoch) is stepped over, and released again if
the job must be kept, so neither retention nor a RETRY stays blocked by it.

Sizes are measured once per finished job: a completed job never changes, and its size is kept in the
job store's record of completed jobs (spool/completed.py, one int per job, shared with the main loop
and the job API, and mostly filled by the daemon's start-up scan, so its metadata.json is not read
here again); a failed or cancelled one is re-read only when its folder's mtime changes (metadata.json
replaced, RETRY created). So a pass over 100,000 finished jobs costs one scandir of the outbox plus a
stat per failed/cancelled job, and allocates nothing per completed job: when no count or storage
limit is exceeded only the jobs over the age limit are looked at, and otherwise the completed ones
are sorted by their packed times and made into `JobUsage` only as far as the choice reads. In the
daemon the passes run on a background thread; what they find is reported as data (JobDeleted,
OutboxMeasured), which the service hands on to the other hooks from the main thread.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from .config import Config, RetentionConfig
from .hooks import Hooks
from .observe import JobDeleted, OutboxMeasured, Report, Snapshot, Started
from .spool.atomic import fsync_dir
from .spool.completed import age_key, ended_ms, from_ms, ms_of, size_of
from .spool.layout import RETRY
from .spool.model import JobMeta, Status, iso, utc_now
from .spool.store import JobStore

log = logging.getLogger("ocr_watcher.retention")

REASONS = ("age", "count", "storage")
TRASH_DIR = "trash"
MIB = 1024 * 1024
MAX_LEASE_STEPS = 16  # abandoned leases stepped over on one job before giving up


# -- the decision: plain data in, plain data out --------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """None means no limit."""

    max_bytes: int | None = None
    max_count: int | None = None
    max_age: timedelta | None = None

    @classmethod
    def from_config(cls, config: RetentionConfig) -> Limits:
        return cls(
            max_bytes=round(config.max_job_storage_mb * MIB) or None,
            max_count=config.max_job_count or None,
            max_age=timedelta(hours=config.max_job_age_hours) if config.max_job_age_hours else None,
        )


@dataclass(frozen=True, slots=True)
class JobUsage:
    job_id: str
    size_bytes: int
    terminal: bool  # may be deleted: completed, failed or cancelled, and no RETRY pending
    finished_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def ended_at(self) -> datetime | None:
        return self.finished_at or self.created_at


Deletion = JobDeleted  # (job_id, reason, size_bytes): what a pass decides is what the hooks are told


def _oldest_first(job: JobUsage) -> tuple:
    return (job.ended_at, job.created_at or job.ended_at, job.job_id)


def choose_deletions(jobs: Iterable[JobUsage], limits: Limits, now: datetime) -> list[Deletion]:
    """Which terminal jobs to delete, oldest first, and why. Non-terminal jobs count but always stay."""
    jobs = list(jobs)
    candidates = sorted((job for job in jobs if job.terminal and job.ended_at is not None), key=_oldest_first)
    return choose_oldest(candidates, len(jobs), sum(job.size_bytes for job in jobs), limits, now)


def over_count_or_storage(count: int, total: int, limits: Limits) -> bool:
    """Whether `choose_oldest` may go past the jobs that are over the age limit."""
    return (limits.max_count is not None and count > limits.max_count) or (
        limits.max_bytes is not None and total > limits.max_bytes
    )


def choose_oldest(
    candidates: Iterable[JobUsage], count: int, total: int, limits: Limits, now: datetime
) -> list[Deletion]:
    """`choose_deletions` from its parts: the deletable jobs oldest first, read only as far as needed
    (so that a caller with very many can make them as they are read), and the number and bytes of all
    job folders. Unless `over_count_or_storage`, only the jobs over the age limit are ever read."""
    deletions: list[Deletion] = []
    for job in candidates:
        assert job.ended_at is not None
        if limits.max_age is not None and now - job.ended_at > limits.max_age:
            reason = "age"
        elif limits.max_count is not None and count > limits.max_count:
            reason = "count"
        elif limits.max_bytes is not None and total > limits.max_bytes:
            reason = "storage"
        else:
            break  # every later candidate is younger, and count and storage are within their limits
        deletions.append(Deletion(job.job_id, reason, job.size_bytes))
        count -= 1
        total -= job.size_bytes
    return deletions


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


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "?"
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


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
        nothing per completed job, and measures each once."""
        census = _Census()
        completed, cache = self.completed, self._cache
        noted = cached = 0  # of the listed jobs, how many `completed` and `_cache` hold
        for job_id in self.store.iter_job_ids():
            census.count += 1
            value = completed.packed(job_id)
            if value is None:
                cached += job_id in cache
                usage = self._usage(job_id)
                if usage is not None:
                    census.others.append(usage)
                    census.total_bytes += usage.size_bytes
                    continue
                value = completed.packed(job_id)  # completed: noted by `_usage`
            elif cache:
                cache.pop(job_id, None)  # completed since it was cached
            noted += 1
            size = size_of(value) if value is not None else None
            if size is None:
                size = folder_size(os.path.join(self._root, job_id))
                completed.set_size(job_id, size)
            census.total_bytes += size
        # Some are gone: forget them, unless the outbox went away during the listing.
        if (noted < len(completed) or cached < len(cache)) and self.store.missing() is None:
            listed = set(self.store.iter_job_ids())
            completed.prune(listed, self._root)
            for gone in [job_id for job_id in cache if job_id not in listed]:
                del cache[gone]
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
        others = sorted((u for u in census.others if u.terminal and u.ended_at is not None), key=_oldest_first)
        for usage in heapq.merge((u for u in completed if u is not None and u.terminal), others, key=_oldest_first):
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
        os.rename(self.store.paths(job_id).dir, target)
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


def describe(deletion: Deletion, job: JobUsage | None, now: datetime) -> str:
    """`<reason> limit, <size>, finished <when> (<age> ago)`: for the log and for `purge`."""
    ended = job.ended_at if job is not None else None
    return (
        f"{deletion.reason} limit, {human_bytes(deletion.size_bytes)},"
        f" finished {iso(ended) or '?'} ({human_age(ended, now)} ago)"
    )


# -- the daemon's side ---------------------------------------------------------------------------
class RetentionHooks(Hooks):
    """Runs a pass at start and every `retention.interval_seconds` after the previous one ended.

    The pass runs on a background thread (the first one over a big outbox reads every job), so the
    main loop never waits on it. What it finds, the jobs deleted and the outbox's size, it reports as
    data (take_reports), which the service hands on to the other hooks from the main thread."""

    def __init__(self) -> None:
        self.retention: Retention | None = None
        self._store: JobStore | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reports: queue.SimpleQueue[Report] = queue.SimpleQueue()  # from the pass's thread
        self._last_end: float | None = None

    def on_start(self, started: Started) -> None:
        self._store = started.store
        try:
            self._start_pass(started.snapshot.config)
        except Exception:
            log.exception("retention: cannot start (will try again)")
            self._last_end = time.monotonic()

    def on_tick(self, snapshot: Snapshot) -> None:
        try:
            if self._due(snapshot.config):
                self._start_pass(snapshot.config)
        except Exception:
            log.exception("retention: internal error (will try again)")

    def on_stop(self, snapshot: Snapshot) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)  # a removal still running finishes from the trash next time

    def take_reports(self) -> list[Report]:
        reports: list[Report] = []
        while True:
            try:
                reports.append(self._reports.get_nowait())
            except queue.Empty:
                return reports

    # -- internals ---------------------------------------------------------------------------------
    def _due(self, config: Config) -> bool:
        if self._last_end is None or self._stop.is_set():
            return False
        running = self._thread is not None and self._thread.is_alive()
        return not running and time.monotonic() - self._last_end >= config.retention.interval_seconds

    def _start_pass(self, config: Config) -> None:
        if self.retention is None:
            assert self._store is not None, "on_start first"
            self.retention = Retention(self._store, lease_grace_seconds=config.jobs.heartbeat_lease_seconds)
        limits = Limits.from_config(config.retention)  # read each time: SIGHUP changes it
        self._last_end = None
        self._thread = threading.Thread(target=self._run, args=(limits,), name="retention", daemon=True)
        self._thread.start()

    def _run(self, limits: Limits) -> None:
        assert self.retention is not None
        now = utc_now()
        try:
            result = self.retention.run_pass(
                limits, now, on_deleted=lambda d, job: self._on_deleted(d, job, now), should_stop=self._stop.is_set
            )
            if result.outbox_missing is None:
                self._reports.put(OutboxMeasured(result.total_bytes))
            for job_id, why in result.skipped:
                log.info("%s: kept by retention although over a limit: %s", job_id, why)
            if result.trash_removed:
                log.info("retention: removed %d leftovers from the trash", result.trash_removed)
        except Exception:
            log.exception("retention pass failed (will try again)")
        finally:
            self._last_end = time.monotonic()

    def _on_deleted(self, deletion: Deletion, job: JobUsage, now: datetime) -> None:
        log.info("%s: deleted by retention: %s", deletion.job_id, describe(deletion, job, now))
        self._reports.put(deletion)


def make_hooks(config: Config) -> RetentionHooks:
    return RetentionHooks()
