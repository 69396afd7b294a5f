"""The hook that speaks systemd's notify protocol (Type=notify units); the socket side is
sd_notify.py. Without NOTIFY_SOCKET (not under systemd, or a Type=simple unit) nothing is sent.

What systemd hears from the daemon:
- READY=1 once, when the daemon has recovered its jobs and serves (on_start);
- STATUS=... one line (jobs in progress, queue depth, files waiting in the inbox) on change and
  every few seconds, shown by `systemctl status`;
- WATCHDOG=1 at half of WatchdogSec, sent from the main loop's tick and nowhere else: a main loop
  that is stuck (a hung network share, a deadlock) stops the pings and systemd restarts the service;
- RELOADING=1 (with MONOTONIC_USEC) when a SIGHUP reload begins and READY=1 when it is over,
  applied or refused. systemd 252 enters and leaves the "reloading" state on these; systemd >= 253
  with Type=notify-reload also wants MONOTONIC_USEC, which older versions ignore;
- STOPPING=1 when SIGTERM starts the graceful stop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, MutableMapping

from .config import Config
from .hooks import Hooks
from .observe import Snapshot, Started
from .sd_notify import NOTIFY_ENV, Notifier, monotonic_usec, watchdog_interval
from .spool.model import JobMeta, Status

log = logging.getLogger("ocr_watcher.notify")

STATUS_INTERVAL_SECONDS = 2.0  # how often STATUS= is recomputed (sent only when it changed)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def status_line(state: Snapshot) -> str:
    """The one-line summary `systemctl status` shows."""
    processing = state.count(Status.PROCESSING)
    return (
        f"{_plural(state.jobs_active, 'job')} in progress ({processing} processing), "
        f"{_plural(state.queue_pages, 'page')} of {_plural(state.queue_jobs, 'job')} queued, "
        f"{_plural(state.inbox_waiting, 'file')} waiting in the inbox"
    )


class NotifyHooks(Hooks):
    """READY/STATUS/WATCHDOG/RELOADING/STOPPING for a Type=notify unit; see the module docstring."""

    def __init__(
        self,
        notifier: Notifier,
        watchdog_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.watchdog_every = watchdog_every
        self.clock = clock
        self._last_watchdog = float("-inf")
        self._last_status_check = float("-inf")
        self._status_due = False
        self._jobs: Mapping[Status, int] = {}
        self._status: str | None = None
        self._config: Config | None = None
        self._reloading = False
        self._reload_note = ""  # appended to STATUS after a refused reload, until one is applied
        self._storage_note = ""  # appended while the outbox cannot be written

    def on_start(self, started: Started) -> None:
        self._config = started.snapshot.config
        self._status = status_line(started.snapshot)
        self._last_status_check = self.clock()
        self.notifier.send("READY=1", f"STATUS={self._status}")

    def on_tick(self, snapshot: Snapshot) -> None:
        now = self.clock()
        # The watchdog first: this is the proof that the main loop came round again.
        if self.watchdog_every is not None and now - self._last_watchdog >= self.watchdog_every:
            self.notifier.send("WATCHDOG=1")
            self._last_watchdog = now
        if snapshot.reload_pending:  # handled right after this tick's hooks
            self._reloading = True
            reloading = ("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading the configuration")
            self.notifier.send(*reloading)
            return
        if self._reloading:
            self._reloading = False
            self._finish_reload(snapshot, now)
            return
        # The jobs by status are compared each tick: a job's start is saved with its first progress,
        # and a short job ends before then, so no status event marks its start.
        if self._status_due or snapshot.jobs != self._jobs or now - self._last_status_check >= STATUS_INTERVAL_SECONDS:
            self._jobs = snapshot.jobs
            self._update_status(snapshot, now)

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        self._status_due = True

    def on_stop(self, snapshot: Snapshot) -> None:
        grace = snapshot.config.pipeline.shutdown_grace_seconds
        self.notifier.send("STOPPING=1", f"STATUS=stopping: finishing pages in flight (up to {grace:g} s)")

    def _finish_reload(self, snapshot: Snapshot, now: float) -> None:
        if snapshot.config is self._config:
            self._reload_note = "; last reload refused, running the previous configuration (see the log)"
        else:
            self._reload_note = ""
            self._config = snapshot.config
        self._status = self._status_text(snapshot)
        self._last_status_check = now
        self._status_due = False
        self.notifier.send("READY=1", f"STATUS={self._status}")

    def _update_status(self, snapshot: Snapshot, now: float) -> None:
        self._last_status_check = now
        self._status_due = False
        text = self._status_text(snapshot)
        if text != self._status:
            self._status = text
            self.notifier.send(f"STATUS={text}")

    def on_storage_state(self, problem: str | None) -> None:
        self._storage_note = f"; waiting: {problem}" if problem else ""
        self._status_due = True

    def _status_text(self, snapshot: Snapshot) -> str:
        return status_line(snapshot) + self._storage_note + self._reload_note


def make_hooks(config: Config, environ: MutableMapping[str, str] | None = None) -> NotifyHooks:
    """The hooks for this process; takes the notify variables out of the environment (as
    sd_notify's unset_environment does), so that render workers, tesseract and a supervised vLLM
    server never inherit them."""
    environ = os.environ if environ is None else environ
    notifier = Notifier(environ.get("NOTIFY_SOCKET"))
    every = watchdog_interval(environ, os.getpid())
    for name in NOTIFY_ENV:
        environ.pop(name, None)
    if notifier.enabled:
        log.debug("notifying systemd; watchdog ping every %s s", every)
    return NotifyHooks(notifier, every)
