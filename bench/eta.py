"""How good the ETA is: 20 jobs of known page counts, and the estimate each had against its finish.

    .venv/bin/python bench/eta.py [--quick] [--rounds R]

Per round, into a fresh daemon that has done one 4-page job (as a running service has measured its
pages): 20 image-only PDFs (1 to 12 pages, 80 in all; letter-sized, 24 lines a page, 200 dpi, drawn
by tests/pdfgen.py) are dropped at once; engine tesseract, 2 OCR workers. While they run, every
job's metadata.json and pages/ and the daemon's published estimates (docs/eta.md) are read every
0.1 s. For each job:

- at first page: the first estimate of its finish made after its first page was done (pages/*.json
  written), against its actual `finished_at`, as a share of the time that was left when that
  estimate was made (|estimated - actual| / (actual - made), that time counted as at least 1 s:
  estimates are published every quarter to one second, finished_at within a second); jobs of one
  page, and jobs that ended before such an estimate was published, are left out;
- at claim: the same for the first estimate that had a finish (all jobs): how well a person who
  looks as soon as the job appears is told.

Target: at first page, every job within 25 %. Reported: median and worst per round, and how many jobs
were within 25 %.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Bench,
    median,
    merge,
    parse_iso,
    print_figures,
    read_meta,
    running,
    temp_root,
    wait_for_jobs,
)

from ocr_watcher.eta.published import QueueFiles  # noqa: E402
from ocr_watcher.spool.layout import OutboxLayout  # noqa: E402
from tests.pdfgen import sample_lines, scanned_pdf  # noqa: E402

NAME = "eta"
SIZES = [1, 3, 8, 2, 5, 1, 12, 4, 2, 6, 1, 3, 9, 2, 1, 4, 7, 2, 3, 4]
TARGET = 0.25
FLOOR_SECONDS = 1.0
WARM_PAGES = 4  # one job first, as a daemon that has been running has measured its pages
PAGE_INCHES, DPI, LINES = (8.5, 11.0), 200, 24  # letter-sized scans with a page of text: ~1 s of OCR each
TERMINAL = {"completed", "failed", "cancelled"}
CONFIG = {
    "engine": "tesseract",
    "intake": {"settle_seconds": 0.2, "poll_interval_seconds": 0.2, "max_queued_jobs": 32},
    "pipeline": {"workers": 2},
}


def make_jobs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for n, pages in enumerate(SIZES):
        lines = [sample_lines(LINES, seed=100 * n + p, max_chars=60) for p in range(pages)]
        made.append(scanned_pdf(folder / f"job{n:02d}-{pages}p.pdf", lines, dpi=DPI, size_in=PAGE_INCHES))
    return made


def one_round(extra: dict) -> dict:
    with temp_root(NAME) as root:
        sources = make_jobs(root / "stage")
        warm = scanned_pdf(
            root / "warm.pdf",
            [sample_lines(LINES, seed=p, max_chars=60) for p in range(WARM_PAGES)],
            dpi=DPI,
            size_in=PAGE_INCHES,
        )
        with running(root, merge(CONFIG, extra)) as daemon:
            warm.rename(daemon.inbox / warm.name)
            wait_for_jobs(daemon.outbox, 1, timeout=300, daemon=daemon)
            ignore = {path.name for path in daemon.outbox.iterdir()}
            dropped_at = time.time()
            for source in sources:
                source.rename(daemon.inbox / source.name)
            estimates = QueueFiles(OutboxLayout(daemon.outbox))
            at_claim: dict[str, tuple[float, float]] = {}  # job -> (when read, estimated finish)
            at_first: dict[str, tuple[float, float]] = {}
            first_page: dict[str, float] = {}  # job -> when its first page was written
            last_page: dict[str, float | None] = {}  # and its last
            finished: dict[str, dict] = {}
            deadline = time.monotonic() + 900
            while len(finished) < len(sources) and time.monotonic() < deadline:
                daemon.check_alive()
                for job_dir in daemon.outbox.iterdir():
                    if job_dir.name.startswith(".") or job_dir.name in finished or job_dir.name in ignore:
                        continue
                    meta = read_meta(job_dir)
                    if meta is None:
                        continue
                    if meta["status"] in TERMINAL:
                        finished[job_dir.name] = meta
                        pages_written = [p.stat().st_mtime for p in (job_dir / "pages").glob("*.json")]
                        last_page[job_dir.name] = max(pages_written, default=None)
                        continue
                    now = time.time()
                    eta = estimates.eta(meta["worker"]["id"], job_dir.name, now)
                    if eta is None or eta["estimated_finish"] is None:
                        continue
                    guess = (parse_iso(eta["computed_at"]), parse_iso(eta["estimated_finish"]))  # when it was made
                    at_claim.setdefault(job_dir.name, guess)
                    if job_dir.name not in first_page:
                        done = [p.stat().st_mtime for p in (job_dir / "pages").glob("*.json")]
                        if done:
                            first_page[job_dir.name] = min(done)
                    if job_dir.name in first_page and guess[0] >= first_page[job_dir.name]:
                        at_first.setdefault(job_dir.name, guess)  # the first made after that page
                time.sleep(0.1)
    rows = []
    for job_id, meta in finished.items():
        actual = parse_iso(meta["finished_at"])
        pages = meta["progress"]["pages_total"]
        rows.append(
            {
                "job": meta["source"]["name"],
                "pages": pages,
                "status": meta["status"],
                "error_at_claim": error(at_claim.get(job_id), actual),
                "error_at_first_page": error(at_first.get(job_id), actual) if pages and pages > 1 else None,
                # seconds from the drop: for a look at where an estimate went wrong
                "first_page_s": _since(first_page.get(job_id), dropped_at),
                "estimate_made_s": _since((at_first.get(job_id) or (None, None))[0], dropped_at),
                "estimated_finish_s": _since((at_first.get(job_id) or (None, None))[1], dropped_at),
                "finished_s": _since(actual, dropped_at),
                "last_page_s": _since(last_page.get(job_id), dropped_at),
            }
        )
    return {"jobs": rows}


def _since(moment: float | None, start: float) -> float | None:
    return None if moment is None else round(moment - start, 2)


def error(guess: tuple[float, float] | None, actual: float) -> float | None:
    """(estimated - actual) as a share of the time left when the estimate was made (> 0: too late),
    that time counted as at least FLOOR_SECONDS: the estimates are published every quarter to one
    second and finished_at is written within a second, so a shorter wait cannot be judged finer."""
    if guess is None:
        return None
    return (guess[1] - actual) / max(FLOOR_SECONDS, actual - guess[0])


def summary(signed: list[float]) -> list:
    if not signed:
        return ["-", "-", "0/0"]
    errors = [abs(e) for e in signed]
    within = sum(1 for e in errors if e <= TARGET)
    return [median(errors), max(signed, key=abs), f"{within}/{len(errors)}"]


def main() -> int:
    bench = Bench(NAME, __doc__, quick="1 round", sets=True)
    bench.sized("--rounds", int, 3, 1, "rounds (a fresh daemon each)")
    args = bench.parse()
    rounds = []
    table = []
    for index in range(args.rounds):
        result = one_round(args.extra)
        rounds.append(result)
        first = [j["error_at_first_page"] for j in result["jobs"] if j["error_at_first_page"] is not None]
        claim = [j["error_at_claim"] for j in result["jobs"] if j["error_at_claim"] is not None]
        table.append([index + 1, *summary(first), *summary(claim)])
        print(f"  round {index + 1}/{args.rounds}: first page {summary(first)}, claim {summary(claim)}", flush=True)
    print_figures(
        f"eta: {len(SIZES)} jobs ({sum(SIZES)} pages) dropped at once, engine tesseract, 2 workers",
        ["round", "first page: median", "worst", f"within {TARGET:.0%}", "claim: median", "worst", "within"],
        table,
    )
    print("error = |estimated finish - actual finish| / time left when the estimate was made (at least 1 s);")
    print("  worst: signed, > 0 late")
    every = [j for r in rounds for j in r["jobs"]]
    for job in sorted(every, key=lambda j: -abs(j["error_at_first_page"] or 0))[:5]:
        print(f"  worst: {job['job']}: at first page {job['error_at_first_page']}, at claim {job['error_at_claim']}")
    return bench.finish({"quick": args.quick, "target": TARGET, "sizes": SIZES, "rounds": rounds})


if __name__ == "__main__":
    sys.exit(main())
