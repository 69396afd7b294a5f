"""The job API under load: GET /jobs/{id} with 10,000 jobs in the outbox, and uploads to POST /jobs/create.

    .venv/bin/python bench/api_load.py [--quick] [--runs 3] [--jobs 10000] [--seconds 10] [--pollers 50]
        [--uploads 100] [--upload-mb 5] [--skip-polling] [--skip-uploads] [--client raw|httpx|httpx-shared]

Polling. N completed job folders are built once (_common.build_outbox, from one real job of the
text engine). Each run starts a fresh daemon on that outbox (engine text, retention off, HTTP on a
free port), and a load generator in a separate process (its own GIL, so the client does not share
the server's) drives P concurrent keep-alive connections: 1 s of warm-up, then S seconds measured.
Two shapes:

- saturated: each connection sends its next request as soon as the answer is read (closed loop):
  the most requests/s the server gives, and its latency at that point;
- paced: each connection sends one request every 100 ms, at a random phase (P x 10 requests/s
  offered: what P clients polling ten times a second look like). The target, p99 < 20 ms, is
  judged on this shape.

Each shape runs against GET /jobs/{id} (a random one of the N ids per request) and, as the baseline
measured in the same run, against GET /healthz (a trivial route of the same server); the ratio of
requests/s jobs/healthz is printed. Latency = request written -> whole answer read, in the client.
The paced shape also gives it from the request's scheduled time, which adds the time a connection
fell behind its schedule (a slow answer delays that connection's next poll).

Uploads. One U-MiB PDF (a page holding an incompressible image, plus one line of text) is posted
U times to POST /jobs/create (multipart field `file`, a different file name each time) by 1 client,
then by 4 concurrent clients, against a fresh daemon (engine text, 1 pipeline worker). The jobs are
processed while the uploads go on (the text engine reads only the text layer: a few ms each) and
are waited for between the two shapes. Baseline in the same run: the same U files copied into a
folder on the same filesystem by `ocr-watcher submit`'s own code (ocr_watcher.cli.submit_file:
write, fsync, rename, fsync of the folder), 1 and 4 at a time. MB = MiB (2**20 bytes) of file.

The load generator speaks raw HTTP/1.1 on asyncio streams: about 0.25 ms of client CPU per request
against about 1 ms in the server (on a 2-core machine). httpx.AsyncClient measured itself instead:
about 2.2 ms of client CPU per request with one client per connection (--client httpx), 6.4 ms with
one shared pool (--client httpx-shared), and 100-170 requests/s at most, so it stays for comparison.
Figures are medians of R runs (errors: the total). The machine has 2 cores: other processes' load
(printed, "other load") disturbs the latencies, and a warning is printed when it is high.

Target: p99 < 20 ms for GET /jobs/{id}, paced shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import urlopen

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Bench,
    Daemon,
    build_outbox,
    machine_busy_seconds,
    make_completed_job,
    medians,
    merge,
    percentile,
    print_figures,
    read_meta,
    temp_root,
    tree_cpu_seconds,
    wait_for_jobs,
)

NAME = "api_load"
TARGET_P99_MS = 20.0
PACED_INTERVAL = 0.1  # each poller asks ten times a second
WARMUP = 1.0
REQUEST_TIMEOUT = 10.0
UPLOAD_TIMEOUT = 120.0
UPLOAD_CLIENTS = (1, 4)
MB = 2**20
RETENTION_OFF = {"max_job_count": 0, "max_job_storage_mb": 0, "max_job_age_hours": 0}
FAST_INTAKE = {"settle_seconds": 0.3, "poll_interval_seconds": 0.1}  # the template job (default settle: 10 s)
NOISY_CORES = 0.25  # other processes using more than this during a phase make its figures doubtful
SHAPES = ("saturated", "paced")
TARGETS = ("healthz", "job")  # the baseline first


def config(workers: int = 2) -> dict:
    return {"engine": "text", "retention": RETENTION_OFF, "http": {"port": 0}, "pipeline": {"workers": workers}}


# -- the load generator (a separate process) ----------------------------------------------------------
class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a request is written whole, the answer
    read by its Content-Length (every answer of this server has one). Barely any client work."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.host_header = f"Host: {host}:{port}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: bytes = b"", parts: tuple[bytes, ...] = ()) -> tuple:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = b"%s %s HTTP/1.1\r\n%s%s\r\n" % (method.encode(), path.encode(), self.host_header, headers)
        self.writer.write(head)
        for part in parts:
            self.writer.write(part)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        lower = header.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise ConnectionError(f"an answer without Content-Length: {header[:200]!r}")
        length = int(header[at + 17 : lower.index(b"\r\n", at + 2)])
        body = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


class HttpxConnection:
    """The same through an httpx.AsyncClient (its own, or one pool shared by all connections)."""

    def __init__(self, client: Any, base: str, owned: bool) -> None:
        self.client, self.base, self.owned = client, base, owned

    async def request(self, method: str, path: str, headers: bytes = b"", parts: tuple[bytes, ...] = ()) -> tuple:
        extra = dict(line.split(": ", 1) for line in headers.decode().split("\r\n") if line)
        response = await self.client.request(method, self.base + path, headers=extra, content=b"".join(parts) or None)
        return response.status_code, response.content

    async def close(self) -> None:
        pass  # the client keeps its connection; Clients.close closes them all


class Clients:
    """Connections of one kind: raw, httpx (an AsyncClient each) or httpx-shared (one pool for all)."""

    def __init__(self, kind: str, host: str, port: int, connections: int) -> None:
        self.kind, self.base = kind, f"http://{host}:{port}"
        self.host, self.port, self.connections = host, port, connections
        self.opened: list[Any] = []

    def connection(self) -> RawConnection | HttpxConnection:
        if self.kind == "raw":
            return RawConnection(self.host, self.port)
        import httpx

        if self.kind == "httpx-shared" and self.opened:
            return HttpxConnection(self.opened[0], self.base, False)
        size = self.connections if self.kind == "httpx-shared" else 1
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self.opened.append(httpx.AsyncClient(limits=limits, timeout=None))
        return HttpxConnection(self.opened[-1], self.base, True)

    async def close(self) -> None:
        for client in self.opened:
            await client.aclose()


def _stats_ms(seconds: list[float], prefix: str = "") -> dict[str, float]:
    ms = [1000 * s for s in seconds]
    return {
        f"{prefix}p50_ms": percentile(ms, 50),
        f"{prefix}p95_ms": percentile(ms, 95),
        f"{prefix}p99_ms": percentile(ms, 99),
        f"{prefix}max_ms": max(ms) if ms else float("nan"),
    }


async def _poll(spec: dict) -> dict:
    """P connections asking for spec's paths for warm-up + seconds; figures of the measured window."""
    paths: list[str] = spec["paths"]
    interval: float | None = spec["interval"]
    rng = random.Random(spec["seed"])
    clients = Clients(spec["client"], spec["host"], spec["port"], spec["pollers"])
    connections = [clients.connection() for _ in range(spec["pollers"])]
    for connection in connections:  # connect (and warm each) before the clock starts
        await connection.request("GET", paths[0])
    loop = asyncio.get_running_loop()
    start = loop.time()
    measured_from, end = start + spec["warmup"], start + spec["warmup"] + spec["seconds"]
    latencies: list[float] = []
    from_schedule: list[float] = []
    errors: list[str] = []
    window: dict[str, Any] = {}

    async def one(connection: RawConnection | HttpxConnection, scheduled: float) -> None:
        path = paths[rng.randrange(len(paths))]
        sent = loop.time()
        try:
            status, body = await asyncio.wait_for(connection.request("GET", path), REQUEST_TIMEOUT)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            if sent >= measured_from:
                errors.append(f"{type(exc).__name__}: {exc}")
            await connection.close()
            await asyncio.sleep(0.01)
            return
        done = loop.time()
        if sent >= measured_from and done <= end:
            if status != 200:
                errors.append(f"HTTP {status}: {body[:200]!r}")
            latencies.append(done - sent)
            from_schedule.append(done - scheduled)

    async def closed_loop(connection: RawConnection | HttpxConnection) -> None:
        while loop.time() < end:
            await one(connection, loop.time())

    async def paced(connection: RawConnection | HttpxConnection) -> None:
        assert interval is not None
        first = start + rng.uniform(0, interval)
        for k in range(int((end - first) / interval) + 1):
            scheduled = first + k * interval
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await one(connection, scheduled)

    async def meter() -> None:
        await asyncio.sleep(max(0.0, measured_from - loop.time()))
        window["start"] = (time.process_time(), tree_cpu_seconds(spec["daemon_pid"]), machine_busy_seconds())
        await asyncio.sleep(max(0.0, end - loop.time()))
        window["end"] = (time.process_time(), tree_cpu_seconds(spec["daemon_pid"]), machine_busy_seconds())

    poller = closed_loop if interval is None else paced
    await asyncio.gather(meter(), *(poller(c) for c in connections))
    for connection in connections:
        await connection.close()
    await clients.close()
    (me0, daemon0, busy0), (me1, daemon1, busy1) = window["start"], window["end"]
    seconds = spec["seconds"]
    server = daemon1["main"] - daemon0["main"]
    client = me1 - me0
    result = {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / seconds,
        "errors": len(errors),
        **_stats_ms(latencies),
        "mean_ms": 1000 * sum(latencies) / len(latencies) if latencies else float("nan"),
        "server_cpu_share": server / seconds,
        "server_main_loop_share": (daemon1["main_thread"] - daemon0["main_thread"]) / seconds,
        "client_cpu_share": client / seconds,
        "foreign_cores": max(0.0, (busy1 - busy0) - server - client - (daemon1["children"] - daemon0["children"]))
        / seconds,
        "error_samples": errors[:5],
    }
    if interval is not None:
        result["offered_per_s"] = spec["pollers"] / interval
        result.update(_stats_ms(from_schedule, "scheduled_"))
    return result


async def _upload(spec: dict) -> dict:
    """spec's count uploads of one file, spread over spec's clients; figures and the job ids."""
    data = Path(spec["file"]).read_bytes()
    boundary = "ocrw-bench-" + os.urandom(8).hex()
    clients = Clients(spec["client"], spec["host"], spec["port"], spec["clients"])
    todo = list(range(spec["count"]))
    results: list[tuple[float, int, str]] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()

    async def client() -> None:
        connection = clients.connection()
        while todo:
            i = todo.pop(0)
            preamble = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload{i:04d}.pdf"\r\n'
                f"Content-Type: application/pdf\r\n\r\n"
            ).encode()
            epilogue = f"\r\n--{boundary}--\r\n".encode()
            headers = (
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(preamble) + len(data) + len(epilogue)}\r\n"
            ).encode()
            sent = loop.time()
            try:
                status, body = await asyncio.wait_for(
                    connection.request("POST", "/jobs/create", headers, (preamble, data, epilogue)), UPLOAD_TIMEOUT
                )
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await connection.close()
                continue
            if status != 200:
                errors.append(f"HTTP {status}: {body[:200]!r}")
                continue
            results.append((loop.time() - sent, status, json.loads(body)["job_id"]))
        await connection.close()

    cpu0, daemon0, busy0 = time.process_time(), tree_cpu_seconds(spec["daemon_pid"]), machine_busy_seconds()
    started = loop.time()
    await asyncio.gather(*(client() for _ in range(spec["clients"])))
    wall = loop.time() - started
    cpu1, daemon1, busy1 = time.process_time(), tree_cpu_seconds(spec["daemon_pid"]), machine_busy_seconds()
    used = (daemon1["main"] - daemon0["main"]) + (daemon1["children"] - daemon0["children"]) + (cpu1 - cpu0)
    await clients.close()
    latencies = [r[0] for r in results]
    return {
        "uploads": len(results),
        "errors": len(errors),
        "seconds": wall,
        "mb_per_s": len(results) * len(data) / MB / wall,
        "uploads_per_s": len(results) / wall,
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_max_ms": 1000 * max(latencies) if latencies else float("nan"),
        "server_cpu_share": (daemon1["main"] - daemon0["main"]) / wall,
        "server_children_cpu_share": (daemon1["children"] - daemon0["children"]) / wall,
        "client_cpu_share": (cpu1 - cpu0) / wall,
        "foreign_cores": max(0.0, busy1 - busy0 - used) / wall,
        "job_ids": [r[2] for r in results],
        "error_samples": errors[:5],
    }


def client_main(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    if spec["mode"] == "upload":
        result = asyncio.run(_upload(spec))
    else:
        if spec.get("paths_file"):
            spec["paths"] = json.loads(Path(spec["paths_file"]).read_text())
        result = asyncio.run(_poll(spec))
    print(json.dumps(result))
    return 0


def run_client(spec: dict, folder: Path, timeout: float) -> dict:
    """The load generator in its own process (its own interpreter and GIL); its figures."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / f"client-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, __file__, "--client-spec", str(spec_path)], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _address(daemon: Daemon) -> tuple[str, int]:
    url = urlsplit(daemon.http_url)
    assert url.hostname and url.port
    return url.hostname, url.port


# -- polling ------------------------------------------------------------------------------------------
def build_jobs(root: Path, count: int) -> tuple[Path, list[str]]:
    """`count` completed job folders in root/outbox, checked with the project's own JobMeta model."""
    from ocr_watcher.spool.store import JobStore

    template = make_completed_job(root / "template", merge(config(), {"intake": FAST_INTAKE}))
    outbox = root / "outbox"
    outbox.mkdir()
    job_ids = build_outbox(template, outbox, count, "poll")
    store = JobStore(outbox)
    bad = [job_id for job_id in random.Random(0).sample(job_ids, min(200, count)) if store.try_load(job_id) is None]
    if bad:
        raise RuntimeError(f"{len(bad)} of 200 sampled jobs are not valid JobMeta, e.g. {bad[0]}")
    return outbox, job_ids


def polling_run(root: Path, outbox: Path, paths_file: Path, args: argparse.Namespace, run: int) -> dict:
    name = f"poll{run}"
    daemon = Daemon(root / name, merge(config(), {"outbox": str(outbox)}), name=name)
    out: dict[str, dict[str, dict]] = {shape: {} for shape in SHAPES}
    try:
        daemon.start(timeout=300)
        host, port = _address(daemon)
        with urlopen(f"http://{host}:{port}/health", timeout=60) as answer:  # builds the listing index once
            health = json.loads(answer.read())
        if health["jobs"]["completed"] != args.jobs:
            raise RuntimeError(f"the daemon sees {health['jobs']} jobs, not {args.jobs} completed")
        time.sleep(1.0)  # start-up work (the first outbox scan) is over before the clock starts
        for shape in SHAPES:
            for target in TARGETS:
                spec = _client_spec(
                    "poll",
                    args,
                    host,
                    port,
                    daemon,
                    pollers=args.pollers,
                    interval=PACED_INTERVAL if shape == "paced" else None,
                    warmup=WARMUP,
                    seconds=args.seconds,
                    seed=1000 * run + len(out[shape]),
                )
                if target == "job":
                    spec["paths_file"] = str(paths_file)
                else:
                    spec["paths"] = ["/healthz"]
                result = run_client(spec, root / "specs", timeout=WARMUP + args.seconds + 120)
                daemon.check_alive()
                out[shape][target] = result
                print(
                    f"  run {run + 1}/{args.runs} {shape:9s} {target:7s}: {result['requests_per_s']:7,.0f} req/s, "
                    f"p50 {result['p50_ms']:6.1f} ms, p95 {result['p95_ms']:6.1f} ms, p99 {result['p99_ms']:6.1f} ms, "
                    f"errors {result['errors']}, server CPU {result['server_cpu_share']:.0%}, "
                    f"client CPU {result['client_cpu_share']:.0%}, other load {result['foreign_cores']:.2f} cores",
                    flush=True,
                )
    finally:
        daemon.stop()
    return out


def _client_spec(mode: str, args: argparse.Namespace, host: str, port: int, daemon: Daemon, **fields: Any) -> dict:
    """What the load-generator process is told: the fields every mode needs, then the mode's own."""
    return {"mode": mode, "client": args.client, "host": host, "port": port, "daemon_pid": daemon.pid, **fields}


# -- uploads ------------------------------------------------------------------------------------------
def big_pdf(path: Path, megabytes: float) -> Path:
    """A one-page PDF of about `megabytes` MiB: an incompressible 8-bit gray image (stored, Flate
    level 0) filling a Letter page, with one line of text over it (so the text engine finds some)."""
    from tests.pdfgen import image_page_pdf

    pixels = int(megabytes * MB) - 2000
    width = int(pixels**0.5)
    height = pixels // width
    raw = random.Random(5).randbytes(width * height)
    return image_page_pdf(path, width, height, 8, zlib.compress(raw, 0), "A scanned page of the upload benchmark.")


def _terminal_now(outbox: Path) -> int:
    names = [e.name for e in os.scandir(outbox) if not e.name.startswith(".")]
    return sum(1 for name in names if (read_meta(outbox / name) or {}).get("status") in {"completed", "failed"})


def copy_baseline(sources: list[Path], folder: Path, threads: int) -> dict:
    """What `ocr-watcher submit` does for each file (write, fsync, rename, fsync the folder)."""
    from ocr_watcher.cli import submit_file
    from ocr_watcher.config import Config

    settings = Config(inbox=folder, outbox=folder.parent / "unused-outbox")
    size = sum(source.stat().st_size for source in sources)
    started = time.perf_counter()
    if threads == 1:
        for source in sources:
            submit_file(settings, source, None)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda source: submit_file(settings, source, None), sources))
    wall = time.perf_counter() - started
    copied = len(os.listdir(folder))
    shutil.rmtree(folder)
    if copied != len(sources):
        raise RuntimeError(f"{copied} of {len(sources)} files copied")
    return {"files": len(sources), "seconds": wall, "mb_per_s": size / MB / wall, "files_per_s": len(sources) / wall}


def upload_run(root: Path, pdf: Path, args: argparse.Namespace, run: int) -> dict:
    name = f"up{run}"
    folder = root / name
    daemon = Daemon(folder, config(workers=1), name=name)
    out: dict[str, dict] = {}
    try:
        daemon.start()
        host, port = _address(daemon)
        time.sleep(0.5)
        done = 0
        for clients in UPLOAD_CLIENTS:
            spec = _client_spec("upload", args, host, port, daemon, clients=clients, count=args.uploads, file=str(pdf))
            result = run_client(spec, folder / "specs", timeout=args.uploads * UPLOAD_TIMEOUT)
            result["jobs_finished_by_end"] = _terminal_now(daemon.outbox) - done
            done += result["uploads"]
            jobs = wait_for_jobs(daemon.outbox, done, timeout=60 + 2 * args.uploads, daemon=daemon)
            statuses = [jobs[job_id]["status"] for job_id in result.pop("job_ids")]
            result["jobs_completed"] = statuses.count("completed")
            out[f"upload_{clients}"] = result
            print(
                f"  run {run + 1}/{args.runs} upload, {clients} client(s): {result['mb_per_s']:6.1f} MB/s, "
                f"{result['uploads_per_s']:5.1f} uploads/s, p50 {result['latency_p50_ms']:5.0f} ms, errors "
                f"{result['errors']}, server CPU {result['server_cpu_share']:.0%}, client CPU "
                f"{result['client_cpu_share']:.0%}, {result['jobs_finished_by_end']} jobs done by the last upload",
                flush=True,
            )
    finally:
        daemon.stop()
    shutil.rmtree(folder, ignore_errors=True)  # 2 x U x U-MiB inputs

    stage = root / "stage"
    if not stage.exists():
        stage.mkdir()
        for i in range(args.uploads):
            os.link(pdf, stage / f"upload{i:04d}.pdf")  # one file's bytes under U names (hot in the page cache)
    sources = sorted(stage.iterdir())
    for threads in UPLOAD_CLIENTS:
        result = copy_baseline(sources, root / f"copies{run}", threads)
        out[f"copy_{threads}"] = result
        print(
            f"  run {run + 1}/{args.runs} copy (submit), {threads} at a time: {result['mb_per_s']:6.1f} MB/s, "
            f"{result['files_per_s']:5.1f} files/s",
            flush=True,
        )
    return out


# -- summary ------------------------------------------------------------------------------------------
def summarise(runs: list[dict]) -> dict:
    """{"median": field -> median over runs (errors: total), "runs": [...]}."""
    med = medians(runs)
    if "errors" in med:
        med["errors"] = sum(r["errors"] for r in runs)
    return {"median": med, "runs": runs}


def print_polling(polling: dict, args: argparse.Namespace) -> None:
    rows = []
    for shape in SHAPES:
        for target in TARGETS:
            m = polling[shape][target]["median"]
            offered = f"{m['offered_per_s']:,.0f}" if "offered_per_s" in m else "max"
            sched = m.get("scheduled_p99_ms", float("nan"))
            endpoint = "GET /jobs/{id}" if target == "job" else "GET /healthz"
            rows.append(
                [shape, endpoint, offered, m["requests_per_s"], m["p50_ms"], m["p95_ms"], m["p99_ms"], m["max_ms"]]
                + [sched, int(m["errors"]), m["server_cpu_share"], m["client_cpu_share"], m["foreign_cores"]]
            )
    headers = ["shape", "endpoint", "offered/s", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "p99 sched ms"]
    print_figures(
        f"GET /jobs/{{id}} with {args.jobs:,} completed jobs in the outbox vs GET /healthz: {args.pollers} "
        f"keep-alive connections, {args.seconds:g} s measured after {WARMUP:g} s warm-up, median of {args.runs} "
        f"({args.client} client)",
        [*headers, "errors", "server CPU", "client CPU", "other load"],
        rows,
    )
    for shape in SHAPES:
        job, healthz = polling[shape]["job"]["median"], polling[shape]["healthz"]["median"]
        ratio = job["requests_per_s"] / healthz["requests_per_s"]
        print(f"  {shape}: requests/s GET /jobs/{{id}} / GET /healthz = {ratio:.2f}")
    p99 = polling["paced"]["job"]["median"]["p99_ms"]
    verdict = "met" if p99 < TARGET_P99_MS else "NOT met"
    print(
        f"  target p99 < {TARGET_P99_MS:g} ms, judged on the paced shape ({args.pollers} x 10 req/s): "
        f"{p99:.1f} ms, {verdict} (saturated p99: {polling['saturated']['job']['median']['p99_ms']:.1f} ms)"
    )
    print("  latency: request written -> answer read, in the client; p99 sched: from the poll's scheduled time;")
    print("  server CPU: the daemon process (all threads) in cores; client CPU: the load generator process;")
    print("  other load: cores used by other processes on the machine meanwhile")
    _warn_noisy([polling[s][t]["median"]["foreign_cores"] for s in SHAPES for t in TARGETS])


def print_uploads(uploads: dict, args: argparse.Namespace) -> None:
    rows = []
    for clients in UPLOAD_CLIENTS:
        up, cp = uploads[f"upload_{clients}"]["median"], uploads[f"copy_{clients}"]["median"]
        rows.append(
            [f"POST /jobs/create, {clients} client(s)", up["mb_per_s"], up["uploads_per_s"], up["latency_p50_ms"]]
            + [int(up["errors"]), up["server_cpu_share"], up["client_cpu_share"], up["foreign_cores"]]
            + [up["mb_per_s"] / cp["mb_per_s"]]
        )
        rows.append([f"copy + fsync, {clients} at a time", cp["mb_per_s"], cp["files_per_s"], 1000 / cp["files_per_s"]])
        rows[-1] += ["", "", "", "", ""]
    print_figures(
        f"uploads: {args.uploads} x {args.upload_mb:g} MiB PDF to POST /jobs/create vs copying the same files with "
        f"`ocr-watcher submit`'s code (write + fsync), median of {args.runs}",
        ["", "MB/s", "files/s", "p50 ms", "errors", "server CPU", "client CPU", "other load", "upload/copy"],
        rows,
    )
    done = [uploads[f"upload_{c}"]["median"]["jobs_finished_by_end"] for c in UPLOAD_CLIENTS]
    print(
        f"  the daemon (engine text, 1 worker) processed the jobs meanwhile: {done[0]:.0f} and {done[1]:.0f} of "
        f"{args.uploads} were done by the last upload's answer; copy p50 ms = mean time per file"
    )
    _warn_noisy([uploads[f"upload_{c}"]["median"]["foreign_cores"] for c in UPLOAD_CLIENTS])


def _warn_noisy(foreign: list[float]) -> None:
    if max(foreign) > NOISY_CORES:
        print(
            f"  WARNING: other processes used up to {max(foreign):.2f} cores (median of runs) during these "
            f"measurements, on a {os.cpu_count()}-core machine: the figures above are disturbed by them"
        )


def main() -> int:
    bench = Bench(NAME, __doc__, quick="1 run, 1,000 jobs, 3 s, 10 uploads")
    bench.sized("--runs", int, 3, 1, "runs")
    bench.sized("--jobs", int, 10_000, 1000, "completed jobs in the outbox")
    bench.sized("--seconds", float, 10.0, 3.0, "seconds measured per load phase")
    bench.add("--pollers", type=int, default=50, help="concurrent connections polling (default 50)")
    bench.sized("--uploads", int, 100, 10, "uploads per shape")
    bench.add("--upload-mb", type=float, default=5.0, help="size of the uploaded PDF in MiB (default 5)")
    bench.add("--skip-polling", action="store_true")
    bench.add("--skip-uploads", action="store_true")
    bench.add(
        "--client",
        choices=["raw", "httpx", "httpx-shared"],
        default="raw",
        help="load generator: raw HTTP/1.1 (default), an httpx.AsyncClient per connection, or one shared httpx pool",
    )
    bench.add("--client-spec", type=Path, help=argparse.SUPPRESS)  # the load generator's own process
    args = bench.parse()
    if args.client_spec:
        return client_main(args.client_spec)

    results: dict[str, Any] = {
        "quick": args.quick,
        "runs": args.runs,
        "client": args.client,
        "target_p99_ms": TARGET_P99_MS,
        "target_judged_on": "paced",
    }
    with temp_root(NAME) as root:
        if not args.skip_polling:
            print(f"building {args.jobs:,} completed jobs ...", flush=True)
            started = time.monotonic()
            outbox, job_ids = build_jobs(root / "jobs", args.jobs)
            paths_file = root / "paths.json"
            paths_file.write_text(json.dumps([f"/jobs/{quote(job_id)}" for job_id in job_ids]))
            print(f"  ({time.monotonic() - started:.1f} s)", flush=True)
            runs = [polling_run(root, outbox, paths_file, args, run) for run in range(args.runs)]
            polling = {s: {t: summarise([r[s][t] for r in runs]) for t in TARGETS} for s in SHAPES}
            results["polling"] = {
                "jobs": args.jobs,
                "pollers": args.pollers,
                "seconds": args.seconds,
                "warmup_s": WARMUP,
                "paced_interval_s": PACED_INTERVAL,
                **polling,
                "ratio_job_to_healthz": {
                    s: polling[s]["job"]["median"]["requests_per_s"] / polling[s]["healthz"]["median"]["requests_per_s"]
                    for s in SHAPES
                },
            }
        if not args.skip_uploads:
            pdf = big_pdf(root / "upload.pdf", args.upload_mb)
            print(f"uploads: {args.uploads} x {pdf.stat().st_size / MB:.2f} MiB ...", flush=True)
            runs = [upload_run(root, pdf, args, run) for run in range(args.runs)]
            uploads = {key: summarise([r[key] for r in runs]) for key in runs[0]}
            results["uploads"] = {
                "count": args.uploads,
                "file_mb": pdf.stat().st_size / MB,
                **uploads,
                "ratio_upload_to_copy": {
                    str(c): uploads[f"upload_{c}"]["median"]["mb_per_s"] / uploads[f"copy_{c}"]["median"]["mb_per_s"]
                    for c in UPLOAD_CLIENTS
                },
            }
    if "polling" in results:
        print_polling(results["polling"], args)
    if "uploads" in results:
        print_uploads(results["uploads"], args)
    return bench.finish(results)


if __name__ == "__main__":
    sys.exit(main())
