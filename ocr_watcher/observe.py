"""What observers (metrics, systemd notify, health, retention, the HTTP server) are given: plain
values that the service builds, never the service itself, so that no observer can reach into the
main loop and dependencies run one way (docs/architecture.md).

- `Snapshot`: the daemon's state at one tick, read-only; every hook's on_tick gets a fresh one.
- `Started`: on_start's argument: the first snapshot, plus what an observer that acts is lent (the
  job store for retention and the job API, `JobControl` for the API's requests to the main loop).
- Reports (`JobDeleted`, `OutboxMeasured`, `DeliveryEnded`): what a hook found out for the others; the service asks
  for them after each tick (Hooks.take_reports) and hands them on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from .config import Config
from .spool.model import Status

if TYPE_CHECKING:
    from .engines.base import Engine
    from .intake.sniff import Sniff
    from .pipeline.scheduler import QueueEntry
    from .spool.store import JobStore


@dataclass(frozen=True)
class EngineView:
    """One engine instance as observers see it."""

    label: str  # "tesseract (eng, 300 dpi)": what /readyz names
    name: str  # the engine kind: the metrics' `engine` label
    # Asked live, not sampled: /readyz answers from the HTTP threads between ticks.
    health: Callable[[], str | None]


@dataclass(frozen=True)
class Snapshot:
    """The daemon's state at one tick; built by `snapshot_of`, on the main thread."""

    config: Config  # the running configuration; a reload replaces the object (compare with `is`)
    jobs: Mapping[Status, int]  # this daemon's jobs in memory, by status (absent: none)
    queue_jobs: int  # jobs with pages (or their opening) waiting in the page queue
    queue_pages: int
    pages_in_flight: int  # being rendered or recognised now
    inbox_waiting: int  # inbox files seen but not claimed yet
    outbox_bytes: int | None  # as retention last measured the job folders; None until it has
    engines: tuple[EngineView, ...]
    reload_pending: bool = False  # a SIGHUP arrived; the reload runs right after this tick's hooks
    # The jobs with work left, in the page queue's terms; asked (on the main thread) when wanted, as
    # copying them each tick would cost the busy loop for nothing (ocr_watcher/eta asks each second).
    queue: Callable[[], Sequence[QueueEntry]] = lambda: ()

    def count(self, status: Status) -> int:
        return self.jobs.get(status, 0)

    @property
    def jobs_active(self) -> int:
        """Every job this daemon holds in memory, whatever its status."""
        return sum(self.jobs.values())


def engine_label(key: Any, engine: Engine) -> str:
    """'tesseract (eng, 300 dpi)' for the service's (name, language, dpi, model, mode) keys."""
    if isinstance(key, tuple) and key:
        name, *settings = key
        details = ", ".join(str(part) for part in settings if part)
        return f"{name} ({details})" if details else str(name)
    return str(getattr(engine, "name", key))


def snapshot_of(
    config: Config,
    statuses: Iterable[Status],
    depth: tuple[int, int],
    *,
    pages_in_flight: int,
    inbox_waiting: int,
    outbox_bytes: int | None,
    engines: Mapping[Any, Engine],
    reload_pending: bool = False,
    queue: Callable[[], Sequence[QueueEntry]] = lambda: (),
) -> Snapshot:
    """A Snapshot from the service's parts: `statuses` of the jobs in memory, `depth` as
    (jobs, pages) waiting, `engines` by the service's engine key."""
    return Snapshot(
        config=config,
        jobs=MappingProxyType(dict(Counter(statuses))),
        queue_jobs=depth[0],
        queue_pages=depth[1],
        pages_in_flight=max(0, pages_in_flight),  # the pipeline's count is approximate
        inbox_waiting=inbox_waiting,
        outbox_bytes=outbox_bytes,
        engines=tuple(EngineView(engine_label(key, e), e.name, e.health) for key, e in engines.items()),
        reload_pending=reload_pending,
        queue=queue,
    )


class JobControl(Protocol):
    """What the job API may ask of the running daemon (the service is one): the rest it reads from
    the folders. Every method but `call` must run on the main thread, through `call`."""

    worker_id: str
    config: Config  # the running configuration, read live (a reload may change tokens and limits)

    def call(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any: ...

    def claim_upload(self, inbox_path: str, filename: str, profile: str, sniff: Sniff, sha256: str) -> str: ...

    def cancel_now(self, job_id: str) -> None: ...

    def retry_now(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Started:
    """What on_start gets: the state, and what an observer that acts is lent."""

    snapshot: Snapshot
    store: JobStore  # the daemon's one job store (its record of completed jobs is shared)
    control: JobControl


@dataclass(frozen=True, slots=True)
class JobDeleted:
    """Retention removed (or, on a dry run, would remove) a terminal job; reason: "age", "count" or
    "storage" (retention.REASONS)."""

    job_id: str
    reason: str
    size_bytes: int


@dataclass(frozen=True)
class OutboxMeasured:
    """Retention measured the job folders: the next snapshots carry this as `outbox_bytes`."""

    size_bytes: int


@dataclass(frozen=True, slots=True)
class DeliveryEnded:
    """One try of a delivery (ocr_watcher/deliveries): webhook "delivered", "retried" or
    "undeliverable"; command "ok", "failed" or "timeout"."""

    kind: str  # "webhook" or "command"
    outcome: str


Report = JobDeleted | OutboxMeasured | DeliveryEnded
