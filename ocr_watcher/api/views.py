"""What the API answers, as models (they are also its OpenAPI description) and pure functions over
metadata.json's contents. No I/O here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from ..spool.layout import RESULT_FORMATS
from ..spool.model import Status

STATUSES = [status.value for status in Status]
# `?status=` as the description states it: statuses, comma-separated, spaces and empty items allowed (as
# parse_statuses reads them), so that a client, or a fuzzer, knows what is valid before it asks.
_ONE_STATUS = "(?:" + "|".join(STATUSES) + ")?"
STATUS_QUERY_PATTERN = f"^[ ]*{_ONE_STATUS}[ ]*(?:,[ ]*{_ONE_STATUS}[ ]*)*$"


class ProgressView(BaseModel):
    pages_total: int | None = Field(None, description="Known once the document has been opened.")
    pages_done: int = 0
    pages_failed: int = 0
    percent: float = 0.0


class ErrorView(BaseModel):
    type: str
    message: str


class DeliveryView(BaseModel):
    delivery_id: str
    kind: str = Field(description="webhook or command.")
    target: str = Field(description="The webhook URL without user, password or query; the command line.")
    event: str | None = None
    attempt: int = 1
    state: str = Field(description="pending, delivered, undeliverable (webhook); ok, failed, timeout (command).")
    tries: int = 0
    updated_at: str | None = None
    http_status: int | None = None
    error: str | None = None
    exit_code: int | None = None
    output_tail: str | None = None


class ResultFileView(BaseModel):
    name: str = Field(description="The file in the job folder: result.md, result.txt, result_metadata.json.")
    bytes: int
    sha256: str
    format: str | None = Field(None, description="Its `format` for GET /jobs/{job_id}/download, if it has one.")


MEDIA_TYPES = {
    "markdown": "text/markdown; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "pdf": "application/pdf",
    "json": "application/json",
}


def result_files(done: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """The files a completed job's DONE lists, with their download formats; None without a DONE."""
    if not isinstance(done, Mapping) or not isinstance(done.get("files"), list):
        return None
    formats = {name: fmt for fmt, (name, _) in RESULT_FORMATS.items()}
    return [
        {"name": f["name"], "bytes": f["bytes"], "sha256": f["sha256"], "format": formats.get(f["name"])}
        for f in done["files"]
        if isinstance(f, Mapping) and {"name", "bytes", "sha256"} <= f.keys()
    ]


class EtaView(BaseModel):
    pages_ahead: int = Field(description="Pages of other jobs to be done before this job's next page.")
    estimated_start: str | None = Field(None, description="When its next page starts; null until pages were measured.")
    estimated_finish: str | None = Field(None, description="When its last page is done; null until it has opened.")
    seconds_to_start: float | None = None
    seconds_to_finish: float | None = None
    computed_at: str = Field(description="When the daemon running the job made the estimate (every second).")


class JobView(BaseModel):
    job_id: str
    status: Status
    filename: str = Field(description="The name the file had when it was dropped or uploaded.")
    profile: str
    progress: ProgressView
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    attempts: int = 1
    error: ErrorView | None = None
    warnings: list[str] = Field(default_factory=list)
    duplicate_of: str | None = Field(
        None, description="The job of the same content whose results this one has (completed) or waits for (queued)."
    )
    eta: EtaView | None = Field(
        None, description="Queued and processing jobs, in GET /jobs/{job_id} only (docs/eta.md)."
    )
    deliveries: list[DeliveryView] | None = Field(
        None, description="Webhook and command outcomes of the job's endings; in GET /jobs/{job_id} only."
    )
    files: list[ResultFileView] | None = Field(
        None, description="A completed job's result files as its DONE lists them; in GET /jobs/{job_id} only."
    )


class CreatedJob(BaseModel):
    job_id: str
    status: Status


class JobPage(BaseModel):
    jobs: list[JobView]
    total: int = Field(description="Jobs matching the filter, all pages together.")
    offset: int
    limit: int


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when the main loop is stalled or the engine is not ready.")
    worker_id: str
    main_loop_ok: bool
    engine_ready: bool
    jobs: dict[str, int] = Field(description="Job folders in the outbox by status.")


class Problem(BaseModel):
    detail: str


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def job_view(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JobView of a metadata.json document (already checked to be one), as plain JSON."""
    progress = meta.get("progress") if isinstance(meta.get("progress"), Mapping) else {}
    source = meta.get("source") if isinstance(meta.get("source"), Mapping) else {}
    error = meta.get("error")
    total = progress.get("pages_total")
    percent = progress.get("percent")
    return {
        "job_id": meta["job_id"],
        "status": meta["status"],
        "filename": _text(source.get("name")) or "",
        "profile": _text(meta.get("profile")) or "default",
        "progress": {
            "pages_total": total if isinstance(total, int) else None,
            "pages_done": _int(progress.get("pages_done")),
            "pages_failed": _int(progress.get("pages_failed")),
            "percent": float(percent) if isinstance(percent, (int, float)) else 0.0,
        },
        "created_at": _text(meta.get("created_at")),
        "started_at": _text(meta.get("started_at")),
        "finished_at": _text(meta.get("finished_at")),
        "updated_at": _text(meta.get("updated_at")),
        "attempts": _int(meta.get("attempts"), 1),
        "error": (
            {"type": str(error.get("type")), "message": str(error.get("message"))}
            if isinstance(error, Mapping)
            else None
        ),
        "warnings": [w for w in meta.get("warnings") or [] if isinstance(w, str)],
        "duplicate_of": _text(meta.get("duplicate_of")),
    }


_DELIVERY_TEXT = ("delivery_id", "kind", "target", "state")
_DELIVERY_OPTIONAL = {
    "event": str,
    "updated_at": str,
    "http_status": int,
    "error": str,
    "exit_code": int,
    "output_tail": str,
}


def deliveries_view(doc: Any) -> list[dict[str, Any]]:
    """The entries of a job's deliveries.json that have the fields a DeliveryView needs."""
    entries = doc.get("deliveries") if isinstance(doc, Mapping) else None
    shown = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or not all(isinstance(entry.get(k), str) for k in _DELIVERY_TEXT):
            continue
        view: dict[str, Any] = {k: entry[k] for k in _DELIVERY_TEXT}
        view["attempt"] = _int(entry.get("attempt"), 1)
        view["tries"] = _int(entry.get("tries"))
        for name, kind in _DELIVERY_OPTIONAL.items():
            value = entry.get(name)
            ok = isinstance(value, kind) and not isinstance(value, bool)
            view[name] = value if ok else None
        shown.append(view)
    return shown


def parse_statuses(raw: Iterable[str]) -> set[str]:
    """`?status=queued&status=processing` or `?status=queued,processing`; ValueError names a bad one."""
    wanted: set[str] = set()
    for value in raw:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in STATUSES:
                raise ValueError(f"unknown status {name!r}; use one of {', '.join(STATUSES)}")
            wanted.add(name)
    return wanted


def select_page(
    newest_first: Sequence[tuple[str, str]], statuses: set[str], offset: int, limit: int
) -> tuple[list[str], int]:
    """From (job_id, status) pairs, newest first: the ids on the requested page, and how many match."""
    matching = [job_id for job_id, status in newest_first if not statuses or status in statuses]
    return matching[offset : offset + limit], len(matching)


def count_by_status(statuses: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses:
        if status in counts:
            counts[status] += 1
    return counts
