"""`ocr-watcher jobs` on an outbox of many finished jobs: the newest 50 (the default) against every job
(`--limit 0`, which reads every metadata.json as the command did before it had a limit).

    .venv/bin/python bench/cli_jobs.py [--quick] [--done 10000] [--runs 5]

A real completed job is made first (daemon, engine text) and copied into `--done` finished job folders
(bench/_common.py build_outbox). Each run is one `ocr-watcher jobs` process, from spawn to exit (Python's
start-up and imports included, as a user sees it); figures are medians of `--runs`, with the ratio of
the two in the same run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Bench, build_outbox, make_completed_job, median, print_figures, temp_root  # noqa: E402

NAME = "cli_jobs"


def timed(config: Path, *args: str) -> tuple[float, int]:
    """Seconds from spawn to exit of `ocr-watcher jobs ARGS`, and the lines it printed."""
    command = [sys.executable, "-m", "ocr_watcher.cli", "jobs", "--config", str(config), *args]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=REPO, check=True)
    return time.monotonic() - started, len(done.stdout.splitlines())


def main() -> int:
    bench = Bench(NAME, __doc__, quick="2,000 jobs, 3 runs")
    bench.sized("--done", int, 10000, 2000, "finished jobs in the outbox")
    bench.sized("--runs", int, 5, 3, "runs of each command")
    args = bench.parse()
    with temp_root(NAME) as root:
        print("making a template job ...", flush=True)
        template = make_completed_job(root / "template", {"engine": "text"})
        outbox = root / "outbox"
        outbox.mkdir()
        print(f"planting {args.done:,} finished jobs ...", flush=True)
        build_outbox(template, outbox, args.done, "bench")
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump({"inbox": str(root / "inbox"), "outbox": str(outbox)}))
        newest, every = [], []
        for run in range(args.runs):
            newest.append(timed(config)[0])
            every.append(timed(config, "--limit", "0")[0])
            print(f"  run {run + 1}/{args.runs}: newest 50 {newest[-1]:.2f} s, all {every[-1]:.2f} s", flush=True)
    figures = {"jobs": args.done, "runs": args.runs, "newest_50_s": median(newest), "all_s": median(every)}
    figures["ratio"] = figures["all_s"] / figures["newest_50_s"]
    print_figures(
        f"`ocr-watcher jobs` with {args.done:,} finished jobs, spawn to exit, medians of {args.runs}",
        ["jobs", "newest 50 (default) s", "--limit 0 (all) s", "all / newest"],
        [[f"{args.done:,}", figures["newest_50_s"], figures["all_s"], figures["ratio"]]],
    )
    return bench.finish(figures)


if __name__ == "__main__":
    raise SystemExit(main())
