"""A finished job's result (result.md, result_metadata.json) assembled and written on a few threads
of its own: two fsyncs per job that the main loop used to wait for.

The single-writer rule holds: while its result is being written a job is `ActiveJob.writing`, and
nothing else writes those two files; metadata.json is never written here. What the write came to
returns to the main thread as a `ResultWritten` event, where the job's owner completes the job (or
makes it wait, or does a page again), as it did when the write was its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..pipeline.assemble import assemble_result
from ..pipeline.result_json import job_json
from ..pipeline.scheduler import RunningJob
from ..pipeline.searchable_pdf import job_pdf
from ..spool.layout import RESULT_JSON, RESULT_PDF, RESULT_TXT
from ..spool.shared_results import share_results
from ..spool.store import JobStore
from .active import ActiveJob

RESULT_THREADS = 4  # enough for the journal to commit several jobs' fsyncs together


@dataclass(frozen=True)
class ResultWritten:
    job: RunningJob
    result_meta: dict[str, Any] | None  # None when `error` says why it was not written
    error: Exception | None = None


def result_write(store: JobStore, active: ActiveJob, outputs: frozenset[str]) -> Callable[[], dict[str, Any]]:
    """The write that completes `active` (on a result thread, from copies): its own pages assembled
    into the result files of `outputs` (config.outputs), or, for a duplicate, the results of the job
    it follows shared."""
    meta, failed, leader = active.meta.copy_whole(), dict(active.job.failed), active.follows
    if leader is not None:
        return lambda: share_results(store, leader, meta)

    def write() -> dict[str, Any]:
        markdown, result_meta, text = assemble_result(store, meta, failed, text="txt" in outputs)
        more = {RESULT_TXT: text.encode("utf-8")} if text is not None else {}
        if "json" in outputs:
            more[RESULT_JSON] = job_json(store, meta, failed)
        if "pdf" in outputs:
            try:
                more[RESULT_PDF] = job_pdf(store, meta)
            except Exception as exc:  # an input pypdf cannot rewrite, an image: the rest stands
                result_meta["warnings"].append(f"no result.pdf: {exc}")
        store.write_result(meta.job_id, markdown, result_meta, more=more)
        return result_meta

    return write


class ResultWrites:
    def __init__(self, post: Callable[[ResultWritten], None]) -> None:
        self._post = post  # onto the main loop's event queue
        self._pool: ThreadPoolExecutor | None = None

    def start(
        self, job: RunningJob, write: Callable[[], dict[str, Any]], then: Callable[[], None] | None = None
    ) -> None:
        """Write the result of `job` (`write`: see result_write); `then`: the observers' I/O due
        before the completion is saved (Hooks.ending_work)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(RESULT_THREADS, thread_name_prefix="result")
        self._pool.submit(self._write, job, write, then)

    def wait(self) -> None:
        """Let the writes running finish (at a stop); their events are on the queue afterwards."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _write(self, job: RunningJob, write: Callable[[], dict[str, Any]], then: Callable[[], None] | None) -> None:
        try:
            result_meta = write()
            if then is not None:
                then()
        except Exception as exc:  # PageMissing, OSError, or a bug: the owner decides on the main thread
            self._post(ResultWritten(job, None, exc))
        else:
            self._post(ResultWritten(job, result_meta))
