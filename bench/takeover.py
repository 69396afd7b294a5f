"""Lease takeover latency: how long a dead daemon's job waits before another daemon carries it on.

Each run starts a fresh `victim` daemon that claims a long born-digital PDF (engine text, so a page
costs milliseconds and the figure is the takeover, not OCR), kills it with SIGKILL a random moment
after a few pages, and times until the `standby` daemon (running throughout, on the same outbox,
with an inbox of its own so it never claims the file) has:

- taken the lease (`.lease-2` created: the takeover itself),
- finished the job's next page (the page json's `finished_at`, written by `standby`).

Both are printed against the configured lease, and against the moment the lease really expired
(the victim's last heartbeat + lease). The job is then cancelled, so that the next run starts quiet.

    .venv/bin/python bench/takeover.py [--runs 7] [--lease 3] [--scan-interval 0.5] [--pages 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _common import Bench, Daemon, medians, parse_iso, percentile, print_figures, read_meta, repeat, temp_root


def _lease_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "engine": "text",
        "intake": {"settle_seconds": 0.3, "poll_interval_seconds": 0.2},
        "pipeline": {"workers": 1},
        "jobs": {"heartbeat_lease_seconds": args.lease, "outbox_scan_interval_seconds": args.scan_interval},
    }


def _wait(predicate, timeout: float, what: str, *daemons: Daemon) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for daemon in daemons:
            daemon.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)


def _only_job(outbox: Path) -> Path | None:
    names = [n for n in os.listdir(outbox) if not n.startswith(".")]
    return outbox / names[0] if len(names) == 1 else None


def _pages_by(job_dir: Path, worker: str) -> list[dict[str, Any]]:
    infos = []
    for path in (job_dir / "pages").glob("*.json"):
        try:
            info = json.loads(path.read_bytes())
        except ValueError:
            continue  # never partial (atomic writes); kept for safety
        if info.get("worker") == worker:
            infos.append(info)
    return infos


def one_run(root: Path, index: int, source: Path, standby: Daemon, args: argparse.Namespace) -> dict[str, float]:
    """Kill a fresh victim mid-job; seconds from the kill to the takeover and to the next page."""
    outbox = root / "outbox"
    for leftover in [n for n in os.listdir(outbox) if not n.startswith(".")]:
        (outbox / leftover).rename(root / f"done-{leftover}")  # keep the outbox to this run's job
    victim = Daemon(root, _lease_config(args) | {"outbox": str(outbox)}, name=f"victim{index}")
    victim.start()
    os.link(source, root / "inbox" / ".incoming.pdf")
    os.rename(root / "inbox" / ".incoming.pdf", root / "inbox" / "long.pdf")
    job_dir = _wait(lambda: _only_job(outbox), 30, "job", victim)
    _wait(lambda: len(_pages_by(job_dir, victim.config["worker_id"])) >= 20, 60, "pages by the victim", victim)
    time.sleep(random.uniform(0, args.lease / 4))  # any phase of the heartbeat interval
    victim.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    killed_at = time.time()
    victim.proc.wait()  # type: ignore[union-attr]
    beat = json.loads((outbox / ".ocr-watcher" / "workers" / f"{victim.config['worker_id']}.json").read_bytes())
    meta = read_meta(job_dir) or {}
    last_alive = max(parse_iso(beat["heartbeat_at"]), parse_iso(meta["worker"]["heartbeat_at"]))
    lease_file = job_dir / ".lease-2"
    _wait(lease_file.exists, 10 * args.lease + 30, "takeover", standby)
    taken_at = lease_file.stat().st_mtime
    first = _wait(lambda: _pages_by(job_dir, "standby"), 60, "page by standby", standby)
    next_page_at = min(parse_iso(info["finished_at"]) for info in first)
    (job_dir / "CANCEL").touch()
    _wait(lambda: (read_meta(job_dir) or {}).get("status") == "cancelled", 60, "cancel", standby)
    return {
        "kill_to_takeover_s": taken_at - killed_at,
        "kill_to_next_page_s": next_page_at - killed_at,
        "expiry_to_takeover_s": taken_at - (last_alive + args.lease),
        "last_beat_to_kill_s": killed_at - last_alive,
        "pages_done_by_victim": float(len(_pages_by(job_dir, victim.config["worker_id"]))),
    }


def main() -> int:
    bench = Bench("takeover", __doc__, whole_doc=True)
    bench.add("--runs", type=int, default=7, help="kills to time (at least 5 for a median)")
    bench.add("--lease", type=float, default=3.0, help="jobs.heartbeat_lease_seconds")
    bench.add("--scan-interval", type=float, default=0.5, help="jobs.outbox_scan_interval_seconds")
    bench.add("--pages", type=int, default=3000, help="pages of the job killed mid-way")
    args = bench.parse()
    from tests.pdfgen import text_pdf

    with temp_root("takeover") as root:
        source = text_pdf(root / "long.pdf", [[f"Page {n} of a long document"] for n in range(1, args.pages + 1)])
        outbox = root / "outbox"
        outbox.mkdir()
        standby = Daemon(root / "standby", _lease_config(args) | {"outbox": str(outbox)}, name="standby")
        with standby:
            rows = repeat(
                args.runs,
                lambda index: one_run(root, index, source, standby, args),
                lambda row: (
                    f"takeover {row['kill_to_takeover_s']:.2f} s, next page "
                    f"{row['kill_to_next_page_s']:.2f} s after the kill"
                ),
                stream=sys.stderr,  # progress only: stdout keeps the figures
            )
    med = medians(rows)
    summary = {key: {"median": med[key], "p90": percentile((r[key] for r in rows), 90)} for key in med}
    print_figures(
        f"lease {args.lease:g} s, outbox scan every {args.scan_interval:g} s, {args.runs} kills",
        ["figure", "median s", "p90 s"],
        [[k, summary[k]["median"], summary[k]["p90"]] for k in summary],
    )
    print(
        f"median kill -> next page by another daemon: {summary['kill_to_next_page_s']['median']:.2f} s "
        f"(configured lease {args.lease:g} s)"
    )
    return bench.finish(
        {
            "config": {"lease_s": args.lease, "outbox_scan_interval_s": args.scan_interval, "pages": args.pages},
            "runs": rows,
            "summary": summary,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
