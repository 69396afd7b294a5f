"""End to end: a real daemon subprocess, real folders, real Tesseract OCR on real rendered pages."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from .daemon import Daemon, OutboxReader, drop
from .pdfgen import cer, encrypted_pdf, sample_lines, scan_with_slow_page, scanned_pdf, text_pdf, truncated


def _page_texts(job_dir: Path) -> list[str]:
    return [p.read_text() for p in sorted((job_dir / "pages").glob("*.md"))]


def test_scanned_and_born_digital_pdfs_become_markdown(tmp_path: Path) -> None:
    """Given a running daemon, when an image-only 3-page PDF and a born-digital PDF are dropped,
    then both complete with the text recognised, and metadata.json goes queued -> processing -> completed."""
    daemon = Daemon(tmp_path).start()
    reader = OutboxReader(daemon.outbox)
    reader.start()
    try:
        pages = [sample_lines(6, seed=s) for s in range(3)]
        scanned = scanned_pdf(tmp_path / "scan.pdf", pages)
        digital = text_pdf(tmp_path / "digital.pdf", [sample_lines(8, seed=10), sample_lines(8, seed=11)])
        drop(daemon.inbox, scanned)
        drop(daemon.inbox, digital)
        scan_job = daemon.wait_for_job("scan.pdf", {"completed", "failed"})
        digital_job = daemon.wait_for_job("digital.pdf", {"completed", "failed"})
    finally:
        reader.stop()
        daemon.stop()

    for job, source, expected_pages in ((scan_job, scanned, pages), (digital_job, digital, None)):
        assert job["status"] == "completed", job
        assert [h["status"] for h in job["history"]] == ["queued", "processing", "completed"]
        assert job["progress"]["percent"] == 100.0
        assert job["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        job_dir = daemon.job_dir(job)
        assert (job_dir / "input.pdf").read_bytes() == source.read_bytes()
        assert not (daemon.inbox / source.name).exists()
        result_meta = json.loads((job_dir / "result_metadata.json").read_text())
        assert [p["page"] for p in result_meta["pages"]] == list(range(1, job["progress"]["pages_total"] + 1))
        assert result_meta["engine"] == "tesseract"
        if expected_pages:
            texts = _page_texts(job_dir)
            assert len(texts) == 3
            for want, got in zip(expected_pages, texts, strict=True):
                assert cer("\n".join(want), got) < 0.05, (want, got)
    result = (daemon.job_dir(scan_job) / "result.md").read_text()
    assert result.count("<!-- page ") == 3 and "<!-- page 3 of 3 -->" in result
    # The reader saw every state and never a broken file.
    assert reader.problems == []
    assert reader.reads > 10
    assert reader.statuses[scan_job["job_id"]][-1] == "completed"


def test_a_file_written_slowly_is_claimed_only_when_complete(tmp_path: Path) -> None:
    """Given a settle time of 0.5 s, when a PDF is written in chunks with pauses both shorter and
    longer than the settle time, then it is not claimed before its last byte, and the job holds all of it."""
    daemon = Daemon(tmp_path, intake={"invalid_timeout_seconds": 30}).start()
    try:
        source = text_pdf(tmp_path / "slow.pdf", [sample_lines(30, seed=s) for s in range(6)])
        data = source.read_bytes()
        target = daemon.inbox / "slow.pdf"
        step = len(data) // 8
        chunks = [data[i * step : (i + 1) * step if i < 7 else len(data)] for i in range(8)]
        with open(target, "wb") as fh:
            for index, chunk in enumerate(chunks):
                fh.write(chunk)
                fh.flush()
                if index == len(chunks) - 1:
                    break
                time.sleep(1.2 if index % 2 else 0.3)
                assert target.exists(), f"claimed after chunk {index + 1} of {len(chunks)}"
                assert daemon.job_for("slow.pdf") is None
        job = daemon.wait_for_job("slow.pdf", {"completed", "failed"})
    finally:
        daemon.stop()
    assert job["status"] == "completed"
    assert job["source"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_kill_9_mid_job_resumes_without_redoing_pages(tmp_path: Path) -> None:
    """Given a 20-page job, when the daemon is killed with SIGKILL after some pages and restarted,
    then the job completes and the pages written before the kill were not OCRed again."""
    daemon = Daemon(tmp_path, pipeline={"workers": 1}).start()
    source = scanned_pdf(tmp_path / "twenty.pdf", [sample_lines(4, seed=s) for s in range(20)])
    drop(daemon.inbox, source)
    pages_dir: list[Path] = []

    def some_pages_done() -> bool:
        job = daemon.job_for("twenty.pdf")
        if job is None:
            return False
        pages_dir[:] = [daemon.job_dir(job) / "pages"]
        return len(list(pages_dir[0].glob("*.md"))) >= 4

    daemon.wait_until(some_pages_done, 120, "4 pages done")
    daemon.kill(signal.SIGKILL)
    before = {p.name: p.stat().st_mtime_ns for p in pages_dir[0].glob("*.md")}
    first_session = {json.loads(p.read_text())["session"] for p in pages_dir[0].glob("*.json")}
    assert len(before) >= 4 and len(first_session) == 1

    restarted = Daemon(tmp_path).start()  # same worker id: resumes its own job at once
    try:
        job = restarted.wait_for_job("twenty.pdf", {"completed", "failed"}, timeout=180)
    finally:
        restarted.stop()
    assert job["status"] == "completed"
    result_meta = json.loads((restarted.job_dir(job) / "result_metadata.json").read_text())
    by_page = {p["page"]: p for p in result_meta["pages"]}
    assert sorted(by_page) == list(range(1, 21))
    for name, mtime in before.items():
        page = int(name.split(".")[0])
        assert by_page[page]["session"] in first_session, f"page {page} was OCRed again"
        assert (pages_dir[0] / name).stat().st_mtime_ns == mtime
    later_sessions = {p["session"] for p in by_page.values()} - first_session
    assert len(later_sessions) == 1, "the pages after the kill come from the restarted daemon"
    assert sum(1 for p in by_page.values() if p["session"] in later_sessions) == 20 - len(before)


def test_two_daemons_claim_each_of_200_files_exactly_once(tmp_path: Path) -> None:
    """Given two daemons with their own worker ids on one inbox and outbox, when 200 files are
    dropped at once, then there are exactly 200 jobs, one per file, all completed."""
    config = {"engine": "text", "intake": {"max_queued_jobs": 4}}
    first = Daemon(tmp_path, "alpha", **config).start()
    second = Daemon(tmp_path, "beta", **config).start()
    staging = tmp_path / "staging"
    staging.mkdir()
    digests = set()
    try:
        for index in range(200):
            path = text_pdf(staging / f"doc{index:03d}.pdf", [[f"Document number {index}"]])
            digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(staging.iterdir()):  # all at once: renames into the inbox
            os.rename(path, first.inbox / path.name)
        first.wait_until(
            lambda: sum(j["status"] == "completed" for j in first.jobs()) >= 200, 240, "200 completed jobs"
        )
        time.sleep(1.0)  # anything extra would show up now
        jobs = first.jobs()
    finally:
        first.stop()
        second.stop()
    assert len(jobs) == 200
    assert {j["source"]["sha256"] for j in jobs} == digests
    assert {j["status"] for j in jobs} == {"completed"}
    workers = {j["worker"]["id"] for j in jobs}
    assert workers == {"alpha", "beta"}, "both daemons took a share"
    assert list(first.inbox.iterdir()) == [first.inbox / ".ocr-watcher"]
    assert list((first.inbox / ".ocr-watcher" / "claims").iterdir()) == []
    for job in jobs:
        assert (
            f"Document number {job['source']['name'][3:6].lstrip('0') or '0'}"
            in (first.job_dir(job) / "result.md").read_text()
        )


def test_cancel_and_retry(tmp_path: Path) -> None:
    """Given a running 20-page job, when it is cancelled with the CLI, then it stops as cancelled with
    its pages kept; when retried, it goes back to queued and completes without redoing those pages."""
    daemon = Daemon(tmp_path, pipeline={"workers": 1}).start()
    try:
        drop(daemon.inbox, scan_with_slow_page(tmp_path / "long.pdf", 2, 17))  # 20 pages
        job = daemon.wait_for_job("long.pdf", {"processing"})
        daemon.wait_until(lambda: daemon.job_for("long.pdf")["progress"]["pages_done"] >= 2, 60, "2 pages")
        result = daemon.cli("cancel", job["job_id"][:12])
        assert result.returncode == 0, result.stderr
        cancelled = daemon.wait_for_job("long.pdf", {"cancelled"}, timeout=30)
        assert cancelled["error"]["type"] == "cancelled"
        assert not (daemon.job_dir(job) / "result.md").exists()
        time.sleep(1.0)
        kept = {p.name: p.stat().st_mtime_ns for p in (daemon.job_dir(job) / "pages").glob("*.md")}
        assert 2 <= len(kept) < 20
        assert daemon.job_for("long.pdf")["status"] == "cancelled", "nothing ran on after the cancel"

        result = daemon.cli("retry", job["job_id"][:12])
        assert result.returncode == 0, result.stderr
        done = daemon.wait_for_job("long.pdf", {"completed", "failed"}, timeout=180)
    finally:
        daemon.stop()
    assert done["status"] == "completed"
    assert done["attempts"] == 2
    assert [h["status"] for h in done["history"]] == [
        "queued",
        "processing",
        "cancelled",
        "queued",
        "processing",
        "completed",
    ]
    for name, mtime in kept.items():
        assert (daemon.job_dir(job) / "pages" / name).stat().st_mtime_ns == mtime


def test_bad_inputs_fail_clearly_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    """Given a running daemon, when an unsupported file, an encrypted PDF, a zero-byte file, a
    truncated PDF and random bytes named .pdf are dropped, then each ends failed with a clear error,
    the original stays in its job folder, and a good file dropped afterwards still completes."""
    daemon = Daemon(tmp_path, engine="text").start()
    good = text_pdf(tmp_path / "good.pdf", [sample_lines(5, seed=1)])
    try:
        (daemon.inbox / "notes.docx").write_bytes(b"PK\x03\x04" + os.urandom(2000))
        drop(daemon.inbox, encrypted_pdf(good, tmp_path / "locked.pdf"))
        (daemon.inbox / "empty.pdf").write_bytes(b"")
        drop(daemon.inbox, truncated(text_pdf(tmp_path / "big.pdf", [sample_lines(40)] * 5), tmp_path / "cut.pdf", 0.5))
        (daemon.inbox / "random.pdf").write_bytes(os.urandom(5000))
        expected = {
            "notes.docx": ("unsupported_type", "ZIP archive"),
            "locked.pdf": ("password_required", "password"),
            "empty.pdf": ("empty_file", "empty"),
            "cut.pdf": ("truncated_pdf", "truncated"),
            "random.pdf": ("not_a_pdf", "not a PDF"),
        }
        results = {name: daemon.wait_for_job(name, {"failed", "completed"}, timeout=60) for name in expected}
        drop(daemon.inbox, good)
        good_job = daemon.wait_for_job("good.pdf", {"completed", "failed"}, timeout=60)
        assert daemon.alive()
    finally:
        daemon.stop()
    for name, (error_type, words) in expected.items():
        job = results[name]
        assert job["status"] == "failed", (name, job)
        assert job["error"]["type"] == error_type, (name, job["error"])
        assert words.lower() in job["error"]["message"].lower(), (name, job["error"])
        inputs = [p for p in daemon.job_dir(job).iterdir() if p.name.startswith("input")]
        assert len(inputs) == 1, f"{name}: the original must stay in the job folder"
    assert (daemon.job_dir(results["notes.docx"]) / "input.docx").exists()
    assert good_job["status"] == "completed"


def test_a_small_job_is_not_stuck_behind_a_large_one(tmp_path: Path) -> None:
    """Given a 40-page job being processed, when a 1-page job is dropped, then the 1-page job
    completes while most of the 40 pages are still to do."""
    daemon = Daemon(tmp_path).start()
    try:
        # Letter pages of 12 lines (~0.3 s each to read): the OCR workers read the small pages of the
        # other tests in ~40 ms, so 40 of those would be done before the small job is even claimed.
        pages = [sample_lines(12, seed=s) for s in range(40)]
        drop(daemon.inbox, scanned_pdf(tmp_path / "large.pdf", pages, size_in=(8.5, 11.0)))
        daemon.wait_until(
            lambda: (daemon.job_for("large.pdf") or {}).get("progress", {}).get("pages_done", 0) >= 2,
            60,
            "the large job to be under way",
        )
        drop(daemon.inbox, scanned_pdf(tmp_path / "small.pdf", [sample_lines(4, seed=99)]))
        # Counted from the small job's claim, not its drop: the inbox's wait for a finished file is
        # not the scheduler's doing (from the drop, 22 of 40 pages were once done on a slow machine).
        daemon.wait_for_job("small.pdf", {"queued", "processing", "completed"}, timeout=60)
        at_claim = daemon.job_for("large.pdf")["progress"]["pages_done"]
        daemon.wait_for_job("small.pdf", {"completed"}, timeout=60)
        large = daemon.job_for("large.pdf")
    finally:
        daemon.stop()
    assert large["status"] == "processing"
    assert large["progress"]["pages_done"] - at_claim <= 20 - 2, (at_claim, large["progress"])


@pytest.mark.parametrize("bad_key", ["settle_seconds: -1", "setle_seconds: 3"])
def test_run_refuses_a_bad_config_with_exit_78(tmp_path: Path, bad_key: str) -> None:
    """A daemon with a broken config does not start: exit 78 (EX_CONFIG) and the key named."""
    daemon = Daemon(tmp_path)
    daemon.config_path.write_text(daemon.config_path.read_text() + f"\nintake:\n  {bad_key}\n")
    result = daemon.cli("check-config")
    assert result.returncode == 78
    assert "intake." + bad_key.split(":")[0] in result.stderr
