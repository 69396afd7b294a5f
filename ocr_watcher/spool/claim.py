"""Claiming a file: from the inbox into a job folder, exactly once, across crashes and daemons.

The sequence (each step survives a crash at any point; `recover_claims` finishes or undoes it):

1. mkdir `<inbox>/.ocr-watcher/claims/<job_id>/` and write `claim.json` (who, what, where from).
2. rename the inbox file to `claims/<job_id>/input<ext>` — THE claim: one atomic rename on the
   inbox's filesystem, so of several daemons exactly one wins; the others see ENOENT.
3. assemble the job folder under `<outbox>/.ocr-watcher/incoming/<job_id>/` (metadata.json, then
   the input moved in: a rename on one filesystem, else copy + fsync + rename).
4. rename the staged folder to `<outbox>/<job_id>` — the job appears whole — then remove the claim.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import stat
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from .atomic import TMP_MARK, atomic_write_json, fsync_dir, temp_name_for
from .file_hash import size_and_sha256
from .ids import new_job_id
from .layout import InboxLayout
from .model import EngineInfo, JobError, JobMeta, Source, Status, Worker, iso, utc_now
from .store import JobStore

log = logging.getLogger("ocr_watcher.claim")
CLAIM_RECORD = "claim.json"
ABANDONED_BUILD_SECONDS = 3600.0  # a claim folder half-built this long ago belongs to a dead process
# An empty one (its builder killed before it wrote a byte) names nobody to wait for; it goes once
# older than any live builder's first write takes.
EMPTY_BUILD_SECONDS = 5.0
_COPY_CHUNK = 1 << 20
_HOST = socket.gethostname()


@dataclass
class ClaimRequest:
    """What intake decided about a ready file."""

    inbox_path: str  # relative to the inbox, POSIX separators
    profile: str
    priority: int
    kind: str | None  # "pdf" | "image" | None when unsupported
    input_suffix: str  # ".pdf", ".png", ... (the input file in the job folder is input<suffix>)
    engine: str
    failure: JobError | None = None  # set: the job is created failed, with this error
    source_name: str | None = None  # the file's own name when the inbox path does not carry it (uploads)
    origin: str = "inbox"  # "inbox" or "http"
    sha256: str | None = None  # already known (an upload hashed while it streamed): not read again
    engine_settings: dict | None = None  # language, dpi, model, mode: fixed for the job's life


class InputStillWritten(Exception):
    """The file changed while it was being claimed: its writer is not done. The claim stays, and
    recovery (every outbox scan) finishes it once the file holds still."""


@dataclass
class ClaimRecord:
    job_id: str
    worker_id: str
    claimed_at: str
    request: dict

    @classmethod
    def read(cls, path: Path) -> ClaimRecord | None:
        try:
            return cls(**json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError):
            return None


class Claimer:
    def __init__(self, inbox: Path, store: JobStore, worker_id: str) -> None:
        self.inbox = InboxLayout(inbox)
        self.store = store
        self.worker_id = worker_id
        # Job ids of claims being made on a claim thread, and of those made but not yet taken up by
        # the daemon (`release`): recovery and the outbox scan leave them to their claimer.
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        # The record a busy claim published: the daemon takes the job up from it, not from a re-read.
        self._made: dict[str, JobMeta] = {}

    def is_busy(self, job_id: str) -> bool:
        with self._busy_lock:
            return job_id in self._busy

    def release(self, job_id: str) -> None:
        """The claim `claim` returned is taken up by the daemon; it is an ordinary job now."""
        with self._busy_lock:
            self._busy.discard(job_id)
            self._made.pop(job_id, None)

    def made(self, job_id: str) -> JobMeta | None:
        """The metadata.json a busy claim published, as written (None when another daemon's
        recovery, not this claim, made the job). Nobody else writes a busy job's record."""
        with self._busy_lock:
            return self._made.get(job_id)

    def claim(self, request: ClaimRequest, now: datetime | None = None, *, give_back: bool = False) -> str | None:
        """Claim one inbox file; the new job id, or None when another daemon (or a person) was first.

        When the job cannot be built (a full or read-only outbox), the claim normally stays for
        recovery to finish later: the inbox file has nobody else to hold it. With `give_back` the
        file goes back where it came from and the error is raised with no trace of a job left, for
        a caller (an HTTP upload) that answers "failed" and whose client will send it again.

        Safe on several threads at once. A job id returned is busy until `release`d; after an
        error or None nothing stays busy (a claim left behind is recovery's).
        """
        now = now or utc_now()
        name = request.source_name or Path(request.inbox_path).name
        job_id = new_job_id(name, now)
        with self._busy_lock:  # before the first folder appears: recovery must never see it free
            self._busy.add(job_id)
        try:
            claimed = self._claim(request, job_id, now, give_back=give_back)
        except BaseException:
            self.release(job_id)
            raise
        if claimed is None:
            self.release(job_id)
        return claimed

    def _claim(self, request: ClaimRequest, job_id: str, now: datetime, *, give_back: bool) -> str | None:
        claim_dir = self.inbox.claims / job_id
        fields = asdict(request)
        fields["failure"] = request.failure.model_dump() if request.failure else None
        record = ClaimRecord(job_id, self.worker_id, now.isoformat(), fields)
        # The claim folder appears with its record already inside (built under a hidden name, then
        # renamed), so recovery on another host never sees a claim it cannot attribute.
        building = self.inbox.claims / f".{job_id}{TMP_MARK}{secrets.token_hex(4)}"
        building.mkdir(parents=True)
        atomic_write_json(building / CLAIM_RECORD, asdict(record), fsync=self.store.fsync)
        os.rename(building, claim_dir)
        claimed = claim_dir / f"input{request.input_suffix}"
        try:
            os.rename(self.inbox.root / request.inbox_path, claimed)
        except FileNotFoundError:
            # On NFS a rename whose reply was lost reports failure although it happened.
            if not claimed.exists():
                shutil.rmtree(claim_dir, ignore_errors=True)
                return None
        # No fsync of the rename itself: if a crash undoes it, the file is back in the inbox and
        # recovery rolls the claim back; the steps after it are journaled after it.
        try:
            self._finish(record, claim_dir, claimed)
        except OSError:
            if self.store.paths(job_id).dir.exists():
                # Published; only tidying failed (recovery finishes it). The job exists, so say so.
                log.warning("%s: claimed, but the claim folder could not be tidied yet", job_id, exc_info=True)
                return job_id
            if give_back and self._give_back(request, claim_dir, job_id):
                log.info("%s: not created (the outbox refused it); %s given back", job_id, request.inbox_path)
            raise
        return job_id

    def recover(self, is_abandoned) -> list[str]:
        """Finish claims a crash interrupted: ours, or others' whose owner `is_abandoned(worker_id)`."""
        finished: list[str] = []
        try:
            claim_dirs = sorted(self.inbox.claims.iterdir())
        except FileNotFoundError:
            return finished
        for claim_dir in claim_dirs:
            if self.is_busy(_job_id_of(claim_dir.name)):
                continue  # being made right now, on a claim thread
            if claim_dir.name.startswith("."):  # a claim folder still being built (or a crash's leftover)
                # Removing one never loses a file: the inbox file moves only after the folder is
                # renamed into place. So it goes as soon as its builder is known to be gone.
                builder = _builder_of(claim_dir)
                gone = builder is not None and (builder == self.worker_id or is_abandoned(builder))
                age = _age_seconds(claim_dir)
                if gone or age > ABANDONED_BUILD_SECONDS:
                    shutil.rmtree(claim_dir, ignore_errors=True)
                elif builder is None and age > EMPTY_BUILD_SECONDS:
                    _remove_if_empty(claim_dir)
                continue
            record = ClaimRecord.read(claim_dir / CLAIM_RECORD)
            if record is None:
                # A folder is renamed into place with its record inside, so one without it is a removal
                # cut short (kill -9 during the finished claim's rmtree): with no input left in it there
                # is nothing to lose, and it goes now. One that still holds an input (a damaged disk) is
                # left where it is: a person can move the file back.
                if not _input_in(claim_dir):
                    shutil.rmtree(claim_dir, ignore_errors=True)
                continue
            if record.worker_id != self.worker_id and not is_abandoned(record.worker_id):
                continue
            try:
                if self._finish(record, claim_dir):
                    finished.append(record.job_id)
            except OSError as exc:  # this one waits (full disk, ...); the others may still finish
                log.error("%s: cannot finish the claim yet: %s", record.job_id, exc)
            except InputStillWritten as exc:
                log.info("%s: %s; finishing the claim once it holds still", record.job_id, exc)
        return finished

    # -- internals -----------------------------------------------------------------------------
    def _give_back(self, request: ClaimRequest, claim_dir: Path, job_id: str) -> bool:
        """Undo an unpublished claim: the input back to its inbox path, claim and staging removed.
        False (the claim stays for recovery) when the input cannot be put back."""
        staged = self.store.layout.staging / job_id
        held = _input_in(claim_dir) or _input_in(staged)  # the original, wherever the build left it
        source = self.inbox.root / request.inbox_path
        if held is None or source.exists():
            return False
        try:
            os.rename(held, source)  # on the inbox's filesystem: needs no free space
        except OSError:
            log.exception("%s: cannot give %s back; recovery finishes the claim", job_id, request.inbox_path)
            return False
        shutil.rmtree(staged, ignore_errors=True)
        shutil.rmtree(claim_dir, ignore_errors=True)
        return True

    def _finish(self, record: ClaimRecord, claim_dir: Path, claimed: Path | None = None) -> bool:
        """Steps 3-4; idempotent, so recovery can run it again from any point. `claimed`: the
        input just renamed into the claim folder (recovery looks for it)."""
        job_id = record.job_id
        final = self.store.paths(job_id).dir
        staged = self.store.layout.staging / job_id
        claimed = claimed or _input_in(claim_dir)
        if final.exists():
            if claimed is not None and (final / claimed.name).exists():
                claimed.unlink()  # a cross-filesystem copy finished; only the original was left
            shutil.rmtree(claim_dir, ignore_errors=True)
            return True
        if claimed is None:
            if _input_in(staged) is not None and (staged / "metadata.json").exists():
                self._publish(staged, final)  # crashed between moving the input and publishing
                shutil.rmtree(claim_dir, ignore_errors=True)
                return True
            shutil.rmtree(claim_dir, ignore_errors=True)  # the rename never happened
            shutil.rmtree(staged, ignore_errors=True)
            return False
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        (staged / "pages").mkdir()
        request = ClaimRequest(**record.request)
        if isinstance(request.failure, dict):
            request.failure = JobError.model_validate(request.failure)
        before = claimed.lstat()  # a regular file's lstat is its stat
        regular = stat.S_ISREG(before.st_mode)
        same_fs = before.st_dev == staged.stat().st_dev
        mtime_ns = None
        if regular:
            size, digest = (before.st_size, request.sha256) if request.sha256 else size_and_sha256(claimed)
            _unchanged_since(claimed, before)
            # On one filesystem the job's input is this very file, which a late write still reaches.
            mtime_ns = before.st_mtime_ns if same_fs else None
        else:  # a FIFO, device or link that slipped in: never opened (a FIFO could block forever)
            size, digest = 0, None
            request.failure = JobError(type="unsupported_type", message="not a regular file (link, FIFO or device)")
        meta = _initial_metadata(record, request, claimed.name, size, digest, mtime_ns, owner=self.worker_id)
        atomic_write_json(staged / "metadata.json", meta.to_json(), fsync=self.store.fsync)
        if same_fs:
            os.rename(claimed, staged / claimed.name)
        elif regular:
            _copy_durably(claimed, staged / claimed.name)
            _unchanged_since(claimed, before)  # a write during the copy would make the copy stale
        self._publish(staged, final)
        with self._busy_lock:
            if job_id in self._busy:
                self._made[job_id] = meta
        if not same_fs:
            claimed.unlink()
        _remove_claim_folder(claim_dir)
        log.info(
            "%s: claimed %s as %s (profile %s)%s",
            job_id,
            request.inbox_path,
            meta.status.value,
            request.profile,
            f": {request.failure.message}" if request.failure else "",
        )
        return True

    def _publish(self, staged: Path, final: Path) -> None:
        os.rename(staged, final)
        if self.store.fsync:
            fsync_dir(final.parent)


def _job_id_of(claim_name: str) -> str:
    """The job id a claim folder is for: its name, or `.<job_id>.tmp-<hex>` while it is built."""
    return claim_name[1:].rsplit(TMP_MARK, 1)[0] if claim_name.startswith(".") else claim_name


def _remove_claim_folder(claim_dir: Path) -> None:
    """A finished claim's folder holds only its record: two calls, where rmtree makes a dozen."""
    try:
        os.unlink(claim_dir / CLAIM_RECORD)
        os.rmdir(claim_dir)
    except OSError:
        shutil.rmtree(claim_dir, ignore_errors=True)  # anything else in it, or already gone


def _remove_if_empty(folder: Path) -> None:
    """rmdir removes a folder only while it is empty, in one step: a live builder that was about
    to write into it then fails before any inbox file has moved, so nothing can be lost."""
    try:
        os.rmdir(folder)
    except OSError:
        pass


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _builder_of(building: Path) -> str | None:
    """Who was building this claim folder: from its record, or from the record's temporary file when
    the builder died while syncing it (the likeliest moment: the fsync is the slow step)."""
    try:
        candidates = [building / CLAIM_RECORD, *building.glob(f".{CLAIM_RECORD}{TMP_MARK}*")]
    except OSError:
        return None
    for path in candidates:
        record = ClaimRecord.read(path)
        if record is not None and isinstance(record.worker_id, str):
            return record.worker_id
    return None


def _input_in(folder: Path) -> Path | None:
    try:
        for path in folder.iterdir():
            if path.name.startswith("input"):
                return path
    except FileNotFoundError:
        pass
    return None


def _unchanged_since(path: Path, before: os.stat_result) -> None:
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise InputStillWritten(
            f"{path.name} changed while it was being claimed ({before.st_size} -> {after.st_size} bytes)"
        )


def _copy_durably(src: Path, dst: Path) -> None:
    tmp = temp_name_for(dst)
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, _COPY_CHUNK)
        fout.flush()
        os.fsync(fout.fileno())
    os.rename(tmp, dst)


def _initial_metadata(
    record: ClaimRecord,
    request: ClaimRequest,
    input_file: str,
    size: int,
    digest: str | None,
    mtime_ns: int | None,
    *,
    owner: str,
) -> JobMeta:
    """The job belongs to the daemon that finishes the claim (after a crash, maybe not the claimer)."""
    now = utc_now()
    meta = JobMeta(
        job_id=record.job_id,
        source=Source(
            name=request.source_name or Path(request.inbox_path).name,
            inbox_path=request.inbox_path,
            size=size,
            sha256=digest,
            origin=request.origin,
            mtime_ns=mtime_ns,
        ),
        input_file=input_file,
        kind=request.kind,
        profile=request.profile,
        priority=request.priority,
        created_at=datetime.fromisoformat(record.claimed_at),
        updated_at=now,
        engine=EngineInfo(kind=request.engine, **(request.engine_settings or {})),
        worker=Worker(id=owner, host=_HOST, pid=os.getpid(), heartbeat_at=now),
    )
    meta.history.append({"status": Status.QUEUED.value, "at": iso(meta.created_at)})
    if request.failure is not None:
        meta.transition(Status.FAILED, now=now, error=request.failure)
    return meta
