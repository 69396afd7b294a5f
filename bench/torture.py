"""Throughput under crashes: jobs completed per minute with a `kill -9` every 10 s vs undisturbed.

    .venv/bin/python bench/torture.py [--quick] [--jobs N] [--pages P] [--every S] [--seed N] [--set KEY=VALUE]

One batch of small scanned PDFs (tests/pdfgen.scanned_pdf, 1 to 2P pages each, P on average; engine
tesseract, workers 2) is made once and copied for each run. A run starts a daemon, renames the whole
batch into the inbox at t0 and ends when every job is terminal; throughput = jobs / (last finished - t0).
The "kill" run SIGKILLs the daemon every S seconds after t0 (the restart, with the same worker id,
counts against it); the undisturbed run is otherwise the same. One run each, undisturbed first.

Target: killed throughput >= 80 % of undisturbed. Writes bench/results/torture.json.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    TERMINAL,
    Bench,
    Daemon,
    merge,
    parse_iso,
    print_figures,
    read_meta,
    temp_root,
)

from tests.pdfgen import sample_lines, scanned_pdf  # noqa: E402

NAME = "torture"
TARGET_RATIO = 0.80


def daemon_config() -> dict:
    return {
        "engine": "tesseract",
        "intake": {"settle_seconds": 0.3, "poll_interval_seconds": 0.2, "max_queued_jobs": 8},
        "pipeline": {"workers": 2, "shutdown_grace_seconds": 5},
        "jobs": {"heartbeat_lease_seconds": 5, "outbox_scan_interval_seconds": 0.5},
    }


class RestartableDaemon(Daemon):
    """A daemon restarted many times: its log() is this start's lines only (restarts share one log)."""

    def log(self) -> str:
        return self.log_since_launch()

    def kill9(self) -> None:
        self.kill(signal.SIGKILL)


def make_batch(folder: Path, jobs: int, pages: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    out = []
    for index in range(jobs):
        count = rng.randint(1, 2 * pages - 1)
        lines = [sample_lines(3, seed=seed * 1000 + index * 100 + p, max_chars=28) for p in range(count)]
        out.append(scanned_pdf(folder / f"doc{index:03d}.pdf", lines, dpi=150, size_in=(3.5, 1.5)))
    return out


def terminal_jobs(outbox: Path, done: dict[str, dict]) -> None:
    with os.scandir(outbox) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and e.name not in done]
    for name in names:
        meta = read_meta(outbox / name)
        if meta is not None and meta.get("status") in TERMINAL:
            done[name] = meta


def run_once(root: Path, batch: list[Path], config: dict, every: float | None, timeout: float) -> dict:
    """One daemon (restarted after each kill) through the whole batch."""
    daemon = RestartableDaemon(root, config, name="torture")
    staging = root / "staging"
    staging.mkdir()
    copies = [Path(shutil.copy(src, staging / src.name)) for src in batch]
    daemon.start()
    kills = 0
    done: dict[str, dict] = {}
    try:
        t0 = time.time()
        for path in copies:
            os.rename(path, daemon.inbox / path.name)
        next_kill = t0 + every if every else math.inf
        while len(done) < len(batch):
            if time.time() >= next_kill:
                daemon.kill9()
                kills += 1
                daemon.start()
                next_kill += every  # type: ignore[operator]
            else:
                daemon.check_alive()
            if time.time() - t0 > timeout:
                raise TimeoutError(f"{len(done)} of {len(batch)} jobs finished within {timeout:.0f} s")
            terminal_jobs(daemon.outbox, done)
            time.sleep(0.2)
    finally:
        daemon.stop()
    last = max(parse_iso(meta["finished_at"]) for meta in done.values())
    seconds = last - t0
    completed = sum(meta["status"] == "completed" for meta in done.values())
    digests = {meta["source"]["sha256"] for meta in done.values()}
    return {
        "kill_every_s": every,
        "kills": kills,
        "jobs": len(done),
        "completed": completed,
        "distinct_inputs": len(digests),
        "pages": sum(meta["progress"]["pages_total"] or 0 for meta in done.values()),
        "seconds": round(seconds, 2),
        "jobs_per_minute": round(60 * len(done) / seconds, 2),
    }


def main() -> int:
    bench = Bench(NAME, __doc__, quick="a smaller batch: about 1 minute in all", sets=True)
    bench.sized("--jobs", int, 60, 22, "PDFs in the batch")
    bench.sized("--pages", int, 8, 6, "average pages per PDF")
    bench.add("--every", type=float, default=10.0, help="seconds between kills (default 10)")
    bench.add("--seed", type=int, default=5, help="batch seed (default 5)")
    args = bench.parse()
    jobs, pages = args.jobs, args.pages
    config = merge(daemon_config(), args.extra)
    runs = {}
    with temp_root(NAME) as root:
        batch = make_batch(root / "batch", jobs, pages, args.seed)
        for label, every in (("undisturbed", None), ("kill -9", args.every)):
            runs[label] = run_once(root / label.replace(" ", ""), batch, config, every, timeout=600)
            print(f"{label}: {runs[label]}", flush=True)
    base, killed = runs["undisturbed"], runs["kill -9"]
    ratio = killed["jobs_per_minute"] / base["jobs_per_minute"]
    rows = [
        [label, r["kills"], r["jobs"], r["completed"], r["pages"], r["seconds"], r["jobs_per_minute"]]
        for label, r in runs.items()
    ]
    print_figures(
        f"torture: {jobs} scanned PDFs ({pages} pages on average), engine tesseract, 2 workers, one run each",
        ["run", "kills", "jobs", "completed", "pages", "seconds", "jobs/min"],
        rows,
    )
    lost = any(r["completed"] != jobs or r["distinct_inputs"] != jobs for r in runs.values())
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(
        f"kill -9 every {args.every:g} s: {ratio:.0%} of undisturbed throughput"
        f" ({verdict} the {TARGET_RATIO:.0%} target)"
    )
    if lost:
        print("WARNING: not every input ended in exactly one completed job")
    return bench.finish(
        {
            "settings": {"jobs": jobs, "pages_avg": pages, "seed": args.seed, "quick": args.quick, "config": config},
            "runs": runs,
            "ratio": round(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "all_completed_once": not lost,
        }
    )


if __name__ == "__main__":
    raise SystemExit(main())
