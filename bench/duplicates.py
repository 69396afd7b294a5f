"""What the same file twice costs with `duplicates: reuse`, against OCRing it again.

    .venv/bin/python bench/duplicates.py [--quick] [--files N] [--runs R]

Per run, into a fresh daemon (engine tesseract, 2 OCR workers) whose default profile reuses
duplicates: N image-only PDFs of 4 pages (200 dpi, drawn by tests/pdfgen.py) are dropped and done,
then the same N files again under new names. Reported per run: the median seconds from drop to
`completed` (finished_at - the drop) of the first copies and of the second, and their ratio; and
how many of the second copies have `duplicate_of` (all of them should) and how many pages tesseract
was given for them (none should be).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, median, parse_iso, print_figures, repeat, running, temp_root, wait_for_jobs  # noqa: E402

from tests.daemon import tesseract_call_logger, tesseract_calls  # noqa: E402
from tests.pdfgen import sample_lines, scanned_pdf  # noqa: E402

NAME = "duplicates"
PAGES = 4


def one_run(files: int) -> dict:
    with temp_root(NAME) as root:
        wrapper, call_log = tesseract_call_logger(root / "bin")
        stage = root / "stage"
        stage.mkdir()
        sources = [
            scanned_pdf(stage / f"doc{n:02d}.pdf", [sample_lines(12, seed=10 * n + p) for p in range(PAGES)])
            for n in range(files)
        ]
        config = {
            "engine": "tesseract",
            "tesseract": {"command": str(wrapper)},
            "intake": {"settle_seconds": 0.2, "poll_interval_seconds": 0.2},
            "pipeline": {"workers": 2},
            "profiles": {"default": {"duplicates": "reuse"}},
        }
        with running(root, config) as daemon:
            seconds = {}
            for copy in ("first", "second"):
                before = {path.name for path in daemon.outbox.iterdir()}
                dropped = time.time()
                for source in sources:  # written under a hidden name, then renamed: as a careful client does
                    hidden = daemon.inbox / f".{copy}-{source.name}"
                    hidden.write_bytes(source.read_bytes())
                    hidden.rename(daemon.inbox / f"{copy}-{source.name}")
                jobs = wait_for_jobs(daemon.outbox, files, timeout=600, daemon=daemon, ignore=before)
                seconds[copy] = [parse_iso(meta["finished_at"]) - dropped for meta in jobs.values()]
                if copy == "second":
                    reused = sum(1 for meta in jobs.values() if meta.get("duplicate_of"))
                    ocred = sum(1 for job, *_ in tesseract_calls(call_log) if job in jobs)
    first, second = median(seconds["first"]), median(seconds["second"])
    return {"first_s": first, "second_s": second, "ratio": second / first, "reused": reused, "ocr_pages": ocred}


def main() -> int:
    bench = Bench(NAME, __doc__, quick="3 files, 1 run")
    bench.sized("--files", int, 8, 3, "files per copy")
    bench.sized("--runs", int, 3, 1, "runs")
    args = bench.parse()
    runs = repeat(args.runs, lambda _: one_run(args.files), lambda r: f"{r['first_s']:.2f} s -> {r['second_s']:.2f} s")
    rows = [
        [n + 1, r["first_s"], r["second_s"], r["ratio"], f"{r['reused']}/{args.files}", r["ocr_pages"]]
        for n, r in enumerate(runs)
    ]
    rows.append(["median", *(median(r[key] for r in runs) for key in ("first_s", "second_s", "ratio")), "", ""])
    print_figures(
        f"{args.files} files of {PAGES} pages, dropped twice (duplicates: reuse); seconds from drop to completed",
        ["run", "first copy s", "second copy s", "ratio", "reused", "OCR pages of 2nd"],
        rows,
    )
    return bench.finish({"files": args.files, "pages": PAGES, "runs": runs})


if __name__ == "__main__":
    sys.exit(main())
