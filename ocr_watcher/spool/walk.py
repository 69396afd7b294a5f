"""One walk over the outbox's job folders, shared by the daemon's scan, retention and the job API.

A hundred thousand finished jobs stay cheap because of three shortcuts, which every walker needs
and which live here once:

- the folder is listed only when its set of job folders may have changed (spool/listing.py);
  otherwise only the jobs the caller knows can change are looked at;
- completed jobs never change: they are counted from the job store's record (spool/completed.py)
  and never handed to the caller, so none of them is read, stat'ed or held again;
- what is gone is forgotten at the end of a full listing without holding the listing, and never
  when the outbox went away meanwhile (an empty listing then says nothing about the jobs).

A walk is one pass: iterate it, tell it about jobs that turned out completed while being read
(`completed_found`), then `finish()`. One walker per thread of use: each keeps its own listing state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .listing import OutboxWatch
from .store import JobStore


class OutboxWalk:
    def __init__(self, walker: OutboxWalker, changeable: Iterable[str], full: bool) -> None:
        self._walker = walker
        self._changeable = changeable
        self.stamp = walker.watch.stamp()  # taken before the listing: a change during it shows next time
        self.full = full or not walker.watch.unchanged(self.stamp)
        self._completed_listed = 0

    def __iter__(self) -> Iterator[str]:
        """The job folders to look at: all but the completed ones on a full listing, else `changeable`."""
        store = self._walker.store
        completed = store.completed
        for job_id in store.iter_job_ids() if self.full else self._changeable:
            if job_id in completed:
                self._completed_listed += 1
                continue
            yield job_id

    def completed_found(self) -> None:
        """A job handed out turned out completed (and is now in the store's record)."""
        self._completed_listed += 1

    def finish(self) -> bool:
        """End the walk. True when it listed every job folder of an outbox that was there all along:
        then a caller may forget what it holds about jobs it was not handed (they are gone)."""
        store = self._walker.store
        if not self.full or store.missing() is not None:
            return False
        if self._completed_listed < len(store.completed):  # some are gone (or noted by another walker)
            store.completed.prune(set(store.iter_job_ids()), store.root)
        self._walker.watch.listed(self.stamp)
        return True


class OutboxWalker:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.watch = OutboxWatch(store.root)

    def walk(self, changeable: Iterable[str] = (), *, full: bool = False) -> OutboxWalk:
        """A walk over every job folder, or, while the outbox's folders are those of the last full
        listing, over `changeable` alone. `full` lists the folder whatever its mtime says."""
        return OutboxWalk(self, changeable, full)

    def relist(self) -> None:
        """Forget the last listing: the outbox came back or was replaced."""
        self.watch = OutboxWatch(self.store.root)
