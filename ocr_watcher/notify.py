"""systemd's notify protocol (Type=notify units), hand-written, and the hooks that speak it.

The protocol: one datagram per message to the AF_UNIX socket named in $NOTIFY_SOCKET (a leading
"@" means Linux's abstract namespace), holding newline-separated VAR=value lines. Without
NOTIFY_SOCKET (not under systemd, or a Type=simple unit) nothing is sent.

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
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING

from .config import Config
from .hooks import Hooks
from .spool.model import JobMeta, Status

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger("ocr_watcher.notify")

STATUS_INTERVAL_SECONDS = 2.0  # how often STATUS= is recomputed (sent only when it changed)
SEND_TIMEOUT_SECONDS = 1.0  # a full socket queue must not hold the main loop for long
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as a socket address: a path, or "@name" for the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None  # e.g. "vsock:..." (systemd >= 254, for VMs): not for a daemon on the host


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is asked for.

    As sd_watchdog_enabled(3): WATCHDOG_USEC is the period; WATCHDOG_PID, when set, names the process
    that must ping (a child that inherited the variables must not).
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: systemd compares MONOTONIC_USEC with its own clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends notify messages; never raises, never blocks the caller for more than a second."""

    def __init__(self, notify_socket: str | None) -> None:
        self.name = notify_socket
        self.address = socket_address(notify_socket) if notify_socket else None
        if notify_socket and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a socket path or @abstract name; not notifying systemd", notify_socket)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send "VAR=value" lines as one message; False if there is nobody to tell or it failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT_SECONDS)
            self._sock.sendto("\n".join(assignments).encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self._failed:  # once: a missing socket would otherwise log every tick
                log.warning("cannot notify systemd at %s: %s", self.name, exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def status_line(service: Service) -> str:
    """The one-line summary `systemctl status` shows."""
    queued_jobs, queued_pages = service.scheduler.depth()
    processing = sum(1 for active in service.active.values() if active.meta.status is Status.PROCESSING)
    return (
        f"{_plural(len(service.active), 'job')} in progress ({processing} processing), "
        f"{_plural(queued_pages, 'page')} of {_plural(queued_jobs, 'job')} queued, "
        f"{_plural(service.intake.waiting, 'file')} waiting in the inbox"
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
        self._status: str | None = None
        self._config: Config | None = None
        self._reloading = False
        self._reload_note = ""  # appended to STATUS after a refused reload, until one is applied
        self._storage_note = ""  # appended while the outbox cannot be written

    def on_start(self, service: Service) -> None:
        self._config = service.config
        self._status = status_line(service)
        self._last_status_check = self.clock()
        self.notifier.send("READY=1", f"STATUS={self._status}")

    def on_tick(self, service: Service) -> None:
        now = self.clock()
        # The watchdog first: this is the proof that the main loop came round again.
        if self.watchdog_every is not None and now - self._last_watchdog >= self.watchdog_every:
            self.notifier.send("WATCHDOG=1")
            self._last_watchdog = now
        if service.reload_pending:  # handled right after this tick's hooks
            self._reloading = True
            reloading = ("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading the configuration")
            self.notifier.send(*reloading)
            return
        if self._reloading:
            self._reloading = False
            self._finish_reload(service, now)
            return
        if self._status_due or now - self._last_status_check >= STATUS_INTERVAL_SECONDS:
            self._update_status(service, now)

    def on_job_status(self, meta: JobMeta, previous: Status | None) -> None:
        self._status_due = True

    def on_stop(self, service: Service) -> None:
        grace = service.config.pipeline.shutdown_grace_seconds
        self.notifier.send("STOPPING=1", f"STATUS=stopping: finishing pages in flight (up to {grace:g} s)")

    def _finish_reload(self, service: Service, now: float) -> None:
        if service.config is self._config:
            self._reload_note = "; last reload refused, running the previous configuration (see the log)"
        else:
            self._reload_note = ""
            self._config = service.config
        self._status = self._status_text(service)
        self._last_status_check = now
        self._status_due = False
        self.notifier.send("READY=1", f"STATUS={self._status}")

    def _update_status(self, service: Service, now: float) -> None:
        self._last_status_check = now
        self._status_due = False
        text = self._status_text(service)
        if text != self._status:
            self._status = text
            self.notifier.send(f"STATUS={text}")

    def on_storage_state(self, problem: str | None) -> None:
        self._storage_note = f"; waiting: {problem}" if problem else ""
        self._status_due = True

    def _status_text(self, service: Service) -> str:
        return status_line(service) + self._storage_note + self._reload_note


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
