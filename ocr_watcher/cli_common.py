"""What the CLI's commands share: exit codes, the usage error, a job's summary line, and waiting
for jobs to end (a progress bar on a terminal, lines otherwise)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from .spool.model import TERMINAL, JobMeta, Status
from .spool.store import JobStore

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def summary_line(meta: JobMeta) -> str:
    progress = meta.progress
    pages = f"{progress.pages_done}/{progress.pages_total if progress.pages_total is not None else '?'}"
    line = f"{meta.job_id}  {meta.status.value:<10} pages {pages:<9} {progress.percent:5.1f}%"
    if meta.error:
        line += f"  {meta.error.type}: {meta.error.message}"
    return line


# -- subcommands -----------------------------------------------------------------------------------
def wait_for(store: JobStore, job_ids: Sequence[str], timeout: float | None = None) -> int:
    """Poll metadata.json until every job is terminal; a progress bar on a terminal, lines otherwise."""
    interactive = sys.stderr.isatty()
    bars: dict[str, Any] = {}
    last_line: dict[str, str] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    final: dict[str, JobMeta] = {}
    if interactive:
        from tqdm import tqdm

        from .job_list import live_eta

        eta_of = live_eta(store)
        for position, job_id in enumerate(job_ids):
            bars[job_id] = tqdm(total=None, desc=job_id[:40], unit="page", position=position, leave=True)
    try:
        while len(final) < len(job_ids):
            for job_id in job_ids:
                if job_id in final:
                    continue
                meta = store.try_load(job_id)
                if meta is None:
                    if not store.paths(job_id).dir.exists():
                        raise UsageError(f"job {job_id} was deleted")
                    continue
                if interactive:
                    bar = bars[job_id]
                    bar.total = meta.progress.pages_total
                    bar.n = meta.progress.pages_done + meta.progress.pages_failed
                    bar.set_postfix_str(" ".join(filter(None, [meta.status.value, eta_of(meta)])), refresh=True)
                else:
                    line = summary_line(meta)
                    if last_line.get(job_id) != line:
                        print(line, flush=True)
                        last_line[job_id] = line
                if meta.status in TERMINAL:
                    final[job_id] = meta
            if len(final) < len(job_ids):
                if deadline is not None and time.monotonic() > deadline:
                    print("timed out waiting", file=sys.stderr)
                    return EXIT_JOB_FAILED
                time.sleep(0.5)
    finally:
        for bar in bars.values():
            bar.close()
    return EXIT_OK if all(m.status is Status.COMPLETED for m in final.values()) else EXIT_JOB_FAILED
