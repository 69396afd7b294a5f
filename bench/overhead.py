"""Daemon overhead with the `text` engine: many one-page born-digital PDFs dropped at once.

    .venv/bin/python bench/overhead.py [--quick] [--jobs N] [--reps R]

Per configuration (intake.max_queued_jobs 16 and 64), R repetitions (median reported): N distinct
one-page PDFs are generated up front, a fresh daemon is started on fresh folders, then all N are
renamed into the inbox at once. Measured:

- jobs/s end to end: N / (last metadata.json `finished_at` - first drop);
- per-job latency = its `finished_at` - its drop time - settle time: median and p95;
- CPU seconds per job of the daemon's main process and of its children (render workers), from
  /proc/<pid>/stat, between the drop and the last completion.

Target: >= 50 jobs/s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Meter,
    drop_all,
    make_text_pdfs,
    median,
    merge,
    parse_iso,
    parse_sets,
    percentile,
    running,
    table,
    temp_root,
    wait_for_jobs,
    write_results,
)

NAME = "overhead"
SETTLE = 0.2
TARGET_JOBS_PER_S = 50.0


def config(max_queued: int) -> dict:
    return {
        "engine": "text",
        "intake": {"settle_seconds": SETTLE, "poll_interval_seconds": 0.2, "max_queued_jobs": max_queued},
        "pipeline": {"workers": 2},
    }


def one_run(n: int, max_queued: int, timeout: float, extra: dict) -> dict:
    with temp_root(NAME) as root:
        sources = make_text_pdfs(root / "stage", n)
        with running(root, merge(config(max_queued), extra)) as daemon:
            time.sleep(0.5)  # let start-up work (first scans) finish before the clock starts
            meter = Meter(daemon.pid)
            first_drop = time.time()
            dropped = drop_all(sources, daemon.inbox)
            drop_seconds = time.time() - first_drop
            jobs = wait_for_jobs(daemon.outbox, n, timeout=timeout, daemon=daemon)
            cpu = meter.read()
    finished = {meta["source"]["name"]: parse_iso(meta["finished_at"]) for meta in jobs.values()}
    statuses = [meta["status"] for meta in jobs.values()]
    latencies = [finished[name] - dropped[name] - SETTLE for name in dropped]
    elapsed = max(finished.values()) - first_drop
    return {
        "jobs": n,
        "completed": statuses.count("completed"),
        "not_completed": len(statuses) - statuses.count("completed"),
        "drop_seconds": drop_seconds,
        "elapsed_seconds": elapsed,
        "jobs_per_second": n / elapsed,
        "latency_median_s": median(latencies),
        "latency_p95_s": percentile(latencies, 95),
        "latency_max_s": max(latencies),
        "cpu_main_ms_per_job": 1000 * cpu["cpu_main_s"] / n,
        "cpu_main_thread_ms_per_job": 1000 * cpu["cpu_main_thread_s"] / n,
        "cpu_children_ms_per_job": 1000 * cpu["cpu_children_s"] / n,
        "main_thread_busy": cpu["main_thread_busy"],
        "foreign_cores": cpu["foreign_cores"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 jobs, 1 repetition, max_queued_jobs 16 and 64")
    parser.add_argument("--jobs", type=int, help="jobs per run (default 1000; quick 200)")
    parser.add_argument("--reps", type=int, help="repetitions per configuration (default 3; quick 1)")
    parser.add_argument("--queued", type=int, nargs="+", default=[16, 64], help="max_queued_jobs values")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra config, e.g. jobs.fsync=false")
    args = parser.parse_args()
    extra = parse_sets(args.set)
    n = args.jobs or (200 if args.quick else 1000)
    reps = args.reps or (1 if args.quick else 3)
    timeout = max(60.0, n * 0.5)

    summary: dict[str, dict] = {}
    rows = []
    for max_queued in args.queued:
        runs = []
        for rep in range(reps):
            result = one_run(n, max_queued, timeout, extra)
            runs.append(result)
            print(
                f"  max_queued_jobs={max_queued} run {rep + 1}/{reps}: {result['jobs_per_second']:.1f} jobs/s, "
                f"latency median {result['latency_median_s']:.2f} s, p95 {result['latency_p95_s']:.2f} s, "
                f"main thread busy {result['main_thread_busy']:.0%}, other load {result['foreign_cores']:.2f} cores",
                flush=True,
            )
        keys = [k for k in runs[0] if k != "jobs"]
        med = {key: median(r[key] for r in runs) for key in keys}
        summary[str(max_queued)] = {"median": med, "runs": runs}
        rows.append(
            [
                max_queued,
                med["jobs_per_second"],
                med["jobs_per_second"] / TARGET_JOBS_PER_S,
                med["latency_median_s"],
                med["latency_p95_s"],
                med["cpu_main_ms_per_job"],
                med["cpu_main_thread_ms_per_job"],
                med["cpu_children_ms_per_job"],
                med["main_thread_busy"],
                med["foreign_cores"],
                int(med["not_completed"]),
            ]
        )

    print()
    print(f"overhead: engine text, {n} one-page PDFs dropped at once, 2 workers, settle {SETTLE} s, median of {reps}")
    headers = ["max_queued", "jobs/s", "vs 50/s", "lat med s", "lat p95 s", "cpu ms/job", "main thr ms/job"]
    print(table([*headers, "child ms/job", "main thr busy", "other load", "not completed"], rows))
    print("latency = finished_at - drop time - settle. CPU from /proc between drop and last completion:")
    print("  cpu = daemon process (all threads), main thr = its main loop thread alone, child = render workers;")
    print("  main thr busy = main-thread CPU / wall; other load = cores used by other processes on the machine")
    if extra:
        print(f"extra config: {extra}")
    path = write_results(
        NAME,
        {
            "quick": args.quick,
            "jobs": n,
            "repetitions": reps,
            "settle_seconds": SETTLE,
            "target_jobs_per_second": TARGET_JOBS_PER_S,
            "extra_config": extra,
            "configurations": summary,
        },
    )
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
