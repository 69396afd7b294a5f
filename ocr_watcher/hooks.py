"""Hooks into the daemon's life, for cross-cutting concerns (metrics, systemd notify, ...).

Each concern subclasses `Hooks` and overrides what it needs; the service calls every registered
hook in order, on its main thread. A hook that raises is logged and otherwise ignored: observing
the daemon must never stop it. Hooks are handed plain values (observe.py), never the service.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from .observe import DeliveryEnded, JobDeleted, Report, Snapshot, Started
from .spool.model import JobMeta, Status

log = logging.getLogger("ocr_watcher.hooks")


class Hooks:
    def on_start(self, started: Started) -> None:
        """The daemon has recovered its jobs and is about to serve."""

    def on_tick(self, snapshot: Snapshot) -> None:
        """Once per main-loop iteration (a few times a second): the loop is alive."""

    def on_job_ending(self, meta: JobMeta) -> None:
        """A job has reached its end and is about to be saved so: a hook that must not miss an
        ending records it durably now (deliveries); on_job_status follows once it is saved."""

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        """A job was created (previous None) or changed status; `meta` is already saved."""

    def ending_work(self, meta: JobMeta) -> Callable[[], None] | None:
        """The job of `meta` (its record now) completes once its result is written: I/O this hook
        needs on disk before that ending is saved (deliveries owed), to be run by the thread that
        writes the result instead of the main one; on_job_ending still follows. The record as it
        will be: spool.model.completed_copy (a deep copy: made only by a hook that needs it)."""
        return None

    def on_page(self, job_id: str, page: int, outcome: str, info: dict[str, Any]) -> None:
        """outcome: "done", "retried" or "failed"; info: the page's figures or its error."""

    def on_job_deleted(self, job_id: str, reason: str, size_bytes: int) -> None:
        """Retention removed a terminal job; reason: "age", "count" or "storage"."""

    def on_delivery(self, kind: str, outcome: str) -> None:
        """One try of a webhook or command ended (observe.DeliveryEnded)."""

    def on_storage_error(self, operation: str, error: str) -> None:
        """Writing to the outbox failed (full, read-only); operation: "page", "metadata" or "claim"."""

    def on_storage_state(self, problem: str | None) -> None:
        """What the daemon now waits for (the outbox is full, read-only, gone), or None: it works again."""

    def on_stop(self, snapshot: Snapshot) -> None:
        """The daemon is stopping (SIGTERM); pages in flight are being finished."""

    def on_exit(self, snapshot: Snapshot) -> None:
        """The stop is done: pages drained, every job's state written; the process is about to end."""

    def take_reports(self) -> list[Report]:
        """What this hook found out for the others since it was last asked (retention: the jobs it
        deleted, the outbox's size); asked on the main thread after each on_tick and on_stop."""
        return []


def drain(reports: queue.SimpleQueue) -> list[Report]:
    """Everything a hook's background thread has queued for take_reports, without waiting."""
    taken: list[Report] = []
    while True:
        try:
            taken.append(reports.get_nowait())
        except queue.Empty:
            return taken


class HookList(Hooks):
    """Calls each hook in turn, isolating failures."""

    def __init__(self, hooks: list[Hooks] | None = None) -> None:
        self.hooks: list[Hooks] = list(hooks or [])

    def add(self, hook: Hooks) -> None:
        self.hooks.append(hook)

    def _each(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, method)

    def on_start(self, started: Started) -> None:
        self._each("on_start", started)

    def on_tick(self, snapshot: Snapshot) -> None:
        self._each("on_tick", snapshot)

    def on_job_ending(self, meta: JobMeta) -> None:
        self._each("on_job_ending", meta)

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        self._each("on_job_status", meta, previous)

    def ending_work(self, meta: JobMeta) -> Callable[[], None] | None:
        works = []
        for hook in self.hooks:
            try:
                work = hook.ending_work(meta)
            except Exception:
                log.exception("hook %s.ending_work failed", type(hook).__name__)
                continue
            if work is not None:
                works.append(work)
        if not works:
            return None

        def all_of() -> None:
            for work in works:
                work()

        return all_of

    def on_delivery(self, kind: str, outcome: str) -> None:
        self._each("on_delivery", kind, outcome)

    def on_page(self, job_id: str, page: int, outcome: str, info: dict[str, Any]) -> None:
        self._each("on_page", job_id, page, outcome, info)

    def on_job_deleted(self, job_id: str, reason: str, size_bytes: int) -> None:
        self._each("on_job_deleted", job_id, reason, size_bytes)

    def on_storage_error(self, operation: str, error: str) -> None:
        self._each("on_storage_error", operation, error)

    def on_storage_state(self, problem: str | None) -> None:
        self._each("on_storage_state", problem)

    def on_stop(self, snapshot: Snapshot) -> None:
        self._each("on_stop", snapshot)

    def on_exit(self, snapshot: Snapshot) -> None:
        self._each("on_exit", snapshot)

    def hand_on(self, report: JobDeleted | DeliveryEnded) -> None:
        """A report one hook made (take_reports), to every hook's own call for it."""
        if isinstance(report, JobDeleted):
            self.on_job_deleted(report.job_id, report.reason, report.size_bytes)
        else:
            self.on_delivery(report.kind, report.outcome)

    def take_reports(self) -> list[Report]:
        reports: list[Report] = []
        for hook in self.hooks:
            try:
                reports.extend(hook.take_reports())
            except Exception:
                log.exception("hook %s.take_reports failed", type(hook).__name__)
        return reports
