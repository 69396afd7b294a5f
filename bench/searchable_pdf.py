"""What result.pdf costs: making the searchable PDF against reading the pages, on the CPU path.

    .venv/bin/python bench/searchable_pdf.py [--quick] [--pages N] [--runs R]

A daemon (engine auto, outputs [markdown, pdf], 2 workers) reads one scanned PDF of N letter pages
of 40 lines at 300 dpi (tests/pdfgen.scanned_pdf). Then, from that job's own input and page files,
the PDF is made again R times as the result writer makes it (pipeline/searchable_pdf.job_pdf), and
its median time per page is set against the pages' median OCR time (seconds_engine in their page
JSON). Target: the PDF costs under 10% of a page's OCR.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, median, print_figures, running, temp_root, wait_for_jobs  # noqa: E402

from ocr_watcher.pipeline.searchable_pdf import job_pdf  # noqa: E402
from ocr_watcher.spool.model import JobMeta  # noqa: E402
from ocr_watcher.spool.store import JobStore  # noqa: E402
from tests.pdfgen import sample_lines, scanned_pdf  # noqa: E402

NAME = "searchable_pdf"
TARGET = 0.10


def main() -> int:
    bench = Bench(NAME, __doc__, quick="4 pages, 3 runs")
    bench.sized("--pages", int, 12, 4, "pages")
    bench.sized("--runs", int, 7, 3, "times the PDF is made")
    args = bench.parse()
    config = {
        "engine": "auto",
        "pipeline": {"workers": 2},
        "intake": {"settle_seconds": 0.2, "poll_interval_seconds": 0.2},
        "profiles": {"default": {"outputs": ["markdown", "pdf"]}},
    }
    with temp_root(NAME) as root:
        pages = [sample_lines(40, seed=300 + n, max_chars=70) for n in range(args.pages)]
        pdf = scanned_pdf(root / "scan.pdf", pages, dpi=300, size_in=(8.5, 11.0))
        with running(root, config) as daemon:
            pdf.rename(daemon.inbox / pdf.name)
            (meta,) = wait_for_jobs(daemon.outbox, 1, timeout=900, daemon=daemon).values()
        store = JobStore(daemon.outbox, fsync=False)
        job = JobMeta.model_validate_json((daemon.outbox / meta["job_id"] / "metadata.json").read_bytes())
        infos = [store.read_page_info(job.job_id, n) or {} for n in range(1, args.pages + 1)]
        ocr = median(info["seconds_engine"] for info in infos)
        words = sum(len(ln["words"]) for i in infos for b in i.get("blocks", []) for ln in b["lines"])
        seconds = []
        for _ in range(args.runs):
            started = time.perf_counter()
            made = job_pdf(store, job)
            seconds.append(time.perf_counter() - started)
        per_page = median(seconds) / args.pages
        written = json.loads((daemon.outbox / job.job_id / "DONE").read_text())
    assert any(f["name"] == "result.pdf" for f in written["files"]), "the daemon wrote no result.pdf"
    ratio = per_page / ocr
    print_figures(
        f"{NAME}: {args.pages} scanned letter pages at 300 dpi, {words} words; PDF made {args.runs} times",
        ["", "seconds per page", "x OCR"],
        [["OCR (seconds_engine, median)", ocr, 1.0], ["result.pdf (median)", per_page, ratio]],
    )
    print(f"result.pdf per page / OCR per page: {ratio:.3f} (target < {TARGET:.2f}); {len(made):,} bytes")
    return bench.finish(
        {
            "pages": args.pages,
            "runs": args.runs,
            "words": words,
            "ocr_s": ocr,
            "pdf_s_per_page": per_page,
            "ratio": ratio,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
