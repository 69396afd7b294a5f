"""An inbox on a network share, as the daemon sees one: no inotify events for what other hosts
write, so polling alone must find files, and readiness must hold against slow, paused writers,
renames, odd modification times and whole folders arriving at once."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from .daemon import Daemon
from .pdfgen import sample_lines, text_pdf

POLL, SETTLE = 0.3, 0.5
SHARE = {
    "engine": "text",
    # invalid_timeout: a copy that pauses longer than settle is not complete yet; it must not be
    # failed for being truncated either (the pauses here stay well inside this limit).
    "intake": {
        "use_inotify": False,
        "poll_interval_seconds": POLL,
        "settle_seconds": SETTLE,
        "invalid_timeout_seconds": 30.0,
    },
}
PAUSE = 3 * (POLL + SETTLE)  # a stalled writer: the file looks settled several times over


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jobs_for(daemon: Daemon, name: str) -> list[dict]:
    return [job for job in daemon.jobs() if job["source"]["name"] == name]


@pytest.mark.parametrize("preallocate", [False, True], ids=["appending", "preallocated"])
def test_a_slow_chunked_copy_is_claimed_only_once_complete(tmp_path: Path, preallocate: bool) -> None:
    """Given polling only, when a 30-page PDF is written straight into the inbox in 5 chunks with
    pauses longer than poll interval + settle (appending, or into a file first extended to its full
    size, as some SMB clients do), then nothing is claimed while it is incomplete, and once complete it
    becomes one job holding exactly the bytes written, all 30 pages done."""
    daemon = Daemon(tmp_path, **SHARE).start()
    data = text_pdf(tmp_path / "big.pdf", [[f"Page {n} of the slow copy", *sample_lines(3, seed=n)] for n in range(30)])
    data = data.read_bytes()
    target = daemon.inbox / "big.pdf"
    chunks = [data[i : i + len(data) // 5 + 1] for i in range(0, len(data), len(data) // 5 + 1)]
    try:
        with open(target, "wb") as fh:
            if preallocate:
                fh.truncate(len(data))
            fh.flush()
            time.sleep(PAUSE)  # created (empty, or all zeros), then nothing for a while
            for index, chunk in enumerate(chunks, start=1):
                fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
                if index == len(chunks):
                    break  # complete now: the writer closes it at once
                time.sleep(PAUSE)
                assert target.exists(), f"claimed after chunk {index} of {len(chunks)}, before the copy was complete"
                assert _jobs_for(daemon, "big.pdf") == []
        job = daemon.wait_for_job("big.pdf", {"completed", "failed"}, timeout=60)
        time.sleep(1.0)
    finally:
        daemon.stop()
    assert job["status"] == "completed", job["error"]
    assert job["source"]["sha256"] == _sha256(data) and job["source"]["size"] == len(data)
    assert job["progress"]["pages_total"] == 30 and job["progress"]["pages_done"] == 30
    assert len(daemon.jobs()) == 1 and not target.exists()
    assert "Page 29 of the slow copy" in (daemon.job_dir(job) / "result.md").read_text()


def test_renames_odd_mtimes_and_a_folder_of_50_are_each_handled_once(tmp_path: Path) -> None:
    """Given two daemons polling one inbox (two hosts on a share), when a file is renamed into the
    inbox, one with an mtime a year in the future and one from 1985 are dropped, and a folder of 50
    files arrives with one rename, then each of the 53 files becomes exactly one completed job."""
    first = Daemon(tmp_path, "first", **SHARE)
    second = Daemon(tmp_path, "second", inbox=first.inbox, outbox=first.outbox, **SHARE)
    outside = tmp_path / "outside"
    outside.mkdir()
    expected: dict[str, str] = {}  # sha256 -> name

    def make(path: Path, text: str) -> Path:
        text_pdf(path, [[text, *sample_lines(2, seed=len(expected))]])
        expected[_sha256(path.read_bytes())] = path.name
        return path

    try:
        first.start()
        second.start()
        os.rename(make(outside / "renamed.pdf", "Renamed into the inbox"), first.inbox / "renamed.pdf")
        future = make(outside / "future.pdf", "From the future")
        os.utime(future, (time.time() + 365 * 86400, time.time() + 365 * 86400))
        past = make(outside / "past.pdf", "From 1985")
        os.utime(past, (481_000_000, 481_000_000))
        os.rename(future, first.inbox / "future.pdf")
        os.rename(past, first.inbox / "past.pdf")
        batch = outside / "batch"
        batch.mkdir()
        for index in range(50):
            make(batch / f"b{index:02d}.pdf", f"Batch file {index}")
        os.rename(batch, first.inbox / "batch")

        def all_done() -> bool:
            jobs = first.jobs()
            return len(jobs) >= 53 and all(j["status"] in {"completed", "failed"} for j in jobs)

        first.wait_until(all_done, 90, "53 jobs")
        time.sleep(2 * (POLL + SETTLE))  # a second job for any file would have appeared by now
        assert first.alive() and second.alive()
    finally:
        first.stop()
        second.stop()
    jobs = first.jobs()
    assert len(jobs) == 53
    assert sorted(j["source"]["sha256"] for j in jobs) == sorted(expected), "each file exactly once"
    assert [j["source"]["name"] for j in jobs if j["status"] != "completed"] == []
    by_name = {j["source"]["name"]: j for j in jobs}
    assert by_name["b07.pdf"]["source"]["inbox_path"] == "batch/b07.pdf"
    assert "From the future" in (first.job_dir(by_name["future.pdf"]) / "result.md").read_text()
    assert "From 1985" in (first.job_dir(by_name["past.pdf"]) / "result.md").read_text()
    left = [p for p in first.inbox.rglob("*") if p.is_file() and ".ocr-watcher" not in p.parts]
    assert left == []
    assert {j["worker"]["id"] for j in jobs} <= {"first", "second"}
