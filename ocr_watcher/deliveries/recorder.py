"""The daemon's side of deliveries, on its main thread: as a job ends, what it owes (one delivery per
webhook, one for the command) is written to the pending folder, durably, before the ending is saved;
then handed to the delivery worker process, which does the rest (deliverer.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..config import Config
from ..spool.model import JobMeta, completed_copy
from ..spool.store import JobStore
from . import policy
from .records import COMMAND, WEBHOOK, Pending, PendingFolder, pending_name, target_key

log = logging.getLogger("ocr_watcher.deliveries")
WRITTEN_KEPT = 4096  # names written lately: the confirmation of an ending does not write it again
UNWRITTEN_RETRY_SECONDS = 5.0


class Recorder:
    def __init__(self, store: JobStore, worker_id: str, config: Callable[[], Config]) -> None:
        self.store = store
        self.worker_id = worker_id
        self.config = config
        self.folder = PendingFolder(store.layout, fsync=store.fsync)
        # name -> the status its file's body tells: an ending prepared as completed but saved as
        # failed is written again. Result threads add to it (prepare), hence the lock.
        self._written: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._unwritten: list[tuple[Pending, bool]] = []  # recorded while the outbox refused writes
        self._next_write_try = 0.0

    def targets(self, meta: JobMeta) -> list[Pending]:
        config = self.config()
        hooks, command = config.webhooks(meta.profile), config.command_hook(meta.profile)
        if not hooks and command is None:
            return []
        body = policy.job_body(meta, str(self.store.paths(meta.job_id).dir.absolute()), config.http.public_url)
        made = [self._pending(meta, WEBHOOK, hook.url, body, policy.shown_target(hook.url)) for hook in hooks]
        if command is not None:
            line = " ".join(command.argv)
            made.append(self._pending(meta, COMMAND, line, body, line))
        return made

    def names(self, meta: JobMeta) -> list[str]:
        """The pending files an ending owes, without making their bodies."""
        config = self.config()
        hooks, command = config.webhooks(meta.profile), config.command_hook(meta.profile)
        if not hooks and command is None:
            return []  # the usual case: every ending asks, so no delivery id is made for nothing
        delivery = policy.delivery_id(meta.job_id, meta.attempts)
        names = [pending_name(delivery, WEBHOOK, hook.url) for hook in hooks]
        if command is not None:
            names.append(pending_name(delivery, COMMAND, " ".join(command.argv)))
        return names

    def prepare(self, now: JobMeta) -> Callable[[], None] | None:
        """For the completion of a job (`now`: its record before it) not saved yet: its deliveries
        made now (main thread), their files written by the caller's thread (the result writer's; an
        OSError there holds the completion back)."""
        config = self.config()
        if not config.webhooks(now.profile) and config.command_hook(now.profile) is None:
            return None
        meta = completed_copy(now)
        made = self.targets(meta)

        def write() -> None:
            for pending in made:
                self.folder.write(pending)
                self._remember(pending.name, meta.status.value)

        return write

    def record(self, meta: JobMeta, *, confirmed: bool) -> list[tuple[str, bool]]:
        """A job ends (or has just ended, `confirmed`): owe its deliveries, durably, once. Returns
        what to hand to the worker: (pending file name, whether its ending is saved)."""
        names, status = self.names(meta), meta.status.value
        with self._lock:
            ready = all(self._written.get(name) == status for name in names)
        if ready:  # prepared, or the confirmation of a recorded ending
            return [(name, confirmed) for name in names]
        handed = []
        for pending in self.targets(meta):
            with self._lock:
                written = self._written.get(pending.name) == status
            if not written:
                try:
                    self.folder.write(pending)
                except OSError as exc:
                    log.warning("%s: cannot record its %s delivery yet: %s", meta.job_id, pending.kind, exc)
                    self._unwritten.append((pending, confirmed))
                    continue
                self._remember(pending.name, status)
            handed.append((pending.name, confirmed))
        return handed

    def retry_unwritten(self) -> list[tuple[str, bool]]:
        """(Each tick.) Write again, every few seconds, what the outbox refused; returns what now is."""
        if not self._unwritten or time.monotonic() < self._next_write_try:
            return []
        self._next_write_try = time.monotonic() + UNWRITTEN_RETRY_SECONDS
        waiting, self._unwritten, written = self._unwritten, [], []
        for pending, confirmed in waiting:
            try:
                self.folder.write(pending)
            except OSError:
                self._unwritten.append((pending, confirmed))
                continue
            self._remember(pending.name, pending.body.get("status", ""))
            written.append((pending.name, confirmed))
        return written

    def _remember(self, name: str, status: str) -> None:
        with self._lock:
            self._written[name] = status
            self._written.move_to_end(name)
            while len(self._written) > WRITTEN_KEPT:
                self._written.popitem(last=False)

    def _pending(self, meta: JobMeta, kind: str, target: str, body: dict, shown: str) -> Pending:
        return Pending(
            delivery_id=body["delivery_id"],
            job_id=meta.job_id,
            attempt=meta.attempts,
            kind=kind,
            target=shown,
            target_key=target_key(target),
            profile=meta.profile,
            worker_id=self.worker_id,
            created_at=time.time(),
            body=body,
        )
