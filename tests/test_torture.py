"""Crash torture: a real daemon SIGKILLed at random moments while it claims and OCRs a batch.

The seed is fixed and printed (override with TORTURE_SEED to explore other schedules).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

from .daemon import Daemon, OutboxReader, drop, tesseract_call_logger, tesseract_calls
from .pdfgen import sample_lines, scanned_pdf, text_pdf

SEED = int(os.environ.get("TORTURE_SEED", "20260107"))
KILLS = 16
TERMINAL = {"completed", "failed", "cancelled"}


def _batch(folder: Path, rng: random.Random) -> list[tuple[Path, str]]:
    """34 PDFs, 1 to 50 pages, about 300 pages: small scans for Tesseract, and born-digital files for
    the `text` engine in the inbox's `digital/` subfolder. [(file, inbox-relative name)]"""
    folder.mkdir()
    sizes = [50, 37, 1, 1, 1] + [rng.randint(1, 12) for _ in range(29)]
    out = []
    for index, pages in enumerate(sizes):
        seed = SEED * 100 + index
        if index % 6 == 5:
            path = text_pdf(folder / f"digital{index:02d}.pdf", [sample_lines(8, seed=seed + p) for p in range(pages)])
            out.append((path, f"digital/{path.name}"))
        else:
            lines = [sample_lines(3, seed=seed + p, max_chars=28) for p in range(pages)]
            path = scanned_pdf(folder / f"scan{index:02d}.pdf", lines, dpi=150, size_in=(3.5, 1.5))
            out.append((path, path.name))
    return out


def _leftovers(daemon: Daemon) -> list[str]:
    found = [str(p) for root in (daemon.inbox, daemon.outbox) for p in root.rglob("*") if ".tmp-" in p.name]
    for folder in (daemon.inbox / ".ocr-watcher" / "claims", daemon.outbox / ".ocr-watcher" / "incoming"):
        found += [str(p) for p in folder.glob("*")] if folder.exists() else []
    internal = daemon.inbox / ".ocr-watcher"
    found += [str(p) for p in daemon.inbox.rglob("*") if p.is_file() and internal not in p.parents]
    return found


def _wait_all_terminal(daemon: Daemon, count: int, timeout: float) -> list[dict]:
    daemon.wait_until(
        lambda: sum(j["status"] in TERMINAL for j in daemon.jobs()) >= count, timeout, f"{count} terminal jobs"
    )
    return daemon.jobs()


def test_kill_9_at_random_moments_loses_nothing_and_redoes_no_finished_page(tmp_path: Path) -> None:
    """Given 34 PDFs (about 300 pages) dropped in waves, when the daemon is killed with SIGKILL at
    random moments 16 times (during start-up, claims, OCR, result writing) and restarted with the same
    worker id each time, then every input is in exactly one completed job, no page is recognised
    again after its page file was written, no page file is rewritten, a reader polling all the while
    never sees invalid metadata.json or a result.md that is not the join of the pages, and no claim,
    staging or temporary file is left."""
    print(f"torture seed {SEED} (set TORTURE_SEED to change)")
    rng = random.Random(SEED)
    wrapper, call_log = tesseract_call_logger(tmp_path / "bin")
    config = {
        "tesseract": {"command": str(wrapper)},
        "profiles": {"digital": {"engine": "text"}},
        "pipeline": {"work_dir": str(tmp_path / "work")},
        "intake": {"max_queued_jobs": 6},
    }
    daemon = Daemon(tmp_path, **config)
    sources = _batch(tmp_path / "sources", rng)
    digests = {hashlib.sha256(path.read_bytes()).hexdigest(): name for path, name in sources}
    assert len(digests) == len(sources)
    waiting = list(sources)
    rng.shuffle(waiting)
    reader = OutboxReader(daemon.outbox)
    reader.start()
    kills: list[str] = []
    try:
        for _ in range(len(waiting) // 2):
            path, name = waiting.pop()
            drop(daemon.inbox, path, name)
        for round_ in range(KILLS):
            during_start = rng.random() < 0.2
            if during_start:  # in recovery: finishing claims, resuming jobs
                daemon.launch()
                delay = rng.uniform(0.3, 2.0)
            else:
                daemon.start()
                delay = rng.uniform(0.1, 5.0)
            time.sleep(delay)
            for _ in range(min(len(waiting), rng.randint(0, 4))):  # claims in flight at the kill
                path, name = waiting.pop()
                drop(daemon.inbox, path, name)
            assert daemon.alive(), f"daemon exited by itself in round {round_}:\n{daemon.log_since_launch()}"
            daemon.kill(signal.SIGKILL)
            done = sum(j["status"] in TERMINAL for j in daemon.jobs())
            kills.append(f"{'start+' if during_start else ''}{delay:.2f}s({done} done)")
        print(f"{len(kills)} kills: {', '.join(kills)}")
        for path, name in waiting:
            drop(daemon.inbox, path, name)
        daemon.start()
        jobs = _wait_all_terminal(daemon, len(sources), timeout=420)
        time.sleep(1.5)  # a duplicate job or a late write would show up now
        jobs = daemon.jobs()
    finally:
        daemon.stop()
        reader.stop()

    # Every input in exactly one completed job.
    by_digest = Counter(job["source"]["sha256"] for job in jobs)
    assert {d: n for d, n in by_digest.items() if n != 1} == {}, "inputs in more than one job"
    assert set(by_digest) == set(digests), "inputs without a job"
    assert {job["source"]["name"]: job["status"] for job in jobs if job["status"] != "completed"} == {}
    total_pages = sum(job["progress"]["pages_total"] for job in jobs)
    for job in jobs:
        pages = sorted((daemon.job_dir(job) / "pages").glob("*.md"))
        assert len(pages) == job["progress"]["pages_total"], job["job_id"]

    # No page recognised again once its page file existed; none rewritten.
    calls = tesseract_calls(call_log)
    assert calls, "the wrapper saw no tesseract call"
    redone = []
    for job_id, page, attempt, when in calls:
        first = reader.page_seen.get((job_id, page))
        written = (daemon.outbox / job_id / "pages" / f"{page:04d}.md").stat().st_mtime_ns
        if first is not None:
            written = min(written, first[0])
        if when * 1e9 > written:
            redone.append(
                f"{job_id} page {page} attempt {attempt}: OCR at {when:.3f}, page written {written / 1e9:.3f}"
            )
    assert redone == []
    per_page = Counter((job_id, page) for job_id, page, _, _ in calls)
    print(
        f"{len(jobs)} jobs, {total_pages} pages, {len(calls)} tesseract calls on {len(per_page)} pages"
        f" ({sum(n - 1 for n in per_page.values())} redone after a kill interrupted them);"
        f" reader: {reader.reads} metadata reads, {reader.results_checked} result checks"
    )
    assert reader.problems == []
    assert reader.results_checked >= len(jobs)
    assert _leftovers(daemon) == []


def test_a_killed_daemon_leaves_no_rendered_pages_behind(tmp_path: Path) -> None:
    """Given a daemon rendering pages into its scratch folder, when it is SIGKILLed mid-job, restarted,
    and stopped after the job completes, then no rendered page image is left in the scratch folder."""
    work = tmp_path / "work"
    daemon = Daemon(tmp_path, pipeline={"workers": 2, "work_dir": str(work)}).start()
    # Full letter pages of text at 300 dpi (~1 s of OCR each): rendered pages wait in the scratch folder.
    pages = [sample_lines(40, seed=s, max_chars=70) for s in range(12)]
    drop(daemon.inbox, scanned_pdf(tmp_path / "twelve.pdf", pages, dpi=300, size_in=(8.5, 11)))
    daemon.wait_until(lambda: any(work.rglob("*.p?m")), 60, "a rendered page in the scratch folder")
    daemon.kill(signal.SIGKILL)
    daemon.start()
    try:
        job = daemon.wait_for_job("twelve.pdf", {"completed", "failed"}, timeout=120)
    finally:
        daemon.stop()
    assert job["status"] == "completed"
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == []
