"""POST /jobs/create: an upload received into the inbox's upload area, checked, and claimed by the
main loop through the same code path as an inbox file."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..intake.sniff import Verdict, sniff_file
from ..spool.layout import INTERNAL_DIR
from ..spool.model import Status
from .context import ApiContext, json_answer
from .idempotency import KEY_PATTERN, KeyBusy, KeyReused
from .upload import Received, UploadError, receive_upload

log = logging.getLogger("ocr_watcher.api")


async def create_from_upload(ctx: ApiContext, request: Request) -> tuple[JSONResponse, int]:
    """Receive the upload into the inbox's upload area, check it, and have the main loop claim it.
    Whatever the answer, nothing of a refused upload is kept (the claim gives a file back too).
    With an Idempotency-Key header, an upload the key has already made a job for gets that job."""
    config = ctx.config()
    key = request.headers.get("idempotency-key")
    if key is not None and not KEY_PATTERN.match(key):
        raise HTTPException(400, "Idempotency-Key must be 1 to 255 visible ASCII characters")
    ctx.uploads.mkdir(parents=True, exist_ok=True)
    part = ctx.uploads / f"{secrets.token_hex(8)}.part"
    started = time.monotonic()
    try:
        received = await _receive(request, part, int(config.http.max_upload_mb * 2**20))
        profile = received.fields.get("profile") or "default"
        if profile != "default" and profile not in config.profiles:
            known = ", ".join(["default", *sorted(config.profiles)])
            raise HTTPException(400, f"unknown profile {profile!r}; the config has: {known}")
        sniff = await run_in_threadpool(sniff_file, part, Path(received.filename or "upload").name)
        if sniff.verdict is Verdict.REJECT:
            raise HTTPException(415, sniff.message or "not a PDF or an image")
        if sniff.verdict is Verdict.INCOMPLETE:
            raise HTTPException(400, sniff.message or "the file is incomplete")
        filename = Path(received.filename or "").name or f"upload{sniff.suffix}"
        received_at = time.monotonic()
        if key is not None and (first := await _reserve(ctx, key, received.sha256)) is not None:
            return _replay(ctx, first), received.size
        rel = f"{INTERNAL_DIR}/{ctx.uploads.name}/{part.name}"
        claim = _claim(ctx, lambda: ctx.control.claim_upload(rel, filename, profile, sniff, received.sha256))
        job_id = await claim if key is None else await _claim_keyed(ctx, key, received.sha256, claim)
    finally:
        part.unlink(missing_ok=True)  # claimed: already renamed away; otherwise nothing is kept
    log.info(
        "%s: uploaded over HTTP as %r (%d bytes; received in %.3f s, claimed in %.3f s)",
        job_id,
        filename,
        received.size,
        received_at - started,
        time.monotonic() - received_at,
    )
    return json_answer({"job_id": job_id, "status": Status.QUEUED.value}), received.size


async def _reserve(ctx: ApiContext, key: str, sha256: str) -> str | None:
    """The job an earlier upload with this key made (its folder still there), or None: ours to make."""
    try:
        first = await run_in_threadpool(ctx.keys.reserve, key, sha256)
    except KeyReused:
        raise HTTPException(422, "this Idempotency-Key was used for another file") from None
    except KeyBusy:
        raise HTTPException(409, "an upload with this Idempotency-Key is still being claimed; try again") from None
    except OSError as exc:
        raise HTTPException(503, f"cannot keep the Idempotency-Key: {exc.strerror or exc}") from None
    if first is not None and not ctx.store.paths(first).metadata.exists():
        ctx.keys.release(key)  # its job is gone (retention): the key makes a new one
        return await _reserve(ctx, key, sha256)
    return first


async def _claim_keyed(ctx: ApiContext, key: str, sha256: str, claim: Awaitable[str]) -> str:
    try:
        job_id = await claim
    except BaseException:
        ctx.keys.release(key)  # no job: a retry with the key may make one
        raise
    try:
        ctx.keys.record(key, sha256, job_id)
    except OSError as exc:  # the job exists: say so; a retry after the reservation lapses makes another
        log.warning("%s: cannot record its Idempotency-Key: %s", job_id, exc)
    return job_id


def _replay(ctx: ApiContext, job_id: str) -> JSONResponse:
    meta = ctx.store.try_load(job_id)
    status = meta.status.value if meta is not None else Status.QUEUED.value
    log.info("%s: an upload with its Idempotency-Key again: answered with the job it made", job_id)
    answer = json_answer({"job_id": job_id, "status": status})
    answer.headers["Idempotent-Replayed"] = "true"
    return answer


async def _receive(request: Request, part: Path, limit: int) -> Received:
    length = request.headers.get("content-length")
    try:
        return await receive_upload(
            request.stream(),
            request.headers.get("content-type"),
            int(length) if length and length.isdigit() else None,
            part,
            limit,
        )
    except UploadError as exc:
        raise HTTPException(exc.status, exc.message) from None
    except OSError as exc:
        raise HTTPException(503, f"cannot write the upload into the inbox: {exc.strerror or exc}") from None


async def _claim(ctx: ApiContext, claim: Callable[[], str]) -> str:
    """The claim, on the main loop; every refusal is a 503 after which no job appears later."""
    try:
        return await run_in_threadpool(ctx.control.call, claim)
    except OSError as exc:
        raise HTTPException(503, f"cannot create the job: {exc.strerror or exc}") from None
    except TimeoutError:  # it never started, and never will (calls.CallQueue)
        message = "the daemon is too busy to take the file now; nothing was kept, send it again"
        raise HTTPException(503, message) from None
    except Exception as exc:  # NotServing: the daemon is stopping
        raise HTTPException(503, f"cannot create the job now: {exc}") from None
