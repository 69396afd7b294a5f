"""systemd's notify protocol, the socket side alone: where $NOTIFY_SOCKET points, how often the
watchdog wants a ping, and a `Notifier` that sends one datagram per message.

Hand-written (no libsystemd): one datagram per message to the AF_UNIX socket named in
$NOTIFY_SOCKET (a leading "@" means Linux's abstract namespace), holding newline-separated VAR=value
lines. It imports nothing of the daemon, so both the daemon's notify hook (notify.py) and the vLLM
supervisor (engines/vllm_server.py, EXTEND_TIMEOUT_USEC while the model loads) use it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("ocr_watcher.notify")  # the name operators know from before the split

SEND_TIMEOUT_SECONDS = 1.0  # a full socket queue must not hold the main loop for long
# What a child must not inherit: it would speak for the daemon (see notify.make_hooks)
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
