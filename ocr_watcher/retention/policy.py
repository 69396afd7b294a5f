"""What retention deletes and how it says so: pure functions of plain data (see the package's doc)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..config import RetentionConfig
from ..observe import JobDeleted
from ..spool.model import iso

REASONS = ("age", "count", "storage")
MIB = 1024 * 1024


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


def oldest_first(job: JobUsage) -> tuple:
    return (job.ended_at, job.created_at or job.ended_at, job.job_id)


def choose_deletions(jobs: Iterable[JobUsage], limits: Limits, now: datetime) -> list[Deletion]:
    """Which terminal jobs to delete, oldest first, and why. Non-terminal jobs count but always stay."""
    jobs = list(jobs)
    candidates = sorted((job for job in jobs if job.terminal and job.ended_at is not None), key=oldest_first)
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


def describe(deletion: Deletion, job: JobUsage | None, now: datetime) -> str:
    """`<reason> limit, <size>, finished <when> (<age> ago)`: for the log and for `purge`."""
    ended = job.ended_at if job is not None else None
    return (
        f"{deletion.reason} limit, {human_bytes(deletion.size_bytes)},"
        f" finished {iso(ended) or '?'} ({human_age(ended, now)} ago)"
    )
