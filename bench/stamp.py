"""What the outbox scan pays per failed or cancelled job to notice a rewrite of its metadata.json.

    .venv/bin/python bench/stamp.py [--quick] [--jobs 5000] [--runs 5]

Each scan looks at every failed or cancelled job (they may be retried) with `JobStore.has_control`
and `JobStore.metadata_stamp`. The stamp is (revision, inode, mtime) from one open and a 64-byte read,
since (inode, mtime) alone can repeat; the baseline, measured in the same run on the same files, is
that old stamp: one stat. `--jobs` metadata.json files as the daemon writes them are planted in a
temporary outbox; each run times one pass over all of them (with the control-file look that goes with
it), page cache warm as on a daemon that scans every few seconds. Printed: medians of the runs in
microseconds per job, and the ratio of the new pass to the old one.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import Bench, median, repeat, temp_root  # noqa: E402

from ocr_watcher.spool.layout import METADATA, RETRY  # noqa: E402
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker  # noqa: E402
from ocr_watcher.spool.store import JobStore  # noqa: E402


def plant(store: JobStore, count: int) -> list[str]:
    ids = []
    for n in range(count):
        meta = JobMeta(
            job_id=f"scan{n:06d}.pdf_20260101_000000_{n:08x}",
            source=Source(name=f"scan{n:06d}.pdf", inbox_path=f"scan{n:06d}.pdf", size=1),
            input_file="input.pdf",
            created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            worker=Worker(id="w", host="h", pid=1),
        )
        meta.status = Status.FAILED
        store.paths(meta.job_id).dir.mkdir()
        store.save(meta)
        ids.append(meta.job_id)
    return ids


def old_stamp(root: str, job_id: str) -> tuple[int, int] | None:
    """The stamp before the revision: metadata.json's (inode, mtime)."""
    try:
        st = os.stat(f"{root}{job_id}/{METADATA}")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def one_pass(store: JobStore, ids: list[str], new: bool) -> float:
    root = os.path.join(os.fspath(store.root), "")
    started = time.perf_counter()
    for job_id in ids:
        store.has_control(job_id, RETRY)
        if new:
            store.metadata_stamp(job_id)
        else:
            old_stamp(root, job_id)
    return (time.perf_counter() - started) / len(ids) * 1e6


def main(argv: list[str] | None = None) -> int:
    bench = Bench("stamp", __doc__, quick="500 jobs, 3 runs")
    bench.sized("--jobs", int, 5000, 500, "failed jobs planted")
    bench.sized("--runs", int, 5, 3, "passes of each kind")
    args = bench.parse(argv)
    with temp_root("stamp") as root:
        store = JobStore(root / "outbox", fsync=False)
        store.root.mkdir()
        ids = plant(store, args.jobs)
        one_pass(store, ids, True)  # warm the page cache for both
        pairs = repeat(
            args.runs,
            lambda _: (one_pass(store, ids, False), one_pass(store, ids, True)),
            lambda pair: f"stat {pair[0]:.2f} us/job, revision {pair[1]:.2f} us/job",
        )
    old, new = median(p[0] for p in pairs), median(p[1] for p in pairs)
    print(f"{args.jobs} failed jobs: stat stamp {old:.2f} us/job, revision stamp {new:.2f} us/job, x{new / old:.2f}")
    print(f"one scan of them: {old * args.jobs / 1000:.1f} ms -> {new * args.jobs / 1000:.1f} ms")
    return bench.finish({"jobs": args.jobs, "runs": pairs, "stat_us": old, "revision_us": new, "ratio": new / old})


if __name__ == "__main__":
    sys.exit(main())
