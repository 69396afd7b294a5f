"""Whether the outbox must be listed again: only when its set of job folders may have changed.

Listing a hundred thousand job folders takes a tenth of a second or more, and the main loop's outbox
scan (every 5 s) and the job API's listing (every request, at most once a second) would each pay it
again and again for nothing. Creating, renaming or removing a job folder changes the outbox's mtime,
so while it stays the same the folders are those of the last listing, and a walker needs to look
only at the jobs it knows can change (the few that are not finished).

Where the mtime could lie: a change within the timestamp granularity of the one seen (filesystems
keep coarse times), and attribute caches (NFS). So a listing is trusted only when the mtime it saw
was already `margin` seconds old when it was taken, and the outbox is listed anyway once it is
`max_age` seconds old.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MARGIN_SECONDS = 2.0
MAX_AGE_SECONDS = 30.0


def listing_still_valid(
    mtime_now: int | None, listed_mtime: int | None, trusted: bool, listing_age: float, max_age: float
) -> bool:
    """The decision, on plain values: the mtime seen now against the one seen at the last listing."""
    return mtime_now is not None and mtime_now == listed_mtime and trusted and listing_age < max_age


class OutboxWatch:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        margin: float = MARGIN_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.root = os.fspath(root)
        self.margin_ns = int(margin * 1e9)
        self.max_age = max_age
        self.clock = clock
        self.wall_ns = wall_ns
        self._mtime: int | None = None
        self._trusted = False
        self._at = float("-inf")

    def stamp(self) -> int | None:
        """The outbox's mtime now; take it before listing (None when it cannot be read)."""
        try:
            return os.stat(self.root).st_mtime_ns
        except OSError:
            return None

    def unchanged(self, stamp: int | None) -> bool:
        """True when the job folders are those of the last listing (the walker may skip listing)."""
        return listing_still_valid(stamp, self._mtime, self._trusted, self.clock() - self._at, self.max_age)

    def listed(self, stamp: int | None) -> None:
        """A listing was taken after `stamp` was."""
        self._mtime = stamp
        self._trusted = stamp is not None and self.wall_ns() - stamp >= self.margin_ns
        self._at = self.clock()
