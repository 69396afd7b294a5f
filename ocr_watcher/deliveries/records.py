"""Where deliveries are kept: a pending one as a file of its own in the outbox's hidden
`deliveries/` folder (written before its job's ending is saved, removed once it is done), and each
job's outcomes in its folder's deliveries.json. The pending folder holds only what is owed, so a
restart finds it by listing one small folder, not by reading every job."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..spool.atomic import atomic_write_bytes, atomic_write_json, is_temp_name
from ..spool.layout import DELIVERIES, OutboxLayout

WEBHOOK = "webhook"
COMMAND = "command"
LOG_LIMIT = 50  # outcomes kept per job (a job retried many times keeps its latest)


@dataclass
class Pending:
    """One delivery owed: to one webhook URL or the profile's command, for one ending of one job."""

    delivery_id: str
    job_id: str
    attempt: int
    kind: str  # WEBHOOK or COMMAND
    # For people: the URL without user, password or query (a token there stays in the configuration),
    # or the command's argv as one line. The configuration holds what is used.
    target: str
    target_key: str  # which configured webhook or command: a digest of its full URL or argv
    profile: str
    worker_id: str  # the daemon that owes it; another takes it over once that one is gone
    created_at: float  # unix time: the bounded retry time counts from here
    body: dict[str, Any]
    tries: int = 0
    last_error: str | None = None
    confirmed: bool = field(default=False, compare=False)  # in memory: its ending is known to be saved

    @property
    def name(self) -> str:
        return f"{self.delivery_id}-{self.kind}-{self.target_key}.json"

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _STORED}

    @classmethod
    def from_json(cls, record: Any) -> Pending | None:
        try:
            return cls(**record) if isinstance(record, dict) else None
        except TypeError:
            return None


_STORED = tuple(f.name for f in fields(Pending) if f.name != "confirmed")


def target_key(target: str) -> str:
    return hashlib.sha256(target.encode()).hexdigest()[:12]


def pending_name(delivery_id: str, kind: str, target: str) -> str:
    """The file name of the delivery `delivery_id` to `target` (a URL, or the command's line)."""
    return f"{delivery_id}-{kind}-{target_key(target)}.json"


class PendingFolder:
    def __init__(self, layout: OutboxLayout, *, fsync: bool) -> None:
        self.folder = layout.deliveries
        self.fsync = fsync

    def any(self) -> bool:
        """Whether anything is owed, without reading it (the daemon's start asks)."""
        try:
            return any(name.endswith(".json") and not is_temp_name(name) for name in os.listdir(self.folder))
        except FileNotFoundError:
            return False

    def read(self, name: str) -> Pending | None:
        """One pending delivery by its file name; None once it is done (removed) or unreadable."""
        if "/" in name or not name.endswith(".json"):
            return None
        try:
            return Pending.from_json(json.loads((self.folder / name).read_bytes()))
        except (OSError, ValueError):
            return None

    def write(self, pending: Pending) -> None:
        self.folder.mkdir(exist_ok=True)  # not its parent: an outbox without one is not ours
        data = json.dumps(pending.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
        atomic_write_bytes(self.folder / pending.name, data, fsync=self.fsync)

    def remove(self, pending: Pending) -> None:
        try:
            os.unlink(self.folder / pending.name)
        except FileNotFoundError:
            pass

    def all(self, skip: Callable[[str], bool] = lambda name: False) -> list[Pending]:
        """Every pending delivery on the outbox, any daemon's, but those whose file name `skip`s;
        unreadable files are skipped (a half-written one never exists: writes are atomic)."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if is_temp_name(name) or not name.endswith(".json") or skip(name):
                continue
            try:
                pending = Pending.from_json(json.loads((self.folder / name).read_bytes()))
            except (OSError, ValueError):
                continue
            if pending is not None:
                found.append(pending)
        return found


def log_outcome(job_dir: Path, pending: Pending, state: str, details: dict[str, Any], *, fsync: bool) -> bool:
    """Record a delivery's state in its job's deliveries.json ("pending" before the first try, then
    the outcome); False when the job folder is gone (retention may delete an ended job first)."""
    path = job_dir / DELIVERIES
    try:
        entries = json.loads(path.read_bytes()).get("deliveries", [])
    except FileNotFoundError:
        entries = []
    except (OSError, ValueError, AttributeError):
        entries = []  # unreadable: start it again rather than never record anything
    key = (pending.delivery_id, pending.kind, pending.target)
    entries = [e for e in entries if (e.get("delivery_id"), e.get("kind"), e.get("target")) != key]
    entries.append(
        {
            "delivery_id": pending.delivery_id,
            "kind": pending.kind,
            "target": pending.target,
            "event": pending.body.get("event"),
            "attempt": pending.attempt,
            "state": state,
            "tries": pending.tries,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **details,
        }
    )
    if not job_dir.is_dir():
        return False
    try:
        atomic_write_json(path, {"deliveries": entries[-LOG_LIMIT:]}, fsync=fsync)
    except FileNotFoundError:
        return False
    return True
