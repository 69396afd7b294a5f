"""Idempotency-Key for POST /jobs/create: an upload sent again with the same key gets the first job.

One small file per key in the outbox (`.ocr-watcher/idempotency/<sha256 of the key>.json`), created
exclusively: of uploads racing with one key, to one daemon or to several on the outbox, the first to
create the file claims the job and writes its id there; the others wait for that id. A key is kept
for KEEP_SECONDS after its job was made; a retention of the job itself ends it sooner (the key then
makes a new job). Reusing a key for other content is refused, as the IETF draft on the header says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..spool.atomic import atomic_write_json
from ..spool.layout import OutboxLayout

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the draft's examples use
KEEP_SECONDS = 86400.0
# A key reserved this long without a job id: the daemon that held it died during the claim.
ABANDONED_SECONDS = 300.0
WAIT_SECONDS = 30.0  # how long a second upload waits for the first one's claim
SWEEP_SECONDS = 3600.0  # how often the keys past KEEP_SECONDS are removed (by whichever upload comes)
_POLL_SECONDS = 0.05


class KeyReused(Exception):
    """The key came with other content first."""


class KeyBusy(Exception):
    """The first upload with this key is still being claimed after WAIT_SECONDS."""


@dataclass(frozen=True)
class Held:
    """What the key's file says: a job id, or a claim under way."""

    job_id: str | None
    sha256: str | None
    age: float  # seconds since the file was written


def held_now(record: Any, age: float) -> Held:
    """A key file's contents (None: empty or half-written, as a claim just begun) as a Held."""
    if not isinstance(record, dict):
        return Held(None, None, age)
    job_id, digest = record.get("job_id"), record.get("sha256")
    return Held(job_id if isinstance(job_id, str) else None, digest if isinstance(digest, str) else None, age)


def decide(held: Held, sha256: str) -> str:
    """For an upload that finds the key taken: "replay" (answer with the first job), "refuse" (other
    content), "wait" (its claim is under way), or "replace" (expired, or its claim was abandoned)."""
    if held.job_id is not None:
        if held.age > KEEP_SECONDS:
            return "replace"
        return "replay" if held.sha256 in (None, sha256) else "refuse"
    return "replace" if held.age > ABANDONED_SECONDS else "wait"


class IdempotencyKeys:
    def __init__(self, layout: OutboxLayout, *, fsync: bool) -> None:
        self.folder = layout.idempotency
        self.fsync = fsync
        self._next_sweep = 0.0

    def path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def reserve(self, key: str, sha256: str) -> str | None:
        """None: the key is the caller's now (claim, then `record` or `release`); else the job id of
        the first upload with this key. Raises KeyReused or KeyBusy."""
        path = self.path(key)
        self.folder.mkdir(exist_ok=True)  # not its parent: an outbox without one is not ours
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_SECONDS
            self.sweep(time.time())
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as out:
                    json.dump({"sha256": sha256, "reserved_at": time.time()}, out)
                return None
            held = self._read(path)
            if held is None:
                continue  # released or replaced meanwhile: try again at once
            verdict = decide(held, sha256)
            if verdict == "replay":
                return held.job_id
            if verdict == "refuse":
                raise KeyReused(key)
            if verdict == "replace":
                self._remove_if_old(path)
                continue
            if time.monotonic() > deadline:
                raise KeyBusy(key)
            time.sleep(_POLL_SECONDS)

    def sweep(self, now: float) -> int:
        """Remove the keys kept past KEEP_SECONDS (and reservations abandoned as long), so that the
        folder holds a day of keys, not every key ever sent. Returns how many went."""
        removed = 0
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if now - entry.stat().st_mtime > KEEP_SECONDS:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def record(self, key: str, sha256: str, job_id: str) -> None:
        atomic_write_json(self.path(key), {"sha256": sha256, "job_id": job_id}, fsync=self.fsync)

    def release(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    @staticmethod
    def _read(path: Path) -> Held | None:
        try:
            age = time.time() - path.stat().st_mtime
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            record = None  # being written by its creator
        return held_now(record, age)

    @staticmethod
    def _remove_if_old(path: Path) -> None:
        """Remove an expired or abandoned key file (both older than ABANDONED_SECONDS), unless another
        upload has just put a fresh one in its place."""
        try:
            if time.time() - path.stat().st_mtime > ABANDONED_SECONDS:
                path.unlink()
        except FileNotFoundError:
            pass
