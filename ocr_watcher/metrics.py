"""Prometheus metrics, /healthz and /readyz: one hook (see hooks.py); http.py serves them.

Counters and histograms move on the hook calls (jobs, pages, retention); gauges are sampled from the
tick's snapshot (observe.py), at most once a second. The figures leave as bytes (the Prometheus text
format) and health as (ok, message): answering HTTP with them is http.py's business. Labels carry
only small fixed sets (outcome, profile, engine, reason), never a job id or a file name. Every
series whose labels are known up front exists from the start at zero, so `rate()` and alerts see
the first event.

Names follow Prometheus conventions: prefix `ocr_watcher_`, base units (seconds, bytes), counters
end in `_total`, timestamps in `_timestamp_seconds`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from . import __version__
from .config import Config
from .hooks import Hooks
from .observe import EngineView, Snapshot, Started
from .retention.policy import REASONS
from .spool.model import JobMeta, Status

log = logging.getLogger("ocr_watcher.metrics")

JOB_OUTCOMES = ("completed", "failed", "cancelled")
PAGE_OUTCOMES = ("done", "failed", "retried")
# Engine time per page: 50 ms (text layer) to 10 minutes (a looping page on a busy GPU).
PAGE_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
# Jobs: a second (one born-digital page) to a day (thousands of scanned pages behind a backlog).
JOB_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
GAUGE_REFRESH_SECONDS = 1.0
HEALTHY_TICK_SECONDS = 10.0  # /healthz fails when the main loop has not ticked for this long
MIB = 1024 * 1024


# -- pure helpers ----------------------------------------------------------------------------------
def profile_names(config: Config) -> list[str]:
    return sorted({"default", *config.profiles})


def job_duration_seconds(meta: JobMeta) -> float | None:
    """Created -> finished (the wait a user sees), or None before the job finished."""
    if meta.finished_at is None:
        return None
    return max(0.0, (meta.finished_at - meta.created_at).total_seconds())


def queue_wait_seconds(meta: JobMeta) -> float | None:
    """How long a job that just started processing had waited since it was (re)queued."""
    moments = [(entry.get("status"), entry.get("at")) for entry in meta.history]
    if not moments or moments[-1][0] != Status.PROCESSING.value:
        return None
    started = _parse_time(moments[-1][1])
    queued = next((_parse_time(at) for status, at in reversed(moments) if status == Status.QUEUED.value), None)
    queued = queued or meta.created_at
    if started is None:
        return None
    return max(0.0, (started - queued).total_seconds())


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def engine_problems(engines: Iterable[EngineView]) -> list[str]:
    """One line per engine that cannot take pages now; empty when all are ready."""
    problems = []
    for engine in engines:
        try:
            reason = engine.health()
        except Exception as exc:  # a broken health check means not ready, not a broken endpoint
            reason = f"health check failed: {exc!r}"
        if reason is not None:
            problems.append(f"{engine.label}: {reason}")
    return problems


# -- the metrics -----------------------------------------------------------------------------------
UPLOAD_OUTCOMES = ("accepted", "too_large", "rejected", "unavailable")


def upload_outcome(status: int) -> str:
    """The api_uploads_total label for the HTTP status POST /jobs/create answered with."""
    if status == 200:
        return "accepted"
    if status == 413:
        return "too_large"
    return "unavailable" if status >= 500 else "rejected"


class Metrics:
    """The metric objects, in their own registry (nothing global, so tests can make several)."""

    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` series: they double every counter for no use here
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        ns = "ocr_watcher"

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=ns, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, namespace=ns, registry=registry, buckets=buckets)

        self.build_info = gauge("build_info", "Always 1; the version of the running daemon.", ("version",))
        # Jobs
        self.jobs_created = counter("jobs_created_total", "Jobs created from inbox files.", ("profile",))
        self.jobs_finished = counter(
            "jobs_finished_total", "Jobs that reached a terminal status.", ("outcome", "profile")
        )
        self.jobs_retried = counter("jobs_retried_total", "Failed or cancelled jobs queued again.", ("profile",))
        self.job_duration = histogram(
            "job_duration_seconds",
            "Time from a job's creation to its terminal status.",
            ("outcome", "profile"),
            JOB_SECONDS_BUCKETS,
        )
        self.job_queue_wait = histogram(
            "job_queue_wait_seconds",
            "Time a job waited between being queued and starting to process.",
            ("profile",),
            JOB_SECONDS_BUCKETS,
        )
        self.last_success = gauge(
            "last_success_timestamp_seconds", "Unix time the last job completed (0: none since start)."
        )
        # Pages
        self.pages = counter(
            "pages_total", "Pages by outcome: done, failed (for good) or retried.", ("outcome", "engine")
        )
        self.page_duration = histogram(
            "page_duration_seconds", "Engine time to recognise one page.", ("engine",), PAGE_SECONDS_BUCKETS
        )
        self.page_render_duration = histogram(
            "page_render_duration_seconds", "Time to render one page for the engine.", ("engine",), PAGE_SECONDS_BUCKETS
        )
        self.engine_errors = counter(
            "engine_errors_total", "Pages the engine failed to recognise (each attempt).", ("engine",)
        )
        self.storage_errors = counter(
            "storage_errors_total", "Writes to the outbox that failed (disk full, read-only).", ("operation",)
        )
        for operation in ("page", "metadata", "claim"):
            self.storage_errors.labels(operation=operation)
        self.engine_ready = gauge("engine_ready", "1 when the engine can take pages now, else 0.", ("engine",))
        # Queue and work in progress (sampled)
        self.queue_pages = gauge("queue_pages", "Pages waiting to be handed to rendering and the engine.")
        self.queue_jobs = gauge("queue_jobs", "Jobs with pages (or their page count) waiting in the page queue.")
        self.jobs_queued = gauge("jobs_queued", "Claimed jobs of this daemon that have not started.")
        self.jobs_in_progress = gauge("jobs_in_progress", "Jobs of this daemon being processed.")
        self.pages_in_progress = gauge("pages_in_progress", "Pages being rendered or recognised now.")
        self.inbox_files_waiting = gauge(
            "inbox_files_waiting", "Files in the inbox seen but not claimed yet (settling or waiting for room)."
        )
        self.workers = gauge("workers", "Render and engine worker count.")
        # Outbox and retention
        self.outbox_bytes = gauge("outbox_bytes", "Bytes used by job folders in the outbox (NaN until measured).")
        self.outbox_bytes_limit = gauge("outbox_bytes_limit", "Retention's outbox size limit (0: none).")
        self.outbox_writable = gauge(
            "outbox_writable", "1 while the outbox takes writes; 0 while it is full, read-only or away (see /readyz)."
        )
        self.outbox_writable.set(1)
        self.jobs_limit = gauge("jobs_limit", "Retention's job count limit (0: none).")
        self.job_age_limit = gauge("job_age_limit_seconds", "Retention's job age limit (0: none).")
        self.retention_deletions = counter(
            "retention_deletions_total", "Terminal jobs deleted by retention, by the rule.", ("reason",)
        )
        self.retention_deleted_bytes = counter(
            "retention_deleted_bytes_total", "Bytes freed by retention, by the rule.", ("reason",)
        )
        self.deliveries = counter(
            "deliveries_total",
            "Tries of webhooks (delivered, retried, undeliverable) and commands (ok, failed, timeout).",
            ("kind", "outcome"),
        )
        # The job API
        self.uploads = counter(
            "api_uploads_total",
            "Uploads to POST /jobs/create: accepted, or refused as too_large, rejected (not a usable file) "
            "or unavailable (stopping, inbox not writable).",
            ("outcome",),
        )
        self.upload_bytes = counter("api_upload_bytes_total", "Bytes of accepted uploads.")
        for outcome in UPLOAD_OUTCOMES:
            self.uploads.labels(outcome=outcome)
        self.build_info.labels(version=__version__).set(1)
        self.last_success.set(0)
        self.outbox_bytes.set(math.nan)
        for reason in REASONS:
            self.retention_deletions.labels(reason=reason)
            self.retention_deleted_bytes.labels(reason=reason)

    def add_profiles(self, profiles: Iterable[str]) -> None:
        for profile in profiles:
            self.jobs_created.labels(profile=profile)
            self.jobs_retried.labels(profile=profile)
            self.job_queue_wait.labels(profile=profile)
            for outcome in JOB_OUTCOMES:
                self.jobs_finished.labels(outcome=outcome, profile=profile)
                self.job_duration.labels(outcome=outcome, profile=profile)

    def add_engines(self, engines: Iterable[str]) -> None:
        for engine in engines:
            for outcome in PAGE_OUTCOMES:
                self.pages.labels(outcome=outcome, engine=engine)
            self.page_duration.labels(engine=engine)
            self.page_render_duration.labels(engine=engine)
            self.engine_errors.labels(engine=engine)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# -- the hook ----------------------------------------------------------------------------------------
class MetricsHooks(Hooks):
    """Feeds `Metrics` from the daemon's hooks and serves /metrics, /healthz and /readyz."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.metrics.add_profiles(profile_names(config))
        self.set_limits(config)
        self._engines: tuple[EngineView, ...] = ()  # the last snapshot's, for the HTTP threads
        self._last_tick: float | None = None
        self._last_refresh = -math.inf
        self._storage_problem: str | None = None  # what the daemon waits for, if anything

    # -- hooks (main thread) -------------------------------------------------------------------------
    def on_start(self, started: Started) -> None:
        self._last_tick = self.clock()
        self.metrics.add_engines(sorted({engine.name for engine in started.snapshot.engines}))
        self.refresh(started.snapshot)

    def on_tick(self, snapshot: Snapshot) -> None:
        now = self.clock()
        self._last_tick = now
        if now - self._last_refresh >= GAUGE_REFRESH_SECONDS:
            self._last_refresh = now
            self.refresh(snapshot)

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        m, profile = self.metrics, meta.profile
        if previous is None:
            m.jobs_created.labels(profile=profile).inc()
        elif meta.status is Status.QUEUED:
            m.jobs_retried.labels(profile=profile).inc()
        if meta.status is Status.PROCESSING:
            wait = queue_wait_seconds(meta)
            if wait is not None:
                m.job_queue_wait.labels(profile=profile).observe(wait)
        if meta.status.terminal:
            outcome = meta.status.value
            m.jobs_finished.labels(outcome=outcome, profile=profile).inc()
            duration = job_duration_seconds(meta)
            if duration is not None:
                m.job_duration.labels(outcome=outcome, profile=profile).observe(duration)
            if meta.status is Status.COMPLETED:
                m.last_success.set(meta.finished_at.timestamp() if meta.finished_at else time.time())

    def on_page(self, job_id: str, page: int, outcome: str, info: dict[str, Any]) -> None:
        m = self.metrics
        engine = str(info.get("engine") or "unknown")  # the pipeline always records it
        m.pages.labels(outcome=outcome, engine=engine).inc()
        if outcome == "done":
            if isinstance(info.get("seconds_engine"), (int, float)):
                m.page_duration.labels(engine=engine).observe(info["seconds_engine"])
            if isinstance(info.get("seconds_render"), (int, float)):
                m.page_render_duration.labels(engine=engine).observe(info["seconds_render"])
        elif info.get("stage") == "engine":  # not rendering, the input, or a cancel
            m.engine_errors.labels(engine=engine).inc()

    def on_storage_error(self, operation: str, error: str) -> None:
        self.metrics.storage_errors.labels(operation=operation).inc()

    def on_storage_state(self, problem: str | None) -> None:
        self._storage_problem = problem
        self.metrics.outbox_writable.set(0 if problem else 1)

    def on_delivery(self, kind: str, outcome: str) -> None:
        self.metrics.deliveries.labels(kind=kind, outcome=outcome).inc()

    def on_job_deleted(self, job_id: str, reason: str, size_bytes: int) -> None:
        self.metrics.retention_deletions.labels(reason=reason).inc()
        self.metrics.retention_deleted_bytes.labels(reason=reason).inc(max(0, size_bytes))

    # -- sampling ------------------------------------------------------------------------------------
    def refresh(self, state: Snapshot) -> None:
        """Set the gauges from a snapshot (cheap: no I/O but engine health)."""
        m = self.metrics
        m.queue_jobs.set(state.queue_jobs)
        m.queue_pages.set(state.queue_pages)
        m.jobs_queued.set(state.count(Status.QUEUED))
        m.jobs_in_progress.set(state.count(Status.PROCESSING))
        m.pages_in_progress.set(state.pages_in_flight)
        m.inbox_files_waiting.set(state.inbox_waiting)
        m.workers.set(state.config.worker_count)
        m.outbox_bytes.set(math.nan if state.outbox_bytes is None else state.outbox_bytes)
        if state.config is not self.config:  # reloaded (SIGHUP): new limits, maybe new profiles
            self.config = state.config
            m.add_profiles(profile_names(state.config))
            self.set_limits(state.config)
        self._engines = state.engines
        ready: dict[str, int] = {}  # an engine kind is ready when all its instances are
        for engine in self._engines:
            ok = 0 if engine_problems([engine]) else 1
            ready[engine.name] = min(ready.get(engine.name, 1), ok)
        for name, ok in ready.items():
            m.engine_ready.labels(engine=name).set(ok)

    def set_limits(self, config: Config) -> None:
        retention = config.retention
        self.metrics.outbox_bytes_limit.set(retention.max_job_storage_mb * MIB)
        self.metrics.jobs_limit.set(retention.max_job_count)
        self.metrics.job_age_limit.set(retention.max_job_age_hours * 3600)

    # -- HTTP (server threads) -----------------------------------------------------------------------
    def on_upload(self, status: int, size: int) -> None:
        """An upload was answered (HTTP threads; prometheus_client's metrics are thread-safe)."""
        self.metrics.uploads.labels(outcome=upload_outcome(status)).inc()
        if status == 200:
            self.metrics.upload_bytes.inc(size)

    def exposition(self) -> bytes:
        """/metrics: the Prometheus text format (prometheus_client.CONTENT_TYPE_LATEST)."""
        return self.metrics.exposition()

    def healthz(self) -> tuple[bool, str]:
        """Whether the main loop is alive (it ticked lately), and a line saying so."""
        if self._last_tick is None:
            return False, "not started"
        age = self.clock() - self._last_tick
        if age > HEALTHY_TICK_SECONDS:
            return False, f"main loop stalled: last tick {age:.1f} s ago"
        return True, f"ok: main loop ticked {age:.1f} s ago"

    def readyz(self) -> tuple[bool, str]:
        """Whether every engine can take pages and the outbox can be written, and why not."""
        if not self._engines:
            return False, "no engine started yet"
        problems = engine_problems(self._engines)
        if self._storage_problem is not None:
            problems.insert(0, f"outbox: {self._storage_problem}")
        if problems:
            return False, "not ready:\n" + "\n".join(problems)
        return True, "ready: " + ", ".join(engine.label for engine in self._engines)


def make_hooks(config: Config) -> Hooks:
    """The metrics hook, or a no-op when http.enabled is false (nothing would serve the figures)."""
    return MetricsHooks(config) if config.http.enabled else Hooks()
