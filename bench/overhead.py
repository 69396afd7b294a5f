"""Daemon overhead with the `text` engine: many one-page born-digital PDFs dropped at once.

    .venv/bin/python bench/overhead.py [--quick] [--jobs N] [--reps R]

Per configuration (intake.max_queued_jobs 16 and 64), R repetitions (median reported): N distinct
one-page PDFs are generated up front, a fresh daemon is started on fresh folders, then all N are
renamed into the inbox at once. Measured:

- jobs/s end to end: N / (last metadata.json `finished_at` - first drop);
- per-job latency = its `finished_at` - its drop time - settle time: median and p95;
- CPU seconds per job of the daemon's main process and of its children (render workers), from
  /proc/<pid>/stat, between the drop and the last completion.

Target: >= 150 jobs/s on 2 cores (the core redesign's figure; the first was 50); `--queued 8` is
the default setting. On a virtual disk one run can differ from the next by a third: compare medians of
runs made in turn, with a rest between them (the disk slows under sustained fsyncs and recovers).

Where the time goes is the filesystem's as much as the daemon's. An ext4 without a journal (the root
filesystem of some virtual machines, this one's included: /proc/fs/jbd2 names no journal for it)
checks, for every inode it allocates, whether a free one was deleted in the last 30 s, and walks past
each that was: every file a job writes (eleven) pays for every one deleted lately, the previous run's
included, which is why runs slow down back to back. `perf record -g` shows it as recently_deleted
under __ext4_new_inode. The issue's figure is for a local ext4, which has a journal unless made
without one; to measure on one, point OCRW_BENCH_DIR at it (a loop-mounted image will do:
truncate -s 4G img; mkfs.ext4 img; mount -o loop img /mnt/j).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Bench,
    Daemon,
    Meter,
    drop_all,
    make_text_pdfs,
    median,
    medians,
    merge,
    parse_iso,
    percentile,
    print_figures,
    repeat,
    running,
    temp_root,
    wait_for_jobs,
)

NAME = "overhead"
SETTLE = 0.2
TARGET_JOBS_PER_S = 150.0


def config(max_queued: int) -> dict:
    return {
        "engine": "text",
        "intake": {"settle_seconds": SETTLE, "poll_interval_seconds": 0.2, "max_queued_jobs": max_queued},
        "pipeline": {"workers": 2},
    }


def one_run(
    n: int, max_queued: int, timeout: float, extra: dict, after: Callable[[Daemon], dict] | None = None
) -> dict:
    """One run; `after(daemon)`, while the daemon still runs, adds figures of its own (bench/webhooks.py)."""
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
            added = after(daemon) if after is not None else {}
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
        **added,
    }


def main() -> int:
    bench = Bench(NAME, __doc__, quick="200 jobs, 1 repetition, max_queued_jobs 16 and 64", sets=True)
    bench.sized("--jobs", int, 1000, 200, "jobs per run")
    bench.sized("--reps", int, 3, 1, "repetitions per configuration")
    bench.add("--queued", type=int, nargs="+", default=[16, 64], help="max_queued_jobs values")
    args = bench.parse()
    n, reps, extra = args.jobs, args.reps, args.extra
    timeout = max(60.0, n * 0.5)

    summary: dict[str, dict] = {}
    rows = []
    for max_queued in args.queued:
        runs = repeat(
            reps,
            lambda _, queued=max_queued: one_run(n, queued, timeout, extra),  # this iteration's value (B023)
            lambda r: (
                f"{r['jobs_per_second']:.1f} jobs/s, latency median {r['latency_median_s']:.2f} s, "
                f"p95 {r['latency_p95_s']:.2f} s, main thread busy {r['main_thread_busy']:.0%}, "
                f"other load {r['foreign_cores']:.2f} cores"
            ),
            label=f"max_queued_jobs={max_queued} ",
        )
        med = medians(runs, skip=["jobs"])
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

    headers = ["max_queued", "jobs/s", "vs 150/s", "lat med s", "lat p95 s", "cpu ms/job", "main thr ms/job"]
    print_figures(
        f"overhead: engine text, {n} one-page PDFs dropped at once, 2 workers, settle {SETTLE} s, median of {reps}",
        [*headers, "child ms/job", "main thr busy", "other load", "not completed"],
        rows,
    )
    print("latency = finished_at - drop time - settle. CPU from /proc between drop and last completion:")
    print("  cpu = daemon process (all threads), main thr = its main loop thread alone, child = render workers;")
    print("  main thr busy = main-thread CPU / wall; other load = cores used by other processes on the machine")
    if extra:
        print(f"extra config: {extra}")
    return bench.finish(
        {
            "quick": args.quick,
            "jobs": n,
            "repetitions": reps,
            "settle_seconds": SETTLE,
            "target_jobs_per_second": TARGET_JOBS_PER_S,
            "extra_config": extra,
            "configurations": summary,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
