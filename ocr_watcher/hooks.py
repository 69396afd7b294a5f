"""Hooks into the daemon's life, for cross-cutting concerns (metrics, systemd notify, ...).

Each concern subclasses `Hooks` and overrides what it needs; the service calls every registered
hook in order, on its main thread. A hook that raises is logged and otherwise ignored: observing
the daemon must never stop it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar

from .spool.model import JobMeta, Status

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("ocr_watcher.hooks")
H = TypeVar("H", bound="Hooks")


class Hooks:
    def on_start(self, service: Service) -> None:
        """The daemon has recovered its jobs and is about to serve."""

    def on_tick(self, service: Service) -> None:
        """Once per main-loop iteration (a few times a second): the loop is alive."""

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        """A job was created (previous None) or changed status; `meta` is already saved."""

    def on_page(self, job_id: str, page: int, outcome: str, info: dict[str, Any]) -> None:
        """outcome: "done", "retried" or "failed"; info: the page's figures or its error."""

    def on_job_deleted(self, job_id: str, reason: str, size_bytes: int) -> None:
        """Retention removed a terminal job; reason: "age", "count" or "storage"."""

    def on_storage_error(self, operation: str, error: str) -> None:
        """Writing to the outbox failed (full, read-only); operation: "page", "metadata" or "claim"."""

    def on_storage_state(self, problem: str | None) -> None:
        """What the daemon now waits for (the outbox is full, read-only, gone), or None: it works again."""

    def on_stop(self, service: Service) -> None:
        """The daemon is stopping (SIGTERM); pages in flight are being finished."""

    def on_exit(self, service: Service) -> None:
        """The stop is done: pages drained, every job's state written; the process is about to end."""


class HookList(Hooks):
    """Calls each hook in turn, isolating failures."""

    def __init__(self, hooks: list[Hooks] | None = None) -> None:
        self.hooks: list[Hooks] = list(hooks or [])

    def find(self, kind: type[H]) -> H | None:
        """The registered hook of this type, for the rare caller that needs one concern directly."""
        return next((hook for hook in self.hooks if isinstance(hook, kind)), None)

    def add(self, hook: Hooks) -> None:
        self.hooks.append(hook)

    def _each(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, method)

    def on_start(self, service: Service) -> None:
        self._each("on_start", service)

    def on_tick(self, service: Service) -> None:
        self._each("on_tick", service)

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        self._each("on_job_status", meta, previous)

    def on_page(self, job_id: str, page: int, outcome: str, info: dict[str, Any]) -> None:
        self._each("on_page", job_id, page, outcome, info)

    def on_job_deleted(self, job_id: str, reason: str, size_bytes: int) -> None:
        self._each("on_job_deleted", job_id, reason, size_bytes)

    def on_storage_error(self, operation: str, error: str) -> None:
        self._each("on_storage_error", operation, error)

    def on_storage_state(self, problem: str | None) -> None:
        self._each("on_storage_state", problem)

    def on_stop(self, service: Service) -> None:
        self._each("on_stop", service)

    def on_exit(self, service: Service) -> None:
        self._each("on_exit", service)
