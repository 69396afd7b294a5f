"""Signals sent to a real daemon subprocess: SIGTERM stops gracefully and the job resumes, SIGHUP
reloads the configuration without dropping work (or refuses a broken one), a second SIGINT leaves
at once; and the log format journald gets."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from ocr_watcher.config import DEFAULT_IGNORE

from .daemon import Daemon, drop
from .pdfgen import sample_lines, scan_with_slow_page, scanned_pdf, slow_pdf, text_pdf


def _rewrite_config(daemon: Daemon, **changes: object) -> None:
    tree = yaml.safe_load(daemon.config_path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    daemon.config_path.write_text(yaml.safe_dump(tree))


def _pages_on_disk(job_dir: Path) -> dict[int, str]:
    """page number -> the session (daemon run) that OCRed it."""
    return {int(p.stem): json.loads(p.read_text())["session"] for p in (job_dir / "pages").glob("*.json")}


def test_sigterm_checkpoints_a_running_job_and_a_restart_finishes_it(tmp_path: Path) -> None:
    """Given a 21-page scan being OCRed, when the daemon gets SIGTERM, then it exits 0 with the job's
    state written (processing, owned by this worker, progress matching the pages on disk); started
    again, it resumes the job, completes it, and OCRs none of the pages done before the stop again."""
    daemon = Daemon(tmp_path, pipeline={"workers": 1}).start()
    drop(daemon.inbox, scan_with_slow_page(tmp_path / "long.pdf", 20))
    daemon.wait_until(
        lambda: (daemon.job_for("long.pdf") or {}).get("progress", {}).get("pages_done", 0) >= 2, 60, "2 pages"
    )
    daemon.proc.send_signal(signal.SIGTERM)
    returncode = daemon.proc.wait(timeout=60)  # TimeoutStopSec in the units
    assert returncode == 0
    stopped = daemon.job_for("long.pdf")
    job_dir = daemon.job_dir(stopped)
    before = _pages_on_disk(job_dir)
    assert stopped["status"] == "processing"
    assert stopped["worker"]["id"] == "d1" and stopped["worker"]["pid"] == daemon.proc.pid
    assert stopped["progress"]["pages_done"] == len(before) < 21, "metadata.json records every finished page"
    assert "stopped; 1 unfinished jobs will resume on the next start" in daemon.log()

    restarted = Daemon(tmp_path).start()  # same worker id: its own job, resumed at once
    try:
        finished = restarted.wait_for_job("long.pdf", {"completed", "failed"}, timeout=120)
    finally:
        assert restarted.stop() == 0
    assert finished["status"] == "completed" and finished["attempts"] == stopped["attempts"]
    after = _pages_on_disk(job_dir)
    assert sorted(after) == list(range(1, 22))
    assert {page: after[page] for page in before} == before, "pages done before SIGTERM were not OCRed again"
    job_id = finished["job_id"]
    log = restarted.log()
    for line in (f"{job_id}: claimed long.pdf as queued", f"{job_id}: processing, 21 pages (0 already done)"):
        assert line in log, line
    assert f"{job_id}: resuming (processing, {len(before)} pages done)" in log
    assert f"{job_id}: completed (pages 21/21)" in log


def test_sighup_applies_new_ignore_rules_without_dropping_the_running_job(tmp_path: Path) -> None:
    """Given a job in progress, when the config file gains an ignore pattern (and, by mistake, a new
    outbox) and the daemon gets SIGHUP, then a file matching the new pattern is left alone while
    another is processed, the outbox stays where it was with a warning naming the key, and the
    running job completes in the same daemon session as if nothing happened."""
    daemon = Daemon(tmp_path, pipeline={"workers": 1}).start()
    try:
        drop(daemon.inbox, scan_with_slow_page(tmp_path / "long.pdf", 12))
        daemon.wait_for_job("long.pdf", {"processing"})
        _rewrite_config(daemon, intake__ignore=[*DEFAULT_IGNORE, "*.draft.pdf"], outbox=str(tmp_path / "elsewhere"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_until(lambda: "configuration reloaded" in daemon.log(), 30, "the reload")
        drop(daemon.inbox, text_pdf(tmp_path / "notes.draft.pdf", [["Not yet"]]))
        drop(daemon.inbox, text_pdf(tmp_path / "final.pdf", [["Ready now"]]))
        assert daemon.wait_for_job("final.pdf", {"completed", "failed"})["status"] == "completed"
        long_job = daemon.wait_for_job("long.pdf", {"completed", "failed"}, timeout=120)
        time.sleep(1.0)  # more poll intervals (0.3 s) for the draft to be (wrongly) claimed
    finally:
        assert daemon.stop() == 0
    assert (daemon.inbox / "notes.draft.pdf").exists()
    assert daemon.job_for("notes.draft.pdf") is None
    assert long_job["status"] == "completed" and long_job["attempts"] == 1
    assert len(set(_pages_on_disk(daemon.job_dir(long_job)).values())) == 1, "one session did every page"
    log = daemon.log()
    assert log.index("configuration reloaded") < log.index(f"{long_job['job_id']}: completed"), "reloaded mid-job"
    assert re.search(r"configuration reloaded from \S+: intake\.ignore$", log, re.MULTILINE), log
    assert "reload: outbox is" in log and "cannot change while the daemon runs" in log
    assert not (tmp_path / "elsewhere").exists()


def _page_widths(job_dir: Path) -> dict[int, int]:
    return {int(p.stem): json.loads(p.read_text())["width"] for p in (job_dir / "pages").glob("*.json")}


def test_a_reload_that_changes_the_resolution_leaves_a_running_job_as_it_began(tmp_path: Path) -> None:
    """Given a 9-page scan being OCRed at 100 dpi, when the config changes the profile's resolution to
    150 dpi and the daemon gets SIGHUP, then every page of that job is still rendered at 100 dpi (its
    settings were fixed at its claim and recorded in metadata.json), while a file dropped after the
    reload is done at 150 dpi. (Before, the job's later pages switched to the new value.)"""
    daemon = Daemon(tmp_path, pipeline={"workers": 1}, profiles={"default": {"dpi": 100}}).start()
    try:
        drop(daemon.inbox, scan_with_slow_page(tmp_path / "long.pdf", 8, shapes=6000))
        daemon.wait_until(
            lambda: (daemon.job_for("long.pdf") or {}).get("progress", {}).get("pages_done", 0) >= 1, 60, "a page"
        )
        _rewrite_config(daemon, profiles__default__dpi=150)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_until(lambda: "configuration reloaded" in daemon.log(), 30, "the reload")
        drop(daemon.inbox, scanned_pdf(tmp_path / "after.pdf", [sample_lines(4, seed=99)]))
        long_job = daemon.wait_for_job("long.pdf", {"completed", "failed"}, timeout=120)
        after = daemon.wait_for_job("after.pdf", {"completed", "failed"}, timeout=60)
    finally:
        assert daemon.stop() == 0
    assert long_job["status"] == after["status"] == "completed"
    log = daemon.log()
    assert log.index("configuration reloaded") < log.index(f"{long_job['job_id']}: completed"), "reloaded mid-job"
    assert {k: v for k, v in long_job["engine"].items() if v} == {"kind": "tesseract", "language": "eng", "dpi": 100}
    assert after["engine"]["dpi"] == 150
    widths = _page_widths(daemon.job_dir(long_job))
    assert sorted(widths) == list(range(1, 10)) and len({widths[page] for page in range(1, 9)}) == 1, widths
    assert widths[9] == round(612 / 72 * 100), "the last page (8.5 in wide) at 100 dpi too"
    (after_width,) = _page_widths(daemon.job_dir(after)).values()
    assert after_width == round(widths[1] * 1.5), "the same page size at 150 instead of 100 dpi"


@pytest.mark.parametrize(
    ("broken", "key"),
    [
        ({"intake__ignore": ["*.pdf"], "intake__poll_interval_seconds": "often"}, "intake.poll_interval_seconds"),
        ({"intake__ignore": ["*.pdf"], "pipeline__page_retires": 3}, "pipeline.page_retires"),
    ],
    ids=["bad-value", "unknown-key"],
)
def test_sighup_with_a_broken_config_keeps_the_running_one(tmp_path: Path, broken: dict, key: str) -> None:
    """Given a running daemon, when its config file is broken (and would also ignore every PDF) and
    it gets SIGHUP, then the log says the reload was refused naming the key, and the daemon keeps
    serving with the configuration it had: a PDF dropped afterwards is processed."""
    daemon = Daemon(tmp_path, engine="text").start()
    try:
        _rewrite_config(daemon, **broken)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_until(lambda: "reload refused" in daemon.log(), 30, "the reload to be refused")
        drop(daemon.inbox, text_pdf(tmp_path / "after.pdf", [["Still served"]]))
        assert daemon.wait_for_job("after.pdf", {"completed", "failed"})["status"] == "completed"
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0
    refused = next(line for line in daemon.log().splitlines() if "reload refused" in line)
    assert "ERROR" in refused and key in refused, refused
    assert "configuration reloaded" not in daemon.log()


def test_a_second_sigint_leaves_at_once(tmp_path: Path) -> None:
    """Given a page that takes long to render and a long shutdown grace, when SIGINT starts the
    graceful stop, then a second SIGINT (Ctrl-C twice) ends the daemon at once with 130; the job's
    metadata.json stays valid, so the next start resumes it."""
    daemon = Daemon(tmp_path, pipeline={"workers": 1, "shutdown_grace_seconds": 120}).start()
    children: list[int] = []
    try:
        drop(daemon.inbox, slow_pdf(tmp_path / "slow.pdf", shapes=3000))
        daemon.wait_for_job("slow.pdf", {"processing"})
        time.sleep(0.5)  # page 1 is rendering now
        daemon.proc.send_signal(signal.SIGINT)
        daemon.wait_until(lambda: "stopping: no new claims" in daemon.log(), 30, "the graceful stop to begin")
        children = _children(daemon.proc.pid)
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGINT)
        returncode = daemon.proc.wait(timeout=60)
        waited = time.monotonic() - started
    finally:
        daemon.stop()
        for pid in children:  # the render worker would finish its page, then see EOF; no need to wait
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert returncode == 130
    assert waited < 30, "left without waiting for the 120 s grace"
    assert "second interrupt, exiting now" in daemon.log()
    assert daemon.job_for("slow.pdf")["status"] == "processing"


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return pids


@pytest.mark.parametrize("journald", [True, False], ids=["journald", "terminal"])
def test_log_lines_have_timestamps_unless_journald_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journald: bool
) -> None:
    """journald stamps each line itself and sets JOURNAL_STREAM for the services it reads; a
    terminal or a log file needs the daemon's own timestamps."""
    if journald:
        monkeypatch.setenv("JOURNAL_STREAM", "8:123456")
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    daemon = Daemon(tmp_path, engine="text").start()
    assert daemon.stop() == 0
    lines = [line for line in daemon.log().splitlines() if re.search(r"\b(DEBUG|INFO|WARNING|ERROR) ocr_watcher", line)]
    assert any("ocr-watcher started" in line for line in lines) and any("stopped;" in line for line in lines)
    stamped = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
    for line in lines:
        if journald:
            assert re.match(r"^(DEBUG|INFO|WARNING|ERROR) ocr_watcher", line), line
        else:
            assert stamped.match(line), line
