"""The rules of a delivery, as pure functions: its id, its body, its signature, whether an answer
was accepted, when to try again, and whether a delivery found after a restart is still owed."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..spool.layout import RESULT_MD, RESULT_METADATA
from ..spool.model import JobMeta

# Stable across restarts and daemons: the same ending of the same attempt is the same delivery, so a
# receiver that has seen an id can drop a repeat (deliveries are at least once).
_ID_SPACE = uuid.UUID("4f0c2b4e-6a57-4d3e-9a0e-0c8f6f1d2a61")
FIRST_RETRY_SECONDS = 1.0
LONGEST_RETRY_SECONDS = 300.0
LONGEST_RETRY_AFTER_SECONDS = 3600.0
SIGNATURE_HEADER = "X-OCR-Watcher-Signature"
TIMESTAMP_HEADER = "X-OCR-Watcher-Timestamp"
DELIVERY_HEADER = "X-OCR-Watcher-Delivery"
EVENT_HEADER = "X-OCR-Watcher-Event"
_ROUTES = {"markdown": "download", "result_metadata": "metadata"}  # the job API's route per result file


def delivery_id(job_id: str, attempt: int) -> str:
    return str(uuid.uuid5(_ID_SPACE, f"{job_id}/{attempt}"))


def shown_target(target: str) -> str:
    """A webhook URL as it may be shown in a job folder and the job API: without a user, password or
    query string, where receivers often carry a token; a command's line is shown as it is."""
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https"):
        return target
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def event_name(status: str) -> str:
    return f"job.{status}"


def job_body(meta: JobMeta, job_dir: str, public_url: str | None) -> dict[str, Any]:
    """What a webhook receives (and a command finds in OCRW_BODY): the ending, in plain values."""
    files = {"markdown": RESULT_MD, "result_metadata": RESULT_METADATA} if meta.status.value == "completed" else {}
    body: dict[str, Any] = {
        "delivery_id": delivery_id(meta.job_id, meta.attempts),
        "event": event_name(meta.status.value),
        "job_id": meta.job_id,
        "status": meta.status.value,
        "attempt": meta.attempts,
        "profile": meta.profile,
        "source_name": meta.source.name,
        "pages_total": meta.progress.pages_total,
        "pages_done": meta.progress.pages_done,
        "pages_failed": meta.progress.pages_failed,
        "error": meta.error.model_dump() if meta.error else None,
        "finished_at": meta.finished_at.isoformat() if meta.finished_at else None,
        "job_dir": job_dir,
        "files": {name: f"{job_dir}/{file}" for name, file in files.items()},
    }
    if public_url:
        base = f"{public_url.rstrip('/')}/jobs/{meta.job_id}"
        body["urls"] = {"job": base, **{name: f"{base}/{_ROUTES[name]}" for name in files}}
    return body


def body_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`: a receiver recomputes it and rejects old timestamps."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def headers(delivery: str, event: str, body: bytes, timestamp: int, secret: str | None) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        DELIVERY_HEADER: delivery,
        EVENT_HEADER: event,
        TIMESTAMP_HEADER: str(timestamp),
    }
    if secret:
        out[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    return out


@dataclass(frozen=True)
class Answer:
    """What one attempt got: an HTTP status (and its Retry-After, in seconds), or a transport error."""

    status: int | None = None
    retry_after: float | None = None
    error: str | None = None


def accepted(answer: Answer) -> bool:
    return answer.status is not None and 200 <= answer.status < 300


def retryable(answer: Answer) -> bool:
    """Connection errors, timeouts, 5xx and 429 are worth another try; other answers will not change."""
    if answer.status is None:
        return True
    return answer.status >= 500 or answer.status in (408, 429)


def next_try_in(answer: Answer, tries: int, age_seconds: float, give_up_after: float) -> float | None:
    """Seconds until the next attempt after `tries` failed ones, or None: give up (undeliverable)."""
    if not retryable(answer):
        return None
    delay = min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, tries - 1))
    if answer.retry_after is not None:
        delay = min(max(delay, answer.retry_after), LONGEST_RETRY_AFTER_SECONDS)
    return None if age_seconds + delay > give_up_after else delay


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; an HTTP date is read as "a while" (the exponential delay stands)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def still_owed(attempt: int, on_disk: JobMeta | None) -> bool:
    """A delivery recorded before its job's ending was saved: owed if that ending is on disk (the
    attempt ended, or a later one began, which only a RETRY of an ended job does) or the job folder is
    gone (retention deletes only ended jobs). Not owed when the attempt is still running there: the
    save never happened, and the job ends again later with its own delivery."""
    if on_disk is None:
        return True
    return on_disk.attempts > attempt or (on_disk.attempts == attempt and on_disk.status.terminal)
