"""Daemon memory with a big backlog: N files waiting in the inbox and N finished jobs in the outbox.

    .venv/bin/python bench/memory.py [--quick] [--files N] [--window S]

1. A real completed job is made first (daemon, engine tesseract, one file); its folder is the template.
2. Baseline: a daemon on empty folders (started first, running while the rest is built), RSS once it
   has run for the window.
3. Loaded: N finished job folders are built on disk from the template (metadata.json as the daemon
   writes it, pages/0001.md + .json, result.md, result_metadata.json, a distinct input.pdf each), and
   N distinct one-page text PDFs are written to the inbox. A daemon (engine tesseract, workers 2,
   intake.max_queued_jobs 1, so the backlog stays waiting while it works slowly) runs for the window
   (>= 3 inbox polls and 3 outbox scans; GET /health once, which fills the job API's listing index
   with every job); VmRSS/VmHWM of its main process only (not the render or
   tesseract children) are sampled from /proc/<pid>/status.
4. The daemon's own scan code is timed in this process on the same folders: one full inbox scan
   (Intake._scan: scandir + stat + ignore rules), the readiness sniff of every file, and one full
   outbox read (JobStore.try_load of every job, what a start-up scan does).

Target: < 150 MB RSS, engine processes aside.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Bench,
    Daemon,
    Meter,
    build_outbox,
    make_completed_job,
    median,
    print_figures,
    proc_status,
    temp_root,
)

from tests.pdfgen import sample_lines, text_pdf  # noqa: E402

NAME = "memory"
TARGET_MB = 150
POLL = 2.0  # the default intake.poll_interval_seconds
OUTBOX_SCAN = 5.0  # the default jobs.outbox_scan_interval_seconds
SETTLE = 1.0


def config() -> dict:
    return {
        "engine": "tesseract",
        "intake": {"settle_seconds": SETTLE, "poll_interval_seconds": POLL, "max_queued_jobs": 1},
        "pipeline": {"workers": 2},
        "jobs": {"outbox_scan_interval_seconds": OUTBOX_SCAN},
    }


def make_template(root: Path) -> Path:
    """One real completed job, made by the daemon (engine tesseract, as the loaded daemon runs)."""
    return make_completed_job(root, config())


def fill_inbox(inbox: Path, count: int) -> None:
    for i in range(count):
        text_pdf(inbox / f"wait{i:05d}.pdf", [sample_lines(8, seed=2_000_000 + i)])


def snapshot(daemon: Daemon, samples: list[int] | None = None) -> dict:
    status = proc_status(daemon.pid)
    samples = samples or [status["VmRSS"]]
    return {
        "rss_mb": status["VmRSS"] / 1024,
        "rss_max_sampled_mb": max(samples) / 1024,
        "rss_median_sampled_mb": median(samples) / 1024,
        "hwm_mb": status["VmHWM"] / 1024,
        "threads": status.get("Threads"),
        "startup_s": daemon.started_at - daemon.spawned_at,
    }


def observe(daemon: Daemon, window: float) -> dict:
    """Sample the main process's memory for `window` seconds after start; note the first claim."""
    samples: list[int] = []
    first_claim = None
    meter = Meter(daemon.pid)
    steady: Meter | None = None
    deadline = daemon.started_at + window
    listed = False
    while time.time() < deadline:
        daemon.check_alive()
        if not listed:  # the job API's listing index holds every job: count it in
            with urllib.request.urlopen(daemon.http_url + "/health", timeout=30) as response:
                response.read()
            listed = True
        if steady is None and time.time() >= daemon.started_at + window / 2:
            steady = Meter(daemon.pid)  # the second half: start-up work (first scans, sniffs) is over
        samples.append(proc_status(daemon.pid)["VmRSS"])
        if first_claim is None and ": claimed " in daemon.log():
            first_claim = time.time() - daemon.started_at
        time.sleep(0.25)
    cpu = meter.read()
    late = steady.read() if steady is not None else cpu
    return {
        **snapshot(daemon, samples),
        "first_claim_after_start_s": first_claim,
        "main_process_cpu_share": cpu["cpu_main_s"] / cpu["wall_s"],
        "main_process_cpu_share_2nd_half": late["cpu_main_s"] / late["wall_s"],
        "main_thread_cpu_share_2nd_half": late["cpu_main_thread_s"] / late["wall_s"],
        "foreign_cores": cpu["foreign_cores"],
    }


def time_scans(config_path: Path, outbox: Path, reps: int = 3) -> dict:
    """The daemon's own scan code, timed in this process on the loaded folders."""
    from ocr_watcher.config import load_config
    from ocr_watcher.intake.intake import Intake
    from ocr_watcher.spool.store import JobStore

    cfg = load_config(config_path)
    scans, sniffs, loads = [], [], []
    for _ in range(reps):
        intake = Intake(cfg, lambda profile: "tesseract")
        started = time.perf_counter()
        intake._scan(time.monotonic())  # first sight of every file
        scans.append(time.perf_counter() - started)
        started = time.perf_counter()
        intake._scan(time.monotonic())  # steady state: nothing changed
        scans.append(time.perf_counter() - started)
        started = time.perf_counter()
        for rel in list(intake.tracked):
            intake._sniff(rel)
        sniffs.append(time.perf_counter() - started)
        store = JobStore(outbox)
        started = time.perf_counter()
        metas = [store.try_load(job_id) for job_id in store.iter_job_ids()]
        loads.append(time.perf_counter() - started)
    return {
        "inbox_files_tracked": len(intake.tracked),
        "inbox_scan_s": median(scans),
        "inbox_sniff_all_s": median(sniffs),
        "outbox_jobs_loaded": sum(m is not None for m in metas),
        "outbox_load_all_s": median(loads),
    }


def main() -> int:
    bench = Bench(NAME, __doc__, quick="2,000 + 2,000 files")
    bench.sized("--files", int, 10_000, 2000, "inbox files and outbox jobs, each")
    # Scans happen at start and then every POLL / OUTBOX_SCAN seconds: 16 s sees 1 + 3 outbox scans
    # and 8 inbox scans; 11 s sees 1 + 2 outbox scans (3 in all) and 5 inbox scans.
    bench.sized("--window", float, 3 * OUTBOX_SCAN + 1, 2 * OUTBOX_SCAN + 1, "seconds to run each daemon")
    args = bench.parse()
    n = args.files

    with temp_root(NAME) as root:
        # The idle baseline runs while the template and the backlog are made (it only sits there).
        idle = Daemon(root / "idle", config(), name="idle")
        loaded = Daemon(root / "loaded", config(), name="loaded")
        try:
            idle.start()
            idle_meter = Meter(idle.pid)
            print("making a template job ...", flush=True)
            template = make_template(root / "template")
            print(f"building {n:,} finished jobs and {n:,} inbox files ...", flush=True)
            started = time.monotonic()
            build_outbox(template, loaded.outbox, n, "loaded")
            fill_inbox(loaded.inbox, n)
            build_s = time.monotonic() - started
            scans = time_scans(loaded.config_path, loaded.outbox)
            print(f"idle daemon on empty folders: waiting until it has run {args.window:.0f} s ...", flush=True)
            time.sleep(max(0.0, idle.started_at + args.window - time.time()))
            baseline = snapshot(idle)
            cpu = idle_meter.read()
            baseline["main_process_cpu_share"] = cpu["cpu_main_s"] / cpu["wall_s"]
            baseline["main_process_cpu_share_2nd_half"] = baseline["main_process_cpu_share"]
            baseline["main_thread_cpu_share_2nd_half"] = cpu["cpu_main_thread_s"] / cpu["wall_s"]
            idle.stop()

            print(f"loaded daemon for {args.window:.0f} s after start ...", flush=True)
            loaded.start(timeout=600)
            busy = observe(loaded, args.window)
        finally:
            idle.stop()
            loaded.stop()
        print(f"  (building took {build_s:.1f} s)", flush=True)
        jobs_now = sum(1 for e in os.scandir(loaded.outbox) if not e.name.startswith("."))
        busy["jobs_claimed_in_window"] = jobs_now - n

    rows = [
        ["idle, empty folders", baseline["rss_mb"], baseline["rss_max_sampled_mb"], baseline["hwm_mb"]],
        [f"{n:,} waiting + {n:,} done", busy["rss_mb"], busy["rss_max_sampled_mb"], busy["hwm_mb"]],
    ]
    print_figures(
        f"memory: main daemon process only, after a {args.window:.0f} s window (poll {POLL} s, outbox scan "
        f"{OUTBOX_SCAN} s); target < {TARGET_MB} MB",
        ["", "VmRSS MB", "max sampled MB", "VmHWM MB"],
        rows,
    )
    growth = busy["rss_mb"] - baseline["rss_mb"]
    print(f"growth over idle: {growth:.1f} MB = {1024 * growth / (2 * n):.2f} kB per file+job")
    print(
        f"start-up (spawn -> 'ocr-watcher started' logged): idle {baseline['startup_s']:.2f} s, "
        f"loaded {busy['startup_s']:.2f} s; first claim {busy['first_claim_after_start_s'] or float('nan'):.2f} s "
        f"after start; {busy['jobs_claimed_in_window']} jobs claimed in the window"
    )
    print(
        f"main-process CPU over the window: idle {baseline['main_process_cpu_share']:.1%}, "
        f"loaded {busy['main_process_cpu_share']:.1%} of a core (2nd half: "
        f"{busy['main_process_cpu_share_2nd_half']:.1%}, main thread {busy['main_thread_cpu_share_2nd_half']:.1%})"
    )
    print(
        f"daemon code timed here: one inbox scan of {scans['inbox_files_tracked']:,} files "
        f"{1000 * scans['inbox_scan_s']:.0f} ms; sniffing all {1000 * scans['inbox_sniff_all_s']:.0f} ms; "
        f"reading all {scans['outbox_jobs_loaded']:,} job metadata {1000 * scans['outbox_load_all_s']:.0f} ms"
    )
    return bench.finish(
        {
            "quick": args.quick,
            "files": n,
            "window_s": args.window,
            "target_mb": TARGET_MB,
            "build_s": build_s,
            "idle": baseline,
            "loaded": busy,
            "growth_mb": growth,
            "scans": scans,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
