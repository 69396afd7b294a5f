"""Shared helpers for the benchmarks: a daemon subprocess, waiting on the outbox, /proc figures, stats,
and `Bench`, the command line and output every benchmark's main() shares.

Benchmarks print figures; they assert nothing about time. Each one writes its figures as JSON to
bench/results/<name>.json (git-ignored), or to the path given with --json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.daemon import Daemon as TestDaemon  # noqa: E402  (one harness for tests and benchmarks)
from tests.daemon import merge  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = {"completed", "failed", "cancelled"}
# Never let retention touch a benchmark's outbox (the defaults keep only 1000 jobs).
NO_RETENTION = {"max_job_storage_mb": 10**9, "max_job_count": 10**9, "max_job_age_hours": 10**6}
T = TypeVar("T")


# -- statistics -------------------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def medians(runs: list[dict[str, Any]], skip: Iterable[str] = ()) -> dict[str, float]:
    """Field -> median over `runs` for every numeric field of the first run (lists, strings and `skip`
    left out), in the first run's order: the summary of a benchmark's repetitions."""
    left_out = set(skip)
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k not in left_out]
    return {key: median(r[key] for r in runs) for key in keys}


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank-with-interpolation percentile (p in 0..100), like numpy's default."""
    data = sorted(values)
    if not data:
        return math.nan
    k = (len(data) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def parse_iso(text: str) -> float:
    """metadata.json's ISO 8601 UTC ('...Z') -> Unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- temporary folders ------------------------------------------------------------------------------
@contextmanager
def temp_root(prefix: str) -> Iterator[Path]:
    # $OCRW_BENCH_DIR: measure on another filesystem than /tmp's (bench/overhead.py says why)
    root = Path(tempfile.mkdtemp(prefix=f"ocrw-bench-{prefix}-", dir=os.environ.get("OCRW_BENCH_DIR", "/tmp")))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- /proc ------------------------------------------------------------------------------------------
def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime+stime, cutime+cstime) of one process, in seconds (all its threads; reaped children)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # After the ")" field 3 (state) is index 0, so utime (14) is index 11.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            out.extend(kids)
            stack.extend(kids)
    return out


def thread_cpu_seconds(pid: int, tid: int) -> float:
    with open(f"/proc/{pid}/task/{tid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of the daemon: its main process (all threads), its main thread alone (the loop that
    owns every job state change), and its children (live render workers plus reaped tesseracts)."""
    main, reaped = proc_cpu_seconds(pid)
    live = 0.0
    for child in descendants(pid):
        try:
            live += proc_cpu_seconds(child)[0]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return {"main": main, "main_thread": thread_cpu_seconds(pid, pid), "children": reaped + live}


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat), to see foreign load."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... from /proc/<pid>/status, in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.startswith("Vm") or key == "Threads":
                out[key] = int(value.split()[0])
    return out


# -- the daemon -------------------------------------------------------------------------------------
def bench_defaults(inbox: Path, outbox: Path, worker_id: str) -> dict[str, Any]:
    """Settings every benchmark daemon gets: its folders, no retention, no fixed HTTP port (several
    daemons run at once, here and in other people's tests). Sections this build lacks are left out."""
    from ocr_watcher.config import Config

    base: dict[str, Any] = {"inbox": str(inbox), "outbox": str(outbox), "worker_id": worker_id, "log_level": "info"}
    if "retention" in Config.model_fields:
        base["retention"] = NO_RETENTION
    if "http" in Config.model_fields:
        base["http"] = {"port": 0}
    return base


class Daemon(TestDaemon):
    """The test suite's daemon harness (tests/daemon.py) with the benchmarks' settings instead of the
    tests' fast ones: `bench_defaults` under `config`."""

    base_config: dict[str, Any] = {}

    def __init__(self, root: Path, config: dict[str, Any], name: str = "bench") -> None:
        outbox = Path(config["outbox"]) if "outbox" in config else root / "outbox"
        tree = merge(bench_defaults(root / "inbox", outbox, name), config)
        for folder in ("inbox", "outbox"):  # given as paths below
            tree.pop(folder)
        super().__init__(root, name, inbox=root / "inbox", outbox=outbox, **tree)

    def start(self, timeout: float = 120) -> Daemon:
        return super().start(timeout)  # type: ignore[return-value]


@contextmanager
def running(root: Path, config: dict[str, Any], name: str = "bench") -> Iterator[Daemon]:
    """A started daemon, always stopped (SIGTERM) on the way out."""
    daemon = Daemon(root, config, name)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


# -- the outbox -------------------------------------------------------------------------------------
def read_meta(job_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((job_dir / "metadata.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def wait_for_jobs(
    outbox: Path,
    count: int,
    *,
    timeout: float,
    daemon: Daemon | None = None,
    interval: float = 0.2,
    ignore: set[str] | frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """Poll metadata.json files until `count` jobs are terminal; {job_id: metadata}.

    Terminal jobs are read once and then left alone, so a poll costs one scandir plus the few jobs
    still in flight (the benchmark shares the machine with the daemon). Raises TimeoutError with the
    partial result attached as `.partial`.
    """
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        with os.scandir(outbox) as entries:
            names = [e.name for e in entries if not e.name.startswith(".") and e.name not in done]
        for name in names:
            if name in ignore:
                continue
            meta = read_meta(outbox / name)
            if meta is not None and meta.get("status") in TERMINAL:
                done[name] = meta
        if len(done) >= count:
            return done
        if daemon is not None:
            daemon.check_alive()
        if time.monotonic() > deadline:
            err = TimeoutError(f"{len(done)} of {count} jobs finished within {timeout:.0f} s")
            err.partial = done  # type: ignore[attr-defined]
            raise err
        time.sleep(interval)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`--set jobs.fsync=false` (repeatable) -> {"jobs": {"fsync": False}}: diagnostic variants."""
    tree: dict[str, Any] = {}
    for item in items or []:
        key, _, raw = item.partition("=")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return tree


class Meter:
    """CPU use over a window: the daemon (main process, main thread, children), this benchmark
    process, and everything else on the machine (other people's work makes figures noisy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.wall = time.monotonic()
        self.daemon = tree_cpu_seconds(pid)
        self.machine = machine_busy_seconds()
        self.me = self_cpu_seconds()

    def read(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall
        daemon = tree_cpu_seconds(self.pid)
        used = {key: daemon[key] - self.daemon[key] for key in daemon}
        machine = machine_busy_seconds() - self.machine
        me = self_cpu_seconds() - self.me
        foreign = max(0.0, machine - used["main"] - used["children"] - me)
        return {
            "wall_s": wall,
            "cpu_main_s": used["main"],
            "cpu_main_thread_s": used["main_thread"],
            "cpu_children_s": used["children"],
            "cpu_bench_s": me,
            "main_thread_busy": used["main_thread"] / wall if wall else math.nan,
            "foreign_cores": foreign / wall if wall else math.nan,
        }


# -- finished jobs, made fast ---------------------------------------------------------------------
def _json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()  # as atomic_write_json writes


def make_completed_job(root: Path, config: dict[str, Any]) -> Path:
    """One real completed job, made by a daemon with `config` from a one-page text PDF; its folder
    (the template of `build_outbox`)."""
    from tests.pdfgen import sample_lines, text_pdf

    daemon = Daemon(root, config, name="template")
    try:
        daemon.start()
        source = text_pdf(root / "template.pdf", [sample_lines(8, seed=0)])
        os.rename(source, daemon.inbox / source.name)
        (job_id,) = wait_for_jobs(daemon.outbox, 1, timeout=120, daemon=daemon, interval=0.1)
    finally:
        daemon.stop()
    job = daemon.outbox / job_id
    meta = json.loads((job / "metadata.json").read_text())
    if meta["status"] != "completed":
        raise RuntimeError(f"the template job did not complete: {meta.get('error')}")
    return job


def build_outbox(template: Path, outbox: Path, count: int, worker_id: str) -> list[str]:
    """`count` completed job folders shaped like `template` (metadata.json as the daemon writes it,
    pages/0001.md + .json, result.md, result_metadata.json), each with its own id, a distinct
    input.pdf and its own times; their job ids."""
    from ocr_watcher.spool.ids import new_job_id
    from ocr_watcher.spool.model import iso
    from tests.pdfgen import sample_lines, text_pdf

    meta0 = json.loads((template / "metadata.json").read_text())
    result0 = json.loads((template / "result_metadata.json").read_text())
    page_md = (template / "pages" / "0001.md").read_bytes()
    page_info = (template / "pages" / "0001.json").read_bytes()
    result_md = (template / "result.md").read_bytes()
    took = {
        key: datetime.fromisoformat(meta0[key].replace("Z", "+00:00"))
        - datetime.fromisoformat(meta0["created_at"].replace("Z", "+00:00"))
        for key in ("started_at", "finished_at")
    }
    now = datetime.now(timezone.utc)
    job_ids = []
    for i in range(count):
        name = f"done{i:05d}.pdf"
        created = now - timedelta(seconds=30 * (count - i) + 60)
        job_id = new_job_id(name, created)
        folder = outbox / job_id
        (folder / "pages").mkdir(parents=True)
        pdf = text_pdf(folder / "input.pdf", [sample_lines(8, seed=1_000_000 + i)])
        data = pdf.read_bytes()
        source = {"name": name, "inbox_path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        started, finished = created + took["started_at"], created + took["finished_at"]
        meta = dict(meta0, job_id=job_id, source=source)
        meta.update(
            created_at=created.isoformat().replace("+00:00", "Z"),
            started_at=iso(started),
            finished_at=iso(finished),
            updated_at=iso(finished),
        )
        meta["worker"] = dict(meta0["worker"], id=worker_id, heartbeat_at=iso(finished))
        meta["history"] = [
            {"status": "queued", "at": iso(created)},
            {"status": "processing", "at": iso(started)},
            {"status": "completed", "at": iso(finished)},
        ]
        result = dict(result0, job_id=job_id, source=source)
        result.update(created_at=iso(created), started_at=iso(started), finished_at=iso(finished))
        (folder / "pages" / "0001.md").write_bytes(page_md)
        (folder / "pages" / "0001.json").write_bytes(page_info)
        (folder / "result_metadata.json").write_bytes(_json_bytes(result))
        (folder / "result.md").write_bytes(result_md)
        (folder / "metadata.json").write_bytes(_json_bytes(meta))
        job_ids.append(job_id)
    return job_ids


# -- inputs -----------------------------------------------------------------------------------------
def make_text_pdfs(folder: Path, count: int, prefix: str = "doc") -> list[Path]:
    """`count` distinct one-page born-digital PDFs (different text, so different sha256)."""
    from tests.pdfgen import sample_lines, text_pdf

    folder.mkdir(parents=True, exist_ok=True)
    return [text_pdf(folder / f"{prefix}{i:05d}.pdf", [sample_lines(8, seed=i)]) for i in range(count)]


def drop_all(sources: list[Path], inbox: Path) -> dict[str, float]:
    """Rename every source into the inbox as fast as possible; {name: drop time (Unix seconds)}."""
    dropped: dict[str, float] = {}
    for source in sources:
        os.rename(source, inbox / source.name)
        dropped[source.name] = time.time()
    return dropped


# -- output -----------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_end": os.getloadavg(),
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def write_results(name: str, data: dict[str, Any], path: Path | None = None) -> Path:
    """The figures as JSON, with the benchmark's name and the machine: bench/results/<name>.json unless
    `path` is given."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "machine": machine_info(), **data}, indent=2) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def print_figures(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    """A benchmark's figures: a blank line, what was measured, then the table."""
    print()
    print(title)
    print(table(headers, rows))


def repeat(
    count: int, one: Callable[[int], T], line: Callable[[T], str], *, label: str = "", stream: TextIO | None = None
) -> list[T]:
    """`one(index)` for each of `count` runs, printing `  <label>run i/count: <line(result)>` after each
    (to stdout unless `stream`), so that a long benchmark shows its progress."""
    results: list[T] = []
    for index in range(count):
        results.append(one(index))
        print(f"  {label}run {index + 1}/{count}: {line(results[-1])}", file=stream, flush=True)
    return results


# -- the command line -----------------------------------------------------------------------------
class Bench:
    """One benchmark's command line and result file, so that its main() holds only what it measures.

    Every benchmark gets --json PATH (where its figures go; default bench/results/<name>.json); one
    with a quick mode gets --quick, and its size flags (`sized`) take their full or quick default when
    not given; one that takes diagnostic config variants gets --set KEY=VALUE (parsed into args.extra).
    """

    def __init__(
        self, name: str, doc: str, *, quick: str | None = None, sets: bool = False, whole_doc: bool = False
    ) -> None:
        self.name = name
        if whole_doc:  # the whole module docstring, laid out as written
            self.parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        else:
            self.parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
        self.has_quick = quick is not None
        if quick is not None:
            self.parser.add_argument("--quick", action="store_true", help=quick)
        self.sets = sets
        self._sized: dict[str, tuple[float, float]] = {}
        self.args = argparse.Namespace()

    def add(self, *flags: str, **options: Any) -> argparse.Action:
        """parser.add_argument, for the benchmark's own flags."""
        return self.parser.add_argument(*flags, **options)

    def sized(self, flag: str, kind: type, full: float, quick: float, help: str) -> None:
        """A size flag whose default depends on --quick: `help (default FULL; quick QUICK)`."""
        assert self.has_quick, "a sized flag needs a quick mode"
        action = self.parser.add_argument(flag, type=kind, help=f"{help} (default {full:,g}; quick {quick:,g})")
        self._sized[action.dest] = (full, quick)

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        # The shared flags come last, after the benchmark's own (where --set always stood in --help).
        if self.sets:
            self.add("--set", action="append", metavar="KEY=VALUE", help="extra config, e.g. jobs.fsync=false")
        self.add("--json", type=Path, metavar="PATH", help=f"figures file (default bench/results/{self.name}.json)")
        args = self.parser.parse_args(argv)
        for dest, (full, quick) in self._sized.items():
            if not getattr(args, dest):  # not given (or 0, as the benchmarks always read it): the mode's size
                setattr(args, dest, quick if args.quick else full)
        if self.sets:
            args.extra = parse_sets(args.set)
        self.args = args
        return args

    def finish(self, data: dict[str, Any]) -> int:
        """Write the figures (bench/results/<name>.json or --json), say where; main()'s exit status."""
        path = write_results(self.name, data, self.args.json)
        print(f"figures: {path}")
        return 0
