"""GPU throughput: vLLM alone vs the daemon end to end, on the same pages (needs a GPU and the weights).

On a fresh GPU machine, from the repository root:

    pip install -e '.[gpu]' && python bench/gpu_throughput.py --pdfs DIR --managed
    python bench/gpu_throughput.py --pdfs DIR --server http://127.0.0.1:8000   # a server already running

1. vLLM alone: every page of every PDF in DIR is rendered beforehand (not timed) at 144 dpi to PNG,
   longest side capped like the daemon does, then all are sent straight to the server at once
   (asyncio + httpx, --concurrency requests in flight) with the daemon's request body. Figures:
   pages/s and output tokens/s.
2. The daemon: `ocr-watcher run` with engine vllm against the same server URL; the PDFs are dropped
   into its inbox and completion is read from each job's metadata.json. Figures: pages/s, and the
   latency of a 1-page job dropped behind the backlog once the daemon is busy (DESIGN section 4: a
   small job must not wait for the whole backlog).
Printed: both rates and their ratio (daemon / vLLM alone), GPU utilisation and memory sampled with
nvidia-smi every second in each phase. Written to bench/results/gpu_throughput.json.

It asserts nothing about time. It cannot measure anything without a GPU: `--help` and the pure parts
(page rendering plan, statistics, the nvidia-smi parser) import without vllm, torch or httpx. Its
plumbing can be tried without one against the vLLM contract double (no model, canned answers; the
figures then measure only this machine's CPU side):

    python -m tests.fake_vllm serve deepseek-ai/DeepSeek-OCR --port 18765 &
    python bench/gpu_throughput.py --pdfs DIR --server http://127.0.0.1:18765 --json /tmp/dry.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Bench, median, parse_iso, percentile, running, temp_root, wait_for_jobs  # noqa: E402

DPI = 144
MAX_SIDE_PX = 3000
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


# -- pure parts -------------------------------------------------------------------------------------
def parse_nvidia_smi(text: str) -> list[tuple[float, float]]:
    """`utilization.gpu, memory.used` lines (one per GPU) -> [(percent, MiB), ...]."""
    out = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2:
            try:
                out.append((float(parts[0]), float(parts[1])))
            except ValueError:
                continue
    return out


def render_scale(width_pt: float, height_pt: float, dpi: int = DPI, max_side_px: int = MAX_SIDE_PX) -> float:
    """pypdfium2 scale for a page: dpi/72, reduced so that the longest side stays within max_side_px."""
    scale = dpi / 72
    longest = max(width_pt, height_pt) * scale
    return scale * min(1.0, max_side_px / longest) if longest > 0 else scale


def summarize_gpu(
    samples: list[tuple[float, float, float]], start: float = float("-inf"), end: float = float("inf")
) -> dict[str, float]:
    """(time, percent, MiB) samples taken between `start` and `end` (wall-clock seconds): the window
    in which a backlog existed, so that start-up and the tail do not dilute the figure."""
    window = [(u, m) for t, u, m in samples if start <= t <= end]
    util = [u for u, _ in window]
    mem = [m for _, m in window]
    return {
        "samples": len(window),
        "utilization_mean_pct": sum(util) / len(util) if util else float("nan"),
        "utilization_p50_pct": median(util),
        "memory_max_mib": max(mem) if mem else float("nan"),
    }


class GpuSampler:
    """nvidia-smi every second in a thread: (time, utilisation averaged over GPUs, memory summed)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                text = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            gpus = parse_nvidia_smi(text)
            if gpus:
                util = sum(u for u, _ in gpus) / len(gpus)
                self.samples.append((time.time(), util, sum(m for _, m in gpus)))

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- rendering --------------------------------------------------------------------------------------
def render_pages(pdfs: list[Path], out: Path) -> list[Path]:
    """Every page as PNG (RGB, 144 dpi, capped), rendered before anything is timed."""
    import pypdfium2 as pdfium

    pages = []
    for pdf_path in pdfs:
        pdf = pdfium.PdfDocument(pdf_path)
        for index in range(len(pdf)):
            page = pdf[index]
            width, height = page.get_size()
            image = page.render(scale=render_scale(width, height)).to_pil().convert("RGB")
            target = out / f"{pdf_path.stem}-{index + 1:04d}.png"
            image.save(target, format="PNG")
            pages.append(target)
        pdf.close()
    return pages


def one_page_pdf(source: Path, target: Path) -> None:
    import pypdfium2 as pdfium

    src = pdfium.PdfDocument(source)
    new = pdfium.PdfDocument.new()
    new.import_pages(src, [0])
    buffer = io.BytesIO()
    new.save(buffer)
    target.write_bytes(buffer.getvalue())


# -- phase 1: vLLM alone ----------------------------------------------------------------------------
async def _send_all(server: str, model: str, pages: list[Path], concurrency: int, max_tokens: int) -> dict[str, Any]:
    import httpx
    from PIL import Image

    from ocr_watcher.engines.deepseek_tokens import answer_budget
    from ocr_watcher.engines.vllm import PROMPTS, build_request, knows_prompt_size
    from ocr_watcher.engines.vllm_pool import served_models

    gate = asyncio.Semaphore(concurrency)
    tokens = 0
    finish: dict[str, int] = {}
    errors: dict[str, int] = {}  # "HTTP 400", "ReadTimeout", ...: counted apart, never in the rate
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=3600, limits=limits) as client:
        # The daemon never asks for more than the context leaves (0.12-0.16 refuse it): neither do we.
        context = served_models((await client.get(f"{server}/v1/models")).json()).get(model) or 8192

        async def one(path: Path) -> None:
            nonlocal tokens
            with Image.open(path) as image:
                budget = answer_budget(context, *image.size, known_model=knows_prompt_size(model))
            body = build_request(
                model,
                PROMPTS["markdown"],
                base64.b64encode(path.read_bytes()).decode(),
                temperature=0.0,
                max_tokens=min(max_tokens, budget),
            )
            try:
                async with gate:
                    response = await client.post(f"{server}/v1/chat/completions", json=body)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            if response.status_code != 200:
                errors[f"HTTP {response.status_code}"] = errors.get(f"HTTP {response.status_code}", 0) + 1
                return
            answer = response.json()
            tokens += int(answer.get("usage", {}).get("completion_tokens") or 0)
            reason = str(answer["choices"][0].get("finish_reason"))
            finish[reason] = finish.get(reason, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in pages))
        seconds = time.perf_counter() - started
    answered = len(pages) - sum(errors.values())
    return {
        "pages": len(pages),
        "answered": answered,
        "seconds": seconds,
        "pages_per_s": answered / seconds,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / seconds,
        "finish_reasons": finish,
        "errors": errors,
    }


# -- phase 2: the daemon ----------------------------------------------------------------------------
def daemon_run(server: str, model: str, pdfs: list[Path], pages: int, args: argparse.Namespace) -> dict[str, Any]:
    config = {
        "engine": "vllm",
        "vllm": {"servers": [server], "model": model, "max_in_flight": args.concurrency},
        # Files arrive here by rename, whole: the production settle time (10 s) would only delay the
        # start and lower the rate by a fixed amount that says nothing about keeping the GPU busy.
        "intake": {"settle_seconds": 0.5, "poll_interval_seconds": 0.5},
    }
    with temp_root("gpu") as root, running(root, config, name="gpu") as daemon:
        staging = root / "staging"
        staging.mkdir()

        def drop(path: Path) -> float:
            os.rename(path, daemon.inbox / path.name)
            return time.time()

        # The 1-page job on the idle daemon first: the baseline for the one dropped behind the backlog.
        one_page_pdf(pdfs[0], staging / "aa-one-page-idle.pdf")
        idle_drop = drop(staging / "aa-one-page-idle.pdf")
        idle = wait_for_jobs(daemon.outbox, 1, timeout=args.timeout, daemon=daemon)
        idle_latency = parse_iso(next(iter(idle.values()))["finished_at"]) - idle_drop
        drops: dict[str, float] = {}
        for pdf in pdfs:  # copy beside the inbox, then rename in: the daemon sees whole files only
            shutil.copy2(pdf, staging / pdf.name)
        first_drop = time.time()
        for pdf in pdfs:
            drops[pdf.name] = drop(staging / pdf.name)
        time.sleep(args.small_after)  # let the backlog build up on the GPU
        one_page_pdf(pdfs[0], staging / "zz-one-page.pdf")
        small_drop = drop(staging / "zz-one-page.pdf")
        jobs = wait_for_jobs(daemon.outbox, len(pdfs) + 2, timeout=args.timeout, daemon=daemon)
    finished = {(meta.get("source") or {}).get("name", job): meta for job, meta in jobs.items()}
    backlog = {name: meta for name, meta in finished.items() if name in drops}
    backlog_ends = [parse_iso(m["finished_at"]) for m in backlog.values() if m.get("finished_at")]
    last_end = max(backlog_ends) if backlog_ends else float("nan")
    small_meta = finished.get("zz-one-page.pdf")
    small_latency = parse_iso(small_meta["finished_at"]) - small_drop if small_meta else float("nan")
    seconds = last_end - first_drop
    failed_pages = sum(int((m.get("progress") or {}).get("pages_failed") or 0) for m in finished.values())
    return {
        "pages": pages,
        "failed_pages": failed_pages,
        "failed_jobs": sorted(name for name, meta in finished.items() if meta.get("status") != "completed"),
        "seconds": seconds,
        "pages_per_s": pages / seconds if seconds else float("nan"),
        "backlog_window": [first_drop, last_end],
        "jobs": {name: meta.get("status") for name, meta in finished.items()},
        "small_job_idle_latency_s": idle_latency,
        "small_job_latency_s": small_latency,
        "small_job_latency_ratio": small_latency / idle_latency if idle_latency else float("nan"),
        "backlog_finished_after_small_s": last_end - parse_iso(small_meta["finished_at"])
        if small_meta and backlog_ends
        else float("nan"),
        "job_seconds_p50": median(parse_iso(m["finished_at"]) - drops[n] for n, m in backlog.items()),
        "job_seconds_p95": percentile((parse_iso(m["finished_at"]) - drops[n] for n, m in backlog.items()), 95),
    }


def failure_lines(alone: dict[str, Any], daemon: dict[str, Any]) -> list[str]:
    """What failed in either phase, one line each; empty when every page was done."""
    lines = [f"vLLM alone: {count} requests failed with {kind}" for kind, count in sorted(alone["errors"].items())]
    if daemon["failed_pages"]:
        lines.append(f"daemon: {daemon['failed_pages']} pages failed")
    if daemon["failed_jobs"]:
        lines.append(f"daemon: jobs not completed: {', '.join(daemon['failed_jobs'])}")
    return lines


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    bench = Bench("gpu_throughput", __doc__)
    bench.add("--pdfs", type=Path, required=True, help="a folder of PDFs (all of them are used)")
    where = bench.parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="a running vLLM server, http://host:port")
    where.add_argument("--managed", action="store_true", help="start `vllm serve` here (ManagedServer)")
    bench.add("--model", default="deepseek-ai/DeepSeek-OCR")
    bench.add("--port", type=int, default=8000, help="--managed: the port to serve on")
    bench.add("--gpu-memory-utilization", type=float, default=0.9)
    bench.add("--concurrency", type=int, default=256, help="requests in flight (and vllm.max_in_flight)")
    bench.add("--max-tokens", type=int, default=8192)
    bench.add("--small-after", type=float, default=20.0, help="seconds before the 1-page job is dropped")
    bench.add("--timeout", type=float, default=4 * 3600, help="for the daemon phase")
    args = bench.parse(argv)

    pdfs = sorted(p for p in args.pdfs.iterdir() if p.suffix.lower() == ".pdf")
    if not pdfs:
        bench.parser.error(f"no PDFs in {args.pdfs}")
    managed = None
    server = (args.server or "").rstrip("/")
    if args.managed:
        from ocr_watcher.engines.vllm_server import ManagedServer, ServerSettings

        settings = ServerSettings(model=args.model, port=args.port, gpu_memory_utilization=args.gpu_memory_utilization)
        managed = ManagedServer(settings)
        print("starting vLLM (minutes: loading the model) ...", flush=True)
        if not managed.start(wait=True):
            print(f"vLLM did not come up: {managed.health()}", file=sys.stderr)
            managed.stop()
            return 1
        server = managed.url
    try:
        with temp_root("gpu-pages") as pages_dir:
            pages = render_pages(pdfs, pages_dir)
            print(f"{len(pages)} pages from {len(pdfs)} PDFs rendered at {DPI} dpi", flush=True)
            with GpuSampler() as gpu_alone:
                alone = asyncio.run(_send_all(server, args.model, pages, args.concurrency, args.max_tokens))
        with GpuSampler() as gpu_daemon:
            daemon = daemon_run(server, args.model, pdfs, len(pages), args)
    finally:
        if managed is not None:
            managed.stop()
    failures = failure_lines(alone, daemon)
    if failures:  # a rate over failed requests would flatter whichever side failed more
        print("no rate: requests or pages failed, and a rate would count them as work done", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        bench.finish({"server": server, "model": args.model, "vllm_alone": alone, "daemon": daemon, "failed": failures})
        return 1
    ratio = daemon["pages_per_s"] / alone["pages_per_s"]
    alone["gpu"] = summarize_gpu(gpu_alone.samples)
    daemon["gpu"] = summarize_gpu(gpu_daemon.samples, *daemon["backlog_window"])  # while a backlog existed
    print(
        f"vLLM alone: {alone['pages_per_s']:.2f} pages/s, {alone['output_tokens_per_s']:.0f} output tokens/s, "
        f"GPU {alone['gpu']['utilization_mean_pct']:.0f}% (max {alone['gpu']['memory_max_mib']:.0f} MiB)"
    )
    print(
        f"daemon:     {daemon['pages_per_s']:.2f} pages/s, GPU {daemon['gpu']['utilization_mean_pct']:.0f}% "
        "while the backlog lasted"
    )
    print(f"ratio daemon / vLLM alone: {ratio:.3f} (target >= 0.95)")
    print(
        f"1-page job: {daemon['small_job_idle_latency_s']:.1f} s on the idle daemon, "
        f"{daemon['small_job_latency_s']:.1f} s behind the backlog "
        f"(x{daemon['small_job_latency_ratio']:.1f}, target <= 3)"
    )
    return bench.finish(
        {
            "server": server,
            "model": args.model,
            "dpi": DPI,
            "concurrency": args.concurrency,
            "vllm_alone": alone,
            "daemon": daemon,
            "ratio": ratio,
            "repo": str(REPO),
        }
    )


if __name__ == "__main__":
    sys.exit(main())
