"""The one place that knows where things live in the inbox and the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INTERNAL_DIR = ".ocr-watcher"  # hidden: ignored by the watcher, never a job
METADATA = "metadata.json"
RESULT_MD = "result.md"
RESULT_METADATA = "result_metadata.json"
RESULT_TXT = "result.txt"
RESULT_PDF = "result.pdf"
RESULT_JSON = "result.json"
DONE = "DONE"  # written last, listing the result files (spool/done.py)
# The result files a client asks for by format (profile `outputs`): format -> (file, suffix of a copy's name).
RESULT_FORMATS = {
    "markdown": (RESULT_MD, ".md"),
    "txt": (RESULT_TXT, ".txt"),
    "pdf": (RESULT_PDF, ".pdf"),
    "json": (RESULT_JSON, ".json"),
}
PAGES_DIR = "pages"
IMAGES_DIR = "images"
CANCEL = "CANCEL"
RETRY = "RETRY"
DELIVERIES = "deliveries.json"  # the job's webhook and command outcomes (ocr_watcher/deliveries)
LEASE_PREFIX = ".lease-"


@dataclass(frozen=True)
class JobPaths:
    dir: Path

    @property
    def job_id(self) -> str:
        return self.dir.name

    @property
    def metadata(self) -> Path:
        return self.dir / METADATA

    @property
    def pages(self) -> Path:
        return self.dir / PAGES_DIR

    @property
    def images(self) -> Path:
        return self.dir / IMAGES_DIR

    @property
    def result_md(self) -> Path:
        return self.dir / RESULT_MD

    @property
    def result_metadata(self) -> Path:
        return self.dir / RESULT_METADATA

    @property
    def result_txt(self) -> Path:
        return self.dir / RESULT_TXT

    @property
    def done(self) -> Path:
        return self.dir / DONE

    @property
    def cancel(self) -> Path:
        return self.dir / CANCEL

    @property
    def deliveries(self) -> Path:
        return self.dir / DELIVERIES

    @property
    def retry(self) -> Path:
        return self.dir / RETRY

    def input(self, input_file: str) -> Path:
        return self.dir / input_file

    def page_md(self, page: int) -> Path:
        return self.pages / f"{page:04d}.md"

    def page_info(self, page: int) -> Path:
        return self.pages / f"{page:04d}.json"

    def lease(self, epoch: int) -> Path:
        return self.dir / f"{LEASE_PREFIX}{epoch}"


@dataclass(frozen=True)
class OutboxLayout:
    root: Path

    @property
    def internal(self) -> Path:
        return self.root / INTERNAL_DIR

    @property
    def staging(self) -> Path:
        """Job folders are assembled here, then renamed into the outbox whole."""
        return self.internal / "incoming"

    @property
    def workers(self) -> Path:
        return self.internal / "workers"

    @property
    def deliveries(self) -> Path:
        """Deliveries (webhooks, commands) owed and not yet done: one file each, until it is done."""
        return self.internal / "deliveries"

    @property
    def idempotency(self) -> Path:
        """The job API's Idempotency-Key records: one file per key (ocr_watcher/api/idempotency.py)."""
        return self.internal / "idempotency"

    @property
    def queue(self) -> Path:
        """Each running daemon's estimates for the jobs it holds (ocr_watcher/eta): <worker_id>.json."""
        return self.internal / "queue"

    @property
    def identity(self) -> Path:
        """A random token written once: tells this outbox from an empty folder in its place (an
        NFS mount that went away leaves its mount point behind)."""
        return self.internal / "outbox-id"

    def worker_heartbeat(self, worker_id: str) -> Path:
        return self.workers / f"{worker_id}.json"

    def worker_lock(self, worker_id: str) -> Path:
        return self.workers / f"{worker_id}.lock"

    def job(self, job_id: str) -> JobPaths:
        return JobPaths(self.root / job_id)


@dataclass(frozen=True)
class InboxLayout:
    root: Path

    @property
    def claims(self) -> Path:
        """The hidden claim area: on the inbox's own filesystem, so the claim is one rename."""
        return self.root / INTERNAL_DIR / "claims"

    @property
    def uploads(self) -> Path:
        """HTTP uploads are written here, then claimed from here like any inbox file."""
        return self.root / INTERNAL_DIR / "uploads"
