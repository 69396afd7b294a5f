"""The estimates a daemon publishes for the jobs it holds: one small file per daemon in the outbox
(`.ocr-watcher/queue/<worker_id>.json`), rewritten every second or two while it has work, so that
the job API of any daemon on the outbox and the CLI can show them. One file per daemon, not a field
in each job's metadata.json: rewriting every queued job's record as the queue moves would cost more
than the OCR of a small job."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..spool.atomic import atomic_write_json
from ..spool.layout import OutboxLayout
from .estimate import Estimate

STALE_SECONDS = 30.0  # an older file is from a daemon that stopped or hangs: not shown


def queue_file(layout: OutboxLayout, worker_id: str) -> Path:
    return layout.queue / f"{worker_id}.json"


def record(
    worker_id: str, now: float, estimates: Mapping[str, Estimate], costs: Mapping[str, float], inbox_waiting: int
) -> dict[str, Any]:
    """The published document; times are unix seconds, fixed when computed (readers need no clock)."""

    def at(seconds: float | None) -> float | None:
        return None if seconds is None else round(now + seconds, 3)

    return {
        "worker_id": worker_id,
        "computed_at": round(now, 3),
        "inbox_waiting": inbox_waiting,
        "seconds_per_page": {engine: round(cost, 4) for engine, cost in costs.items()},
        "jobs": {
            job_id: {"pages_ahead": e.pages_ahead, "start_at": at(e.start_in), "finish_at": at(e.finish_in)}
            for job_id, e in estimates.items()
        },
    }


def publish(path: Path, document: dict[str, Any]) -> None:
    """No fsync: it is advice, remade within seconds, and a crash makes it stale anyway. Only the
    last folder is made: an outbox without its .ocr-watcher folder is not ours (a mount point left
    behind), and nothing is written into it."""
    path.parent.mkdir(exist_ok=True)
    atomic_write_json(path, document, fsync=False)


def withdraw(path: Path) -> None:
    """At the daemon's exit; an outbox that is gone or read-only keeps a file that goes stale."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat().replace("+00:00", "Z")


class QueueFiles:
    """Reads published estimates, each file parsed again only when it changed (GET /jobs/{id} and
    `ocr-watcher jobs` ask for many jobs of few daemons)."""

    def __init__(self, layout: OutboxLayout) -> None:
        self.layout = layout
        self._parsed: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    def _document(self, worker_id: str) -> dict[str, Any] | None:
        path = queue_file(self.layout, worker_id)
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            cached = self._parsed.get(worker_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            document = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(document, dict) or not isinstance(document.get("jobs"), dict):
            return None
        self._parsed[worker_id] = (key, document)
        return document

    def eta(self, worker_id: str, job_id: str, now: float) -> dict[str, Any] | None:
        """The job's estimate as shown (ISO times, seconds from `now`), or None when there is none
        fresh: the job is not held by a running daemon, or has no work left."""
        document = self._document(worker_id)
        if document is None:
            return None
        computed = document.get("computed_at")
        entry = document["jobs"].get(job_id)
        if not isinstance(computed, (int, float)) or now - computed > STALE_SECONDS or not isinstance(entry, dict):
            return None
        return eta_view(entry, computed, now)


def eta_view(entry: Mapping[str, Any], computed_at: float, now: float) -> dict[str, Any]:
    """A published entry for people and clients: a start already passed reads as now."""
    start, finish = entry.get("start_at"), entry.get("finish_at")
    ahead = entry.get("pages_ahead")
    return {
        "pages_ahead": ahead if isinstance(ahead, int) else 0,
        "estimated_start": _iso(max(start, now)) if isinstance(start, (int, float)) else None,
        "estimated_finish": _iso(max(finish, now)) if isinstance(finish, (int, float)) else None,
        "seconds_to_start": round(max(0.0, start - now), 1) if isinstance(start, (int, float)) else None,
        "seconds_to_finish": round(max(0.0, finish - now), 1) if isinstance(finish, (int, float)) else None,
        "computed_at": _iso(computed_at),
    }
