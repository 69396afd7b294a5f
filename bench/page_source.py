"""What choosing each page's source (engine `hybrid`, what `auto` is without a GPU) gains over OCR of
every page (engine `tesseract`, what `auto` was), on born-digital pages and on scans.

    .venv/bin/python bench/page_source.py [--quick] [--pages N] [--runs R]

Per run and engine, a fresh daemon (2 workers) is given two PDFs made by tests/pdfgen.py: N
born-digital Letter pages (a real text layer, 30 lines each) and N scanned pages (200 dpi images, no
text layer). Reported per document, median of R runs: seconds from drop to `completed`, and word
recall of result.md against the words that were put on the pages (their share found, repeats
counted), with the ratio hybrid / tesseract. Target: born-digital pages much faster and exact;
scans no slower than tesseract alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, median, parse_iso, print_figures, repeat, running, temp_root, wait_for_jobs  # noqa: E402

from ocr_watcher.doctor import word_recall  # noqa: E402
from tests.pdfgen import sample_lines, scanned_pdf, text_pdf  # noqa: E402

NAME = "page_source"
ENGINES = ("tesseract", "hybrid")


def documents(folder: Path, pages: int) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    digital = [sample_lines(30, seed=100 + p, max_chars=70) for p in range(pages)]
    scans = [sample_lines(12, seed=200 + p, max_chars=60) for p in range(pages)]
    return {
        "born-digital": (text_pdf(folder / "digital.pdf", digital), " ".join(" ".join(p) for p in digital)),
        "scanned": (
            scanned_pdf(folder / "scan.pdf", scans, dpi=200, size_in=(8.5, 11.0)),
            " ".join(" ".join(p) for p in scans),
        ),
    }


def one_run(engine: str, pages: int) -> dict[str, dict[str, float]]:
    with temp_root(NAME) as root:
        docs = documents(root / "stage", pages)
        config = {"engine": engine, "intake": {"settle_seconds": 0.2, "poll_interval_seconds": 0.2}}
        figures = {}
        with running(root, {**config, "pipeline": {"workers": 2}}) as daemon:
            for kind, (path, words) in docs.items():  # one document at a time: its own time
                before = {p.name for p in daemon.outbox.iterdir()}
                dropped = time.time()
                path.rename(daemon.inbox / path.name)
                (meta,) = wait_for_jobs(daemon.outbox, 1, timeout=900, daemon=daemon, ignore=before).values()
                markdown = (daemon.outbox / meta["job_id"] / "result.md").read_text()
                figures[kind] = {
                    "seconds": parse_iso(meta["finished_at"]) - dropped,
                    "recall": word_recall(words, markdown),
                }
        return figures


def main() -> int:
    bench = Bench(NAME, __doc__, quick="4 pages, 1 run")
    bench.sized("--pages", int, 12, 4, "pages per document")
    bench.sized("--runs", int, 3, 1, "runs per engine")
    args = bench.parse()
    results = {}
    for engine in ENGINES:
        results[engine] = repeat(
            args.runs,
            lambda _, e=engine: one_run(e, args.pages),
            lambda r: ", ".join(f"{k} {v['seconds']:.2f} s recall {v['recall']:.3f}" for k, v in r.items()),
            label=f"{engine} ",
        )
    rows = []
    for kind in ("born-digital", "scanned"):
        med = {e: {m: median(r[kind][m] for r in results[e]) for m in ("seconds", "recall")} for e in ENGINES}
        rows.append(
            [
                kind,
                med["tesseract"]["seconds"],
                med["hybrid"]["seconds"],
                med["hybrid"]["seconds"] / med["tesseract"]["seconds"],
                med["tesseract"]["recall"],
                med["hybrid"]["recall"],
            ]
        )
    print_figures(
        f"{args.pages} pages per document, 2 workers, median of {args.runs} runs; seconds from drop to completed",
        ["document", "tesseract s", "hybrid s", "ratio", "recall tesseract", "recall hybrid"],
        rows,
    )
    return bench.finish({"pages": args.pages, "runs": results})


if __name__ == "__main__":
    sys.exit(main())
