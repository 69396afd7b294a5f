"""The daemon with many finished jobs: start-up, memory, first and later API answers, idle CPU.

    .venv/bin/python bench/scale.py [--quick] [--done 10000,100000] [--runs 3] [--window 60]
        [--failed 0.05] [--components]

1. A real completed job is made first (daemon, engine tesseract, one file); its folder is the template.
2. N finished job folders are planted from it (metadata.json as the daemon writes it, input.pdf,
   pages/0001.md + .json, result.md, result_metadata.json; a share `--failed` of them failed, with an
   error and no result). Sizes are planted in increasing order into one outbox, each adding to the
   last, so 10,000 then 100,000 plants 100,000 folders in all (about 1 GB of disk; removed at the end).
3. Each run starts a fresh daemon on that outbox (engine tesseract, 2 workers, retention limits
   that delete nothing, so its passes still run, default intervals: outbox scan every 5 s, retention
   every 60 s) and measures, in order:
   - spawn -> /readyz answers 200 (what systemd and a load balancer wait for);
   - VmRSS of the main process at ready, and once it has gone quiet (main-process CPU under 5 % of a
     core for 2 s running: the start-up work in background threads, such as retention's first pass,
     is over), with the time from ready to quiet;
   - the first GET /health and GET /jobs?limit=50 after that (the job API's listing index is built
     on first use or in the background), VmRSS after them, and the median of 5 later ones;
   - the daemon's CPU over a `--window` with nothing to do (the periodic outbox scans, retention
     passes, heartbeats): main-process CPU seconds per minute, and VmRSS at the end.
   Figures are medians over the runs. Other processes' load is printed ("other cores"): the machine
   has 2 cores, shared.
4. With --components, the parts are also timed in this process on the same folders, in the daemon's
   order on one job store: reading every job's metadata.json as the start-up outbox scan does
   (JobStore.load_unless_completed, or try_load in builds without it), the listing index's first
   refresh and page, retention's first inventory, each again once warm, and the memory kept after
   each (tracemalloc, in a second round).

Target (product brief): thousands of files waiting or a hundred thousand finished jobs must not make
the daemon slow or large.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Bench,
    Daemon,
    Meter,
    make_completed_job,
    median,
    medians,
    print_figures,
    proc_status,
    temp_root,
)

NAME = "scale"
QUIET_SHARE = 0.05  # of one core: the daemon counts as settled below this
QUIET_STEP = 1.0
QUIET_STEPS = 2
QUIET_LIMIT = 600.0
LATER_REQUESTS = 5


def config() -> dict:
    return {"engine": "tesseract", "pipeline": {"workers": 2}}


# -- planting finished jobs ---------------------------------------------------------------------------
def _json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()  # as atomic_write_json writes


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Planter:
    """Plants finished job folders shaped like a real one, fast: the same input, page and result
    bytes in each (the daemon never reads them for a finished job), distinct ids, times and metadata."""

    def __init__(self, template: Path, outbox: Path, failed_share: float) -> None:
        self.outbox = outbox
        self.failed_every = round(1 / failed_share) if failed_share > 0 else 0
        self.meta0 = json.loads((template / "metadata.json").read_text())
        self.result0 = json.loads((template / "result_metadata.json").read_text())
        self.input_name = self.meta0["input_file"]
        self.input = (template / self.input_name).read_bytes()
        self.page_md = (template / "pages" / "0001.md").read_bytes()
        self.page_info = (template / "pages" / "0001.json").read_bytes()
        self.result_md = (template / "result.md").read_bytes()
        self.planted = 0
        self.failed = 0
        self.now = datetime.now(timezone.utc)

    def plant(self, count: int) -> None:
        """Until `count` jobs are planted in all; newer jobs get later times (the newest a minute ago)."""
        from ocr_watcher.spool.ids import new_job_id

        for i in range(self.planted, count):
            created = self.now - timedelta(seconds=10 * (10**6 - i) + 60)
            name = f"done{i:06d}.pdf"
            job_id = new_job_id(name, created)
            folder = self.outbox / job_id
            (folder / "pages").mkdir(parents=True)
            started, finished = created + timedelta(seconds=1), created + timedelta(seconds=3)
            failed = self.failed_every and i % self.failed_every == self.failed_every - 1
            source = dict(self.meta0["source"], name=name, inbox_path=name)
            meta = dict(self.meta0, job_id=job_id, source=source)
            meta.update(
                created_at=_iso(created),
                started_at=_iso(started),
                finished_at=_iso(finished),
                updated_at=_iso(finished),
            )
            meta["worker"] = dict(self.meta0["worker"], heartbeat_at=_iso(finished))
            end = "failed" if failed else "completed"
            meta["history"] = [
                {"status": "queued", "at": _iso(created)},
                {"status": "processing", "at": _iso(started)},
                {"status": end, "at": _iso(finished)},
            ]
            (folder / self.input_name).write_bytes(self.input)
            (folder / "pages" / "0001.json").write_bytes(self.page_info)
            (folder / "pages" / "0001.md").write_bytes(self.page_md)
            if failed:
                meta.update(status="failed", error={"type": "engine", "message": "planted failure"})
                self.failed += 1
            else:
                result = dict(self.result0, job_id=job_id, source=source)
                (folder / "result_metadata.json").write_bytes(_json_bytes(result))
                (folder / "result.md").write_bytes(self.result_md)
            (folder / "metadata.json").write_bytes(_json_bytes(meta))
        self.planted = max(self.planted, count)


# -- one daemon run ----------------------------------------------------------------------------------
def _get(url: str, timeout: float = 600) -> tuple[int, float, bytes]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, time.perf_counter() - started, body


def _rss_mb(pid: int) -> float:
    return proc_status(pid)["VmRSS"] / 1024


def wait_ready(daemon: Daemon, timeout: float = 900) -> float:
    """Seconds from spawn to /readyz 200."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        daemon.check_alive()
        if url is None:
            found = [line for line in daemon.log_since_launch().splitlines() if "metrics on http" in line]
            if found:
                url = found[-1].split("metrics on ", 1)[1].split("/metrics")[0]
        if url is not None:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        return time.time() - daemon.spawned_at
            except (urllib.error.URLError, ConnectionError):
                pass
        time.sleep(0.02)
    raise TimeoutError(f"not ready within {timeout:.0f} s:\n{daemon.log()[-3000:]}")


def wait_quiet(daemon: Daemon) -> float:
    """Seconds until the main process has used under QUIET_SHARE of a core for QUIET_STEPS steps."""
    started = time.monotonic()
    calm = 0
    while time.monotonic() - started < QUIET_LIMIT:
        meter = Meter(daemon.pid)
        time.sleep(QUIET_STEP)
        got = meter.read()
        calm = calm + 1 if got["cpu_main_s"] / got["wall_s"] < QUIET_SHARE else 0
        if calm >= QUIET_STEPS:
            return time.monotonic() - started - QUIET_STEPS * QUIET_STEP
    return float("nan")


def one_run(root: Path, outbox: Path, index: int, window: float, expected: int) -> dict[str, Any]:
    daemon = Daemon(root / f"run{index}", dict(config(), outbox=str(outbox)), name="scale")
    try:
        daemon.launch()
        ready_s = wait_ready(daemon)
        url = daemon.http_url
        rss_ready = _rss_mb(daemon.pid)
        quiet_s = wait_quiet(daemon)
        rss_quiet = _rss_mb(daemon.pid)
        status, health_first, body = _get(url + "/health")
        counts = json.loads(body)["jobs"] if status == 200 else {}
        status_jobs, jobs_first, body = _get(url + "/jobs?limit=50")
        listed = json.loads(body) if status_jobs == 200 else {}
        if sum(counts.values()) != expected or listed.get("total") != expected or len(listed["jobs"]) != 50:
            raise AssertionError(f"the API does not see {expected} jobs: {counts}, total {listed.get('total')}")
        rss_asked = _rss_mb(daemon.pid)
        later_jobs, later_health = [], []
        for _ in range(LATER_REQUESTS):
            time.sleep(1.1)  # past the index's refresh interval: each request refreshes it
            later_jobs.append(_get(url + "/jobs?limit=50")[1])
            later_health.append(_get(url + "/health")[1])
        meter = Meter(daemon.pid)
        time.sleep(window)
        idle = meter.read()
        rss_end = _rss_mb(daemon.pid)
        hwm = proc_status(daemon.pid)["VmHWM"] / 1024
    finally:
        daemon.stop(timeout=120)
    return {
        "ready_s": ready_s,
        "rss_ready_mb": rss_ready,
        "quiet_after_ready_s": quiet_s,
        "rss_quiet_mb": rss_quiet,
        "health_first_s": health_first,
        "jobs_first_s": jobs_first,
        "rss_after_api_mb": rss_asked,
        "jobs_later_s": median(later_jobs),
        "health_later_s": median(later_health),
        "idle_cpu_s_per_min": 60 * idle["cpu_main_s"] / idle["wall_s"],
        "idle_main_thread_cpu_s_per_min": 60 * idle["cpu_main_thread_s"] / idle["wall_s"],
        "rss_end_mb": rss_end,
        "hwm_mb": hwm,
        "other_cores": idle["foreign_cores"],
    }


def _line(r: dict[str, Any]) -> str:
    return (
        f"ready {r['ready_s']:.2f} s, quiet +{r['quiet_after_ready_s']:.1f} s, RSS {r['rss_quiet_mb']:.1f} -> "
        f"{r['rss_after_api_mb']:.1f} MB, first /health {1000 * r['health_first_s']:.0f} ms, first /jobs "
        f"{1000 * r['jobs_first_s']:.0f} ms, idle CPU {r['idle_cpu_s_per_min']:.2f} s/min"
    )


# -- the parts, in this process ---------------------------------------------------------------------
def components(outbox: Path) -> dict[str, float]:
    """Time and memory of each part that walks the finished jobs, run here on the same folders and in
    the daemon's order, on one job store: the start-up outbox scan's read of every job, the listing
    index's first refresh and page, and retention's first inventory; then each again, warm. Memory is
    what tracemalloc sees kept after each step, in a second round (tracemalloc slows the steps)."""
    from ocr_watcher.api.index import JobIndex
    from ocr_watcher.retention.sweeper import Retention
    from ocr_watcher.spool.store import JobStore

    def read_all(store: JobStore) -> None:
        # What the start-up scan reads: the whole model, or only what a completed job needs.
        read = getattr(store, "load_unless_completed", store.try_load)
        for job_id in store.iter_job_ids():
            read(job_id)

    def listing(index: JobIndex) -> None:
        index.page(set(), 0, 50) if hasattr(index, "page") else index.newest_first()

    def inventory(retention: Retention) -> None:
        getattr(retention, "_census", retention.inventory)()

    def one_round(traced: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        gc.collect()
        if traced:
            tracemalloc.start()
        store = JobStore(outbox, fsync=False)
        index = JobIndex(store, ttl=0)  # every call refreshes
        retention = Retention(store)
        steps = [
            ("startup_read", lambda: read_all(store)),
            ("index", lambda: listing(index)),
            ("retention", lambda: inventory(retention)),
        ]
        for name, step in steps:
            started = time.perf_counter()
            step()
            if traced:
                gc.collect()
                out[f"{name}_kept_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
            else:
                out[f"{name}_first_s"] = time.perf_counter() - started
        if traced:
            tracemalloc.stop()
            return out
        for name, step in steps[1:]:
            started = time.perf_counter()
            step()
            out[f"{name}_again_s"] = time.perf_counter() - started
        return out

    return {**one_round(False), **one_round(True)}


# -- main --------------------------------------------------------------------------------------------
def main() -> int:
    bench = Bench(NAME, __doc__, quick="2,000 jobs, 1 run, a 15 s window")
    bench.add("--done", type=str, help="finished jobs, comma-separated sizes (default 10000,100000; quick 2000)")
    bench.sized("--runs", int, 3, 1, "daemon runs per size")
    bench.sized("--window", float, 60, 15, "seconds of idle CPU measured per run")
    bench.add("--failed", type=float, default=0.05, help="share of the planted jobs that failed (default 0.05)")
    bench.add("--components", action="store_true", help="also time the parts in this process")
    args = bench.parse()
    sizes = sorted(int(s) for s in (args.done or ("2000" if args.quick else "10000,100000")).split(","))

    figures: dict[str, Any] = {"quick": args.quick, "runs": args.runs, "window_s": args.window, "sizes": {}}
    with temp_root(NAME) as root:
        print("making a template job ...", flush=True)
        template = make_completed_job(root / "template", config())
        outbox = root / "outbox"
        outbox.mkdir()
        planter = Planter(template, outbox, args.failed)
        for size in sizes:
            print(f"planting {size - planter.planted:,} finished jobs (to {size:,}) ...", flush=True)
            started = time.monotonic()
            planter.plant(size)
            plant_s = time.monotonic() - started
            print(f"  ({plant_s:.1f} s; {planter.failed:,} of them failed)", flush=True)
            runs = []
            for i in range(args.runs):
                runs.append(one_run(root, outbox, i, args.window, size))
                print(f"  {size:,} jobs, run {i + 1}/{args.runs}: {_line(runs[-1])}", flush=True)
            entry: dict[str, Any] = {"plant_s": plant_s, "failed": planter.failed, "runs": runs, **medians(runs)}
            if args.components:
                print("  timing the parts in this process ...", flush=True)
                entry["components"] = components(outbox)
            figures["sizes"][str(size)] = entry
        print("removing the planted jobs ...", flush=True)

    rows = []
    for size, e in figures["sizes"].items():
        rows.append(
            [
                f"{int(size):,}",
                e["ready_s"],
                e["rss_ready_mb"],
                e["quiet_after_ready_s"],
                e["rss_quiet_mb"],
                1000 * e["health_first_s"],
                1000 * e["jobs_first_s"],
                e["rss_after_api_mb"],
                1000 * e["jobs_later_s"],
                1000 * e["health_later_s"],
                e["idle_cpu_s_per_min"],
                e["rss_end_mb"],
            ]
        )
    print_figures(
        f"finished jobs: the daemon's main process, medians of {args.runs} run(s); {args.failed:.0%} of jobs failed",
        [
            "jobs",
            "ready s",
            "RSS@ready",
            "quiet +s",
            "RSS quiet",
            "1st /health ms",
            "1st /jobs ms",
            "RSS after",
            "/jobs ms",
            "/health ms",
            "idle CPU s/min",
            "RSS end",
        ],
        rows,
    )
    for size, e in figures["sizes"].items():
        c = e.get("components")
        if c:
            print(
                f"{int(size):,} jobs, in this process: start-up read {c['startup_read_first_s']:.2f} s "
                f"({c['startup_read_kept_mb']:.1f} MB kept); index first {c['index_first_s']:.2f} s "
                f"({c['index_kept_mb']:.1f} MB kept in all), again {1000 * c['index_again_s']:.0f} ms; retention first "
                f"{c['retention_first_s']:.2f} s ({c['retention_kept_mb']:.1f} MB kept in all), again "
                f"{1000 * c['retention_again_s']:.0f} ms"
            )
    return bench.finish(figures)


if __name__ == "__main__":
    sys.exit(main())
