"""Whether the outbox can be written: what the daemon waits for while it cannot, said once, then
every `REMIND_SECONDS`, and once more when it is over.

The main loop reports each storage failure and each write that went through; observers (metrics'
/readyz, systemd's STATUS) are handed the problem as text, or None once the outbox works again.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable

log = logging.getLogger("ocr_watcher")
REMIND_SECONDS = 30.0

_WHAT: dict[int, str] = {
    errno.ENOSPC: "the outbox is full",
    errno.EDQUOT: "the outbox is over its disk quota",
    errno.EROFS: "the outbox is read-only",
    errno.EACCES: "the outbox is not writable for this daemon",
    errno.EPERM: "the outbox is not writable for this daemon",
    errno.EIO: "the outbox's storage reports I/O errors",
    errno.ENOENT: "a folder of the outbox is missing",
}


def describe(error: OSError | str) -> str:
    """One line an operator can act on: what is wrong with the outbox, then the system's words."""
    if isinstance(error, str):
        return error
    what = _WHAT.get(error.errno or 0, "the outbox cannot be written")
    return f"{what} ({error.strerror or error})"


class StorageWatch:
    """Per kind of write ("page", "metadata", "result", "claim", ...): a kind that failed waits until
    a write of the same kind goes through. A small file may fit where a large one does not, so a
    metadata.json written is no sign that a result.md can be."""

    def __init__(
        self,
        on_change: Callable[[str | None], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self._waiting: dict[str, str] = {}  # operation -> what went wrong, the latest last
        self.problem: str | None = None  # the latest, while anything waits
        self._since = 0.0
        self._reminded = 0.0

    def failed(self, operation: str, error: OSError | str) -> None:
        """A write (or the outbox check) failed; `operation` names what waits."""
        problem, now = describe(error), self._clock()
        if not self._waiting:
            self._since = self._reminded = now
            log.error("waiting for the outbox: %s (%s); work resumes once it can be written", problem, operation)
        elif problem != self.problem or now - self._reminded >= REMIND_SECONDS:
            self._reminded = now
            log.error("still waiting for the outbox after %.0f s: %s (%s)", now - self._since, problem, operation)
        self._waiting.pop(operation, None)
        self._waiting[operation] = problem
        self._changed()

    def succeeded(self, operation: str) -> None:
        """A write of this kind went through: it no longer waits."""
        if self._waiting.pop(operation, None) is None:
            return
        if not self._waiting:
            seconds = self._clock() - self._since
            log.info("the outbox can be written again after %.0f s (was: %s)", seconds, self.problem)
        self._changed()

    def _changed(self) -> None:
        problem = next(reversed(self._waiting.values())) if self._waiting else None
        if problem != self.problem:
            self.problem = problem
            self._on_change(problem)
