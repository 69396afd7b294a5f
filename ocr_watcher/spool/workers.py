"""Worker heartbeats: one small file per daemon in the outbox, rewritten every few seconds; and the
worker lock that keeps a worker id to one running daemon.

Liveness is per daemon, not per job: rewriting every queued job's metadata.json each few seconds
would cost thousands of writes a second with a deep queue. A job's owner is alive while its
heartbeat file is fresh; a daemon that stopped cleanly says so, and its jobs can be taken over at
once instead of after a whole lease.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .atomic import atomic_write_json
from .layout import OutboxLayout
from .model import JobMeta, iso, utc_now


class WorkerIdInUse(Exception):
    """Another running daemon on this outbox holds the worker lock of this id."""


def lock_worker_id(layout: OutboxLayout, worker_id: str) -> int:
    """One running daemon per worker id (two with the same id would resume each other's jobs): the
    descriptor of the locked file, held for as long as the daemon runs."""
    layout.workers.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.worker_lock(worker_id), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise WorkerIdInUse(
                f"worker_id {worker_id!r} is in use by another running daemon on this outbox; "
                "give each daemon its own worker_id"
            ) from exc
        raise
    return fd


@dataclass(frozen=True)
class Beat:
    at: datetime
    stopped: bool = False


class Heartbeats:
    def __init__(
        self,
        layout: OutboxLayout,
        worker_id: str,
        host: str,
        lease_seconds: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.layout = layout
        self.worker_id = worker_id
        self.host = host
        self.lease_seconds = lease_seconds  # updated on reload
        self.clock = clock  # what "now" is when judging a lease (tests move it past one)

    def write(self, active_jobs: int, *, stopped: bool = False) -> OSError | None:
        """Rewrite this daemon's heartbeat file; the error when it cannot be (the caller says so)."""
        record = {
            "worker_id": self.worker_id,
            "host": self.host,
            "pid": os.getpid(),
            "heartbeat_at": iso(utc_now()),
            "active_jobs": active_jobs,
            "state": "stopped" if stopped else "running",
        }
        try:
            atomic_write_json(self.layout.worker_heartbeat(self.worker_id), record, fsync=False)
        except OSError as exc:
            return exc
        return None

    def read(self, worker_id: str) -> Beat | None:
        try:
            record = json.loads(self.layout.worker_heartbeat(worker_id).read_bytes())
            return Beat(datetime.fromisoformat(record["heartbeat_at"]), record.get("state") == "stopped")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _expired(self, beat: Beat | None, job_beat: datetime | None) -> bool:
        if beat is not None and beat.stopped and (job_beat is None or beat.at >= job_beat):
            return True
        moments = [moment for moment in (beat.at if beat else None, job_beat) if moment is not None]
        return not moments or (self.clock() - max(moments)).total_seconds() > self.lease_seconds

    def is_gone(self, worker_id: str) -> bool:
        """The daemon stopped cleanly, or has not heart-beaten for a whole lease."""
        return self._expired(self.read(worker_id), None)

    def job_owner_gone(self, meta: JobMeta, cache: dict[str, Beat | None]) -> bool:
        """May another daemon take this job over? (`cache`: heartbeats read in this pass.)"""
        owner = meta.worker.id
        if owner not in cache:
            cache[owner] = self.read(owner)
        return self._expired(cache[owner], meta.worker.heartbeat_at)
