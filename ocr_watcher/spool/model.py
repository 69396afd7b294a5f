"""metadata.json: the job's state, as one validated model, and the rules for changing it."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .ids import is_job_id

SCHEMA_VERSION = 1
INPUT_FILE = re.compile(r"^input(\.[A-Za-z0-9]{1,10})?$")


class Status(str, Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
RETRYABLE = frozenset({Status.FAILED, Status.CANCELLED})
_ALLOWED: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.PROCESSING, Status.FAILED, Status.CANCELLED}),
    Status.PROCESSING: frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED}),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
    Status.COMPLETED: frozenset(),
}


class InvalidTransition(Exception):
    pass


def check_transition(current: Status, new: Status) -> None:
    if new not in _ALLOWED[current]:
        raise InvalidTransition(f"a job cannot go from {current.value} to {new.value}")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")  # newer daemons may add fields; keep them on rewrite


class Source(_Model):
    name: str
    inbox_path: str
    size: int
    sha256: str | None = None
    origin: str = "inbox"  # "inbox": dropped into the inbox; "http": uploaded through the job API
    # The input's mtime when it was claimed, where a late write could still reach it (one filesystem):
    # with `size`, how the service notices a writer that was not done (pipeline/input_watch.py).
    mtime_ns: int | None = None


class Progress(_Model):
    pages_total: int | None = None
    pages_done: int = 0
    pages_failed: int = 0
    percent: float = 0.0


class EngineInfo(_Model):
    """The engine and the settings the job is done with, fixed at its claim."""

    kind: str
    model: str | None = None
    mode: str | None = None
    language: str | None = None
    dpi: int | None = None

    def settings(self) -> dict:
        return self.model_dump(include={"model", "mode", "language", "dpi"}, exclude_none=True)


class JobError(_Model):
    type: str
    message: str


class Worker(_Model):
    id: str
    host: str
    pid: int
    heartbeat_at: datetime | None = None
    epoch: int = 1  # bumped on every takeover; see JobStore.take_lease


class JobMeta(_Model):
    schema_version: int = SCHEMA_VERSION
    # Bumped by the store on every write: the change signal of a job record (JobStore.metadata_stamp).
    # Second, so that it sits in the file's first bytes.
    revision: int = 0
    job_id: str
    status: Status = Status.QUEUED
    source: Source
    input_file: str
    kind: str | None = None  # "pdf" | "image" | None (unsupported)
    profile: str = "default"
    priority: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    progress: Progress = Field(default_factory=Progress)
    engine: EngineInfo | None = None
    attempts: int = 1
    error: JobError | None = None
    warnings: list[str] = Field(default_factory=list)
    # The job of the same content whose results this one has (completed) or waits for (queued).
    duplicate_of: str | None = None
    worker: Worker
    # Every status this job has had, in order: [{"status": ..., "at": ...}] (a few entries per attempt).
    history: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("job_id")
    @classmethod
    def _job_id_is_a_folder_name(cls, value: str) -> str:
        if not is_job_id(value):
            raise ValueError(f"{value!r} is not a job id")
        return value

    @field_validator("input_file")
    @classmethod
    def _input_is_in_the_job_folder(cls, value: str) -> str:
        if not INPUT_FILE.match(value):
            raise ValueError(f"{value!r} is not an input file name (input or input.<ext>)")
        return value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def copy_whole(self) -> JobMeta:
        """A deep copy for another thread or an observer. Rebuilt by pydantic-core rather than
        `model_copy(deep=True)`, whose copy.deepcopy costs the main thread four times as much."""
        return type(self).model_validate(self.model_dump())

    def transition(self, new: Status, *, now: datetime | None = None, error: JobError | None = None) -> None:
        check_transition(self.status, new)
        now = now or utc_now()
        self.status = new
        if new is Status.PROCESSING and self.started_at is None:
            self.started_at = now
        if new.terminal:
            self.finished_at = now
        if new is Status.QUEUED:
            self.finished_at = None
            self.attempts += 1
        self.error = error if new in RETRYABLE else None
        self.history.append({"status": new.value, "at": iso(now)})

    def set_progress(self, total: int | None, done: int, failed: int) -> None:
        percent = 0.0 if not total else round(100.0 * (done + failed) / total, 1)
        self.progress = Progress(pages_total=total, pages_done=done, pages_failed=failed, percent=percent)


def completed_copy(meta: JobMeta) -> JobMeta:
    """A copy of a job's record as completing it will make it: for an observer that prepares for
    that ending before it is saved (Hooks.ending_work)."""
    ending = meta.copy_whole()
    if ending.status is Status.QUEUED:
        ending.transition(Status.PROCESSING)
    ending.transition(Status.COMPLETED)
    return ending
