"""The job API and the web page: an HTTP front door onto the same job store as the folders.

No second queue and no second state: every answer is read from the job folders, an upload is
claimed through the same code path as an inbox file, and cancel and retry write the same CANCEL and
RETRY files a person would (then ask the main loop to act on them at once). Paths and fields follow
the synchronous OCR server this service replaces, so its clients keep working.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import StringConstraints

from ..spool.ids import is_job_id
from ..spool.layout import CANCEL, RESULT_FORMATS, RETRY
from ..spool.model import RETRYABLE, Status
from ..spool.store import JobStore
from .context import NO_STORE, ApiContext, json_answer
from .create import create_from_upload
from .idempotency import KEY_PATTERN
from .render import CONTENT_SECURITY_POLICY, result_html
from .views import (
    MEDIA_TYPES,
    STATUS_QUERY_PATTERN,
    STATUSES,
    CreatedJob,
    Health,
    JobPage,
    JobView,
    Problem,
    deliveries_view,
    job_view,
    parse_statuses,
    result_files,
)

log = logging.getLogger("ocr_watcher.api")
MAX_PAGE_SIZE = 500
ACTIVE_STATUSES = (Status.QUEUED.value, Status.PROCESSING.value)
DownloadFormat = Literal["markdown", "txt", "pdf", "json"]  # the keys of spool.layout.RESULT_FORMATS
_FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


# -- reading job folders ------------------------------------------------------------------------------
def read_metadata(store: JobStore, job_id: str) -> dict[str, Any]:
    """metadata.json as a dict; 404 for an id that is not a job here (never a path outside the outbox)."""
    if not is_job_id(job_id):
        raise HTTPException(404, f"{job_id!r} is not a job id")
    try:
        doc = json.loads(store.paths(job_id).metadata.read_bytes())
    except FileNotFoundError:
        raise HTTPException(404, f"no job {job_id}") from None
    except (OSError, ValueError) as exc:
        raise HTTPException(500, f"the metadata.json of job {job_id} cannot be read: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("job_id") != job_id or doc.get("status") not in STATUSES:
        raise HTTPException(500, f"the metadata.json of job {job_id} is not a job's metadata")
    return doc


def read_optional_json(path: Path) -> Any:
    """A job folder's optional JSON file (deliveries.json), None when absent or unreadable."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _file(path: Path, **kwargs: Any) -> FileResponse:
    """A file of a job folder; 404 when it has gone (retention may delete a job at any moment)."""
    try:
        stat_result = path.stat()
    except FileNotFoundError:
        raise HTTPException(404, f"{path.name} is gone (the job was deleted)") from None
    return FileResponse(path, stat_result=stat_result, headers=NO_STORE, **kwargs)


def read_completed(store: JobStore, job_id: str, what: str) -> dict[str, Any]:
    """metadata.json of a completed job; 409 naming `what` (and the progress) for any other status."""
    doc = read_metadata(store, job_id)
    if doc["status"] != Status.COMPLETED.value:
        done = doc.get("progress", {}).get("pages_done", 0)
        total = doc.get("progress", {}).get("pages_total")
        raise HTTPException(
            409, f"{what} is not available: the job is {doc['status']} ({done} of {total or '?'} pages done)"
        )
    return doc


# -- the API --------------------------------------------------------------------------------------
def _auth(ctx: ApiContext) -> Callable[[Request], Awaitable[None]]:
    # Read by hand rather than with FastAPI's HTTPBearer: that would describe every operation as
    # needing a token, which is only true when tokens are configured (and a reload can change that).
    # async: no I/O here, and a plain function would cost every request a hop to the thread pool.
    async def check(request: Request) -> None:
        tokens = ctx.config().http.api_tokens
        if not tokens:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            offered = given.strip().encode()
            # Compare against every token (constant time each), so timing tells nothing about which.
            if sum(hmac.compare_digest(offered, t.get_secret_value().encode()) for t in tokens):
                return
        raise HTTPException(
            401, "a valid bearer token is needed (Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"}
        )

    return check


JobId = Annotated[str, PathParam(description="A job id, as returned by POST /jobs/create or listed by GET /jobs.")]
_PROBLEM_SCHEMA = Problem.model_json_schema()


def _problem(description: str) -> dict[str, Any]:
    """An error answer: always JSON {"detail": ...}, also on routes whose success is text. (FastAPI's
    `"model"` form would document it in the route's own media type.)"""
    return {"description": description, "content": {"application/json": {"schema": _PROBLEM_SCHEMA}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("No or a wrong bearer token (only when tokens are configured)."),
    404: _problem("No such job."),
}


class MarkdownResponse(PlainTextResponse):
    media_type = "text/markdown"


def job_router(ctx: ApiContext) -> APIRouter:
    store = ctx.store
    router = APIRouter(dependencies=[Depends(_auth(ctx))], responses=_ERRORS, tags=["jobs"])

    @router.post(
        "/jobs/create",
        response_model=CreatedJob,
        summary="Upload a PDF or image; answers at once with the job id",
        responses={
            400: _problem("No file, a malformed body, a truncated file, an unknown profile or a bad key."),
            409: _problem("The first upload with this Idempotency-Key is still being claimed."),
            413: _problem("Larger than http.max_upload_mb."),
            415: _problem("Not multipart/form-data, or not a PDF or image."),
            422: _problem("This Idempotency-Key came with another file first."),
            503: _problem("The daemon is stopping or cannot write to the inbox."),
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Sent again with the same key, the upload gets the first job (for 24 h), "
                    "answered with the header Idempotent-Replayed: true.",
                    "schema": {"type": "string", "pattern": KEY_PATTERN.pattern},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "profile": {"type": "string", "description": "A profile from the config."},
                            },
                        }
                    }
                },
            },
        },
    )
    async def create_job(request: Request) -> JSONResponse:
        try:
            response, size = await create_from_upload(ctx, request)
        except HTTPException as exc:
            ctx.on_upload(exc.status_code, 0)
            raise
        ctx.on_upload(response.status_code, size)
        return response

    @router.get("/jobs", response_model=JobPage, summary="All jobs, newest first")
    def list_jobs(
        status: Annotated[
            list[Annotated[str, StringConstraints(pattern=STATUS_QUERY_PATTERN)]] | None,
            Query(description=f"Only these statuses ({', '.join(STATUSES)}); repeat or comma-separate."),
        ] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    ) -> JSONResponse:
        try:
            wanted = parse_statuses(status or [])
        except ValueError as exc:  # in the shape of FastAPI's own validation errors, as documented
            problem = {"loc": ["query", "status"], "msg": str(exc), "type": "value_error"}
            raise HTTPException(422, [problem]) from None
        ids, total = ctx.index.page(wanted, offset, limit)
        jobs = []
        for job_id in ids:
            try:
                jobs.append(job_view(read_metadata(store, job_id)))
            except HTTPException:
                continue  # deleted since the index was refreshed
        return json_answer({"jobs": jobs, "total": total, "offset": offset, "limit": limit})

    @router.get("/jobs/{job_id}", response_model=JobView, summary="Status, progress and deliveries")
    async def get_job(job_id: JobId) -> JSONResponse:
        # async and a direct read: small files from the page cache are quicker than a thread hop.
        meta = read_metadata(store, job_id)
        view = job_view(meta)
        if meta["status"] in ACTIVE_STATUSES:
            worker = meta.get("worker")
            worker_id = worker.get("id") if isinstance(worker, dict) else None
            view["eta"] = ctx.estimates.eta(str(worker_id), job_id, time.time()) if worker_id else None
        view["deliveries"] = deliveries_view(read_optional_json(store.paths(job_id).deliveries))
        if meta["status"] == Status.COMPLETED.value:
            view["files"] = result_files(read_optional_json(store.paths(job_id).done))
        return json_answer(view)

    @router.get(
        "/jobs/{job_id}/download",
        summary="A result file, once completed: result.md (format markdown, the default), .txt, .pdf, .json",
        response_class=MarkdownResponse,
        responses={
            200: {"content": {"text/plain": {}, "application/pdf": {}, "application/json": {}}},
            404: _problem("The job's profile does not write that format (`outputs`)."),
            409: _problem("Not completed (yet)."),
        },
    )
    def download(job_id: JobId, format: Annotated[DownloadFormat, Query()] = "markdown") -> Response:
        file_name, suffix = RESULT_FORMATS[format]
        doc = read_completed(store, job_id, file_name)
        path = store.paths(job_id).dir / file_name
        if not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {file_name} (its profile's outputs do not include {format})")
        name = Path(doc.get("source", {}).get("name") or job_id).stem + suffix
        return _file(path, media_type=MEDIA_TYPES[format], filename=name)

    @router.get(
        "/jobs/{job_id}/pages/{page}",
        summary="One page's Markdown, as soon as that page is done",
        response_class=MarkdownResponse,
        responses={409: _problem("The page is not done yet; ask again later.")},
    )
    def get_page(job_id: JobId, page: Annotated[int, PathParam(ge=1, le=100_000)]) -> Response:
        doc = read_metadata(store, job_id)
        markdown = store.read_page(job_id, page)
        if markdown is not None:
            return MarkdownResponse(markdown, headers=NO_STORE)
        total = doc.get("progress", {}).get("pages_total")
        if isinstance(total, int) and page > total:
            raise HTTPException(404, f"job {job_id} has {total} pages")
        if doc["status"] in {s.value for s in RETRYABLE} or doc["status"] == Status.COMPLETED.value:
            raise HTTPException(404, f"page {page} of job {job_id} has no result (the job is {doc['status']})")
        raise HTTPException(409, f"page {page} is not done yet (the job is {doc['status']})")

    @router.get(
        "/jobs/{job_id}/metadata",
        summary="result_metadata.json: per-page figures and warnings, once completed",
        responses={
            200: {"content": {"application/json": {"schema": {"type": "object"}}}},
            409: _problem("Not completed (yet)."),
        },
    )
    def get_result_metadata(job_id: JobId) -> Response:
        read_completed(store, job_id, "result_metadata.json")
        return _file(store.paths(job_id).result_metadata, media_type="application/json")

    @router.get(
        "/jobs/{job_id}/images/{name}",
        summary="A figure cropped from a page (linked from result.md as images/NAME)",
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    def get_image(job_id: JobId, name: str) -> Response:
        read_metadata(store, job_id)
        path = store.paths(job_id).images / name
        if not _FIGURE_NAME.match(name) or not path.is_file():
            raise HTTPException(404, f"job {job_id} has no figure {name!r}")
        return _file(path)

    @router.get(
        "/jobs/{job_id}/result.html",
        summary="result.md rendered as an HTML document (figures inlined), for the web page",
        response_class=HTMLResponse,
        responses={409: _problem("Not completed (yet).")},
    )
    def get_result_html(job_id: JobId) -> Response:
        doc = read_completed(store, job_id, "the result")
        paths = store.paths(job_id)
        try:
            markdown = paths.result_md.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise HTTPException(404, f"job {job_id} has no result.md") from None
        page = result_html(markdown, paths.dir, doc.get("source", {}).get("name") or job_id)
        headers = {**NO_STORE, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
        return HTMLResponse(page, headers=headers)

    @router.delete(
        "/jobs/{job_id}",
        response_model=JobView,
        summary="Cancel a job (as a CANCEL file would)",
        responses={409: _problem("The job has already completed.")},
    )
    def cancel(job_id: JobId) -> JSONResponse:
        doc = read_metadata(store, job_id)
        if doc["status"] == Status.COMPLETED.value:
            raise HTTPException(409, f"job {job_id} has already completed")
        if doc["status"] in {Status.QUEUED.value, Status.PROCESSING.value}:
            _control(ctx, job_id, CANCEL, lambda: ctx.control.cancel_now(job_id))
        return json_answer(job_view(read_metadata(store, job_id)))

    @router.post(
        "/jobs/{job_id}/retry",
        response_model=JobView,
        summary="Queue a failed or cancelled job again (as a RETRY file would)",
        responses={409: _problem("The job is not failed or cancelled.")},
    )
    def retry(job_id: JobId) -> JSONResponse:
        doc = read_metadata(store, job_id)
        if doc["status"] not in {s.value for s in RETRYABLE}:
            raise HTTPException(409, f"only failed or cancelled jobs can be retried; job {job_id} is {doc['status']}")
        _control(ctx, job_id, RETRY, lambda: ctx.control.retry_now(job_id))
        return json_answer(job_view(read_metadata(store, job_id)))

    return router


def _control(ctx: ApiContext, job_id: str, control: str, act: Callable[[], None]) -> None:
    """Write the control file (so any daemon that owns the job acts on it), then have ours act now."""
    try:
        ctx.store.request(job_id, control)
    except FileNotFoundError:
        raise HTTPException(404, f"no job {job_id}") from None
    try:
        ctx.control.call(act, timeout=30)
    except Exception as exc:  # the file is written; the owner will still see it
        log.warning("%s: %s written, but the main loop did not act on it at once: %s", job_id, control, exc)


# -- the app --------------------------------------------------------------------------------------
def web_page() -> str:
    return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")


def add_api(app: FastAPI, ctx: ApiContext) -> None:
    """Mount the job API, /health and the web page on `app`."""
    app.include_router(job_router(ctx))
    page = web_page()

    @app.get("/health", response_model=Health, tags=["service"], summary="Health, with job counts by status")
    def health() -> JSONResponse:
        loop_ok, engine_ok = ctx.main_loop_ok(), ctx.engine_ready()
        counts = ctx.index.counts()
        body = {
            "status": "ok" if loop_ok and engine_ok else "degraded",
            "worker_id": ctx.control.worker_id,
            "main_loop_ok": loop_ok,
            "engine_ready": engine_ok,
            "jobs": counts,
        }
        return json_answer(body)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        # The page holds no data (it asks the API, with the token), so it is served to anyone.
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
