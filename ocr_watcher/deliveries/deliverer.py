"""The deliveries of one daemon, carried out in its delivery worker process (worker.py) by a few
threads, so that neither a slow or absent receiver nor the work of telling it holds up OCR.

Each pending delivery is a file (records.py) the daemon wrote before its job's ending was saved
(recorder.py) and then handed over; a thread
takes it when due, tries once, and then removes it (done, or given up) or writes back its try count
and waits (policy.next_try_in). A delivery whose ending was not confirmed in this run (found after a
restart, or recorded just before a save that did not happen) is checked against the job's
metadata.json first (policy.still_owed)."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import httpx

from ..config import CommandHookConfig, WebhookConfig
from ..observe import DeliveryEnded
from ..spool.store import JobStore
from . import policy
from .records import COMMAND, WEBHOOK, Pending, PendingFolder, log_outcome, target_key
from .send import post, run_command
from .settings import Settings

log = logging.getLogger("ocr_watcher.deliveries")
SENDER_THREADS = 4
UNCONFIRMED_CHECK_SECONDS = 2.0  # the save that confirms an ending comes right after its record
NOT_ENDED_RECHECK_SECONDS = 30.0  # a job recorded as ending whose end is not on disk yet
WRITE_RETRY_SECONDS = 30.0
RECENTLY_DONE_KEPT = 4096


class Deliverer:
    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        settings: Callable[[], Settings],
        report: Callable[[DeliveryEnded], None],
        owner_gone: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.settings = settings  # the running targets and secrets (a reload changes them)
        self.report = report
        self.owner_gone = owner_gone
        self.folder = PendingFolder(store.layout, fsync=store.fsync)
        self._due: list[tuple[float, int, Pending]] = []  # (when, order, pending); stale orders skipped
        self._known: dict[str, tuple[Pending, int]] = {}  # by file name, not yet done: (it, its order)
        self._recently_done: OrderedDict[str, None] = OrderedDict()  # a late record() is not a new one
        self._order = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._client = httpx.Client(follow_redirects=False)

    # -- what the daemon hands over (the worker's pipe reader) -----------------------------------
    def take(self, pending: Pending, confirmed: bool) -> None:
        """A delivery the daemon recorded (its file is written); `confirmed`: its ending is saved."""
        with self._cv:
            if pending.name in self._recently_done:
                return
            known = self._known.get(pending.name)
            if known is not None:
                if confirmed:
                    self._confirm_held(known)
                return
            pending.confirmed = confirmed
            self._push(pending, 0.0 if confirmed else UNCONFIRMED_CHECK_SECONDS)

    def confirm(self, name: str) -> bool:
        """The ending of the delivery filed as `name` is saved: no need to wait for it. False: not
        held (new to this worker, or done)."""
        with self._cv:
            if name in self._recently_done:
                return True
            known = self._known.get(name)
            if known is not None:
                self._confirm_held(known)
            return known is not None

    def _confirm_held(self, known: tuple[Pending, int]) -> None:
        """(Under the lock.)"""
        held, order = known
        if not held.confirmed:
            held.confirmed = True
            if order > 0:  # (a negative order: a thread has it now, and sees the flag)
                self._push(held, 0.0)

    def recover(self) -> int:
        """At the start, and now and then: take up what this daemon owed before it stopped, and what
        a daemon that is gone owed (a peer on a shared outbox that died while this one runs)."""
        taken = 0
        gone: dict[str, bool] = {}
        for pending in self.folder.all(skip=self._in_hand):
            if pending.worker_id != self.worker_id:
                if pending.worker_id not in gone:
                    gone[pending.worker_id] = self.owner_gone(pending.worker_id)
                if not gone[pending.worker_id]:
                    continue
                log.info("%s: taking over its %s delivery from %s", pending.job_id, pending.kind, pending.worker_id)
                pending.worker_id = self.worker_id
                try:  # so that a third daemon sees it taken (two takers would both send: at least once)
                    self.folder.write(pending)
                except OSError:
                    pass
            self._schedule(pending, 0.0)
            taken += 1
        return taken

    def _in_hand(self, name: str) -> bool:
        with self._cv:
            return name in self._known or name in self._recently_done

    # -- the sender threads --------------------------------------------------------------------
    def start(self) -> None:
        for n in range(SENDER_THREADS):
            thread = threading.Thread(target=self._serve, name=f"delivery-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace: float = 2.0) -> None:
        """What is in flight gets `grace` to finish; what is left stays on disk for the next start."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._client.close()

    def _schedule(self, pending: Pending, delay: float) -> None:
        with self._cv:
            self._push(pending, delay)

    def _push(self, pending: Pending, delay: float) -> None:
        """(Under the lock.) Due in `delay` seconds; an earlier schedule of the same one lapses."""
        self._order += 1
        self._known[pending.name] = (pending, self._order)
        heapq.heappush(self._due, (time.monotonic() + delay, self._order, pending))
        self._cv.notify()

    def _take(self) -> Pending | None:
        with self._cv:
            while not self._stopping:
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    _, order, pending = heapq.heappop(self._due)
                    known = self._known.get(pending.name)
                    if known is not None and known[1] == order:
                        self._known[pending.name] = (pending, -order)  # taken: see record()
                        return pending
                    continue
                self._cv.wait(None if not self._due else self._due[0][0] - now)
            return None

    def _serve(self) -> None:
        while (pending := self._take()) is not None:
            try:
                self._try(pending)
            except Exception:  # a bug in one delivery must not end the thread
                log.exception("%s: internal error in its %s delivery", pending.job_id, pending.kind)
                self._later(pending, WRITE_RETRY_SECONDS)

    def _later(self, pending: Pending, delay: float) -> None:
        with self._cv:
            if not self._stopping:
                self._push(pending, delay)

    def _done(self, pending: Pending) -> None:
        self.folder.remove(pending)
        with self._cv:
            self._known.pop(pending.name, None)
            self._recently_done[pending.name] = None
            while len(self._recently_done) > RECENTLY_DONE_KEPT:
                self._recently_done.popitem(last=False)

    def _try(self, pending: Pending) -> None:
        if not pending.confirmed:
            on_disk = self.store.try_load(pending.job_id)
            if not policy.still_owed(pending.attempt, on_disk):  # its ending is not saved (yet)
                self._later(pending, 0.0 if pending.confirmed else NOT_ENDED_RECHECK_SECONDS)
                return
            pending.confirmed = True
        job_dir = self.store.paths(pending.job_id).dir
        if pending.kind == COMMAND:
            self._run(pending, job_dir)
        else:
            self._send(pending, job_dir)

    def _webhook(self, pending: Pending) -> WebhookConfig | None:
        hooks = self.settings().webhooks(pending.profile)
        return next((h for h in hooks if target_key(h.url) == pending.target_key), None)

    def _send(self, pending: Pending, job_dir: Path) -> None:
        hook = self._webhook(pending)
        if hook is None:  # taken out of the configuration since: nobody to tell any more
            self._finish(pending, job_dir, "undeliverable", {"error": "this webhook is no longer configured"})
            return
        secret = hook.secret.get_secret_value() if hook.secret else None
        answer = post(self._client, hook.url, pending, secret, hook.timeout_seconds)
        pending.tries += 1
        details = {"http_status": answer.status, "error": answer.error}
        if policy.accepted(answer):
            self._finish(pending, job_dir, "delivered", details)
            return
        age = time.time() - pending.created_at
        delay = policy.next_try_in(answer, pending.tries, age, hook.give_up_after_seconds)
        if delay is None:
            log.warning("%s: webhook %s undeliverable after %d tries", pending.job_id, pending.target, pending.tries)
            self._finish(pending, job_dir, "undeliverable", details)
            return
        pending.last_error = answer.error or f"HTTP {answer.status}"
        log_outcome(job_dir, pending, "pending", details, fsync=False)  # to be tried again: for people
        self.report(DeliveryEnded(WEBHOOK, "retried"))
        try:
            self.folder.write(pending)  # the try count and last error survive a restart
        except OSError:
            pass  # the count is only advice; the delivery itself is on disk already
        self._later(pending, delay)

    def _run(self, pending: Pending, job_dir: Path) -> None:
        command: CommandHookConfig | None = self.settings().command_hook(pending.profile)
        if command is None:
            self._finish(pending, job_dir, "failed", {"error": "the command is no longer configured"})
            return
        pending.tries += 1
        run = run_command(command.argv, pending, command.timeout_seconds)
        if run.outcome != "ok":
            log.warning("%s: command %s: %s (exit %s)", pending.job_id, pending.target, run.outcome, run.exit_code)
        details = {"exit_code": run.exit_code, "output_tail": run.output_tail, "seconds": round(run.seconds, 3)}
        self._finish(pending, job_dir, run.outcome, details)

    def _finish(self, pending: Pending, job_dir: Path, outcome: str, details: dict) -> None:
        # Not synced: a record for people; the delivery itself is done (a lost line is not a lost delivery).
        log_outcome(job_dir, pending, outcome, details, fsync=False)
        self._done(pending)
        self.report(DeliveryEnded(pending.kind, outcome))
