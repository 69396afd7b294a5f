"""Storage faults under the outbox: a full filesystem and a read-only one (a tmpfs we mount; the
tests run as root). Whatever happens, every metadata.json parses; the job waits while the outbox
cannot be written and resumes when it can; the error is visible in the log and /readyz. (More paths
of a job's life under faults: tests/test_storage_recovery.py.)"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.daemon import Daemon, drop
from tests.pdfgen import sample_lines, text_pdf
from tests.storage import (
    TERMINAL,
    all_metadata_parses,
    fill,
    make_read_only,
    make_writable,
    readyz,
    storage_errors,
    watch_metadata,
)


def test_a_full_outbox_delays_the_claim_until_space_returns(tmpfs: Callable[[str], Path], tmp_path: Path) -> None:
    small_outbox = tmpfs("4m")
    good = text_pdf(tmp_path / "full.pdf", [sample_lines(3, seed=s) for s in range(3)])
    daemon = Daemon(tmp_path, outbox=small_outbox, engine="text").start()
    try:
        filler = fill(small_outbox)
        drop(daemon.inbox, good)
        watch_metadata(daemon, 3.0)
        assert "No space left on device" in daemon.log()
        assert storage_errors(daemon) > 0, "the failure shows in /metrics too"
        filler.unlink()
        job = daemon.wait_for_job("full.pdf", TERMINAL, timeout=30)
        all_metadata_parses(small_outbox)
    finally:
        daemon.stop()
    assert job["status"] == "completed", job
    assert job["progress"]["pages_done"] == 3


def test_a_job_in_progress_waits_out_a_read_only_outbox(tmpfs: Callable[[str], Path], tmp_path: Path) -> None:
    """The outbox turns read-only while a 1,500-page job runs, for 3 s: metadata.json stays valid,
    the error is logged, and once writable again the job completes with every page done."""
    small_outbox = tmpfs("32m")  # room for 1,500 pages (two small files each)
    big = text_pdf(tmp_path / "ro.pdf", [[f"Line {i}"] for i in range(1500)])
    daemon = Daemon(tmp_path, outbox=small_outbox, engine="text").start()
    try:
        drop(daemon.inbox, big)
        daemon.wait_until(
            lambda: (daemon.job_for("ro.pdf") or {}).get("progress", {}).get("pages_done", 0) >= 200,
            60,
            "the job to be under way",
        )
        make_read_only(small_outbox)
        try:
            watch_metadata(daemon, 3.0)
            waiting = readyz(daemon)
        finally:
            make_writable(small_outbox)
        job = daemon.wait_for_job("ro.pdf", TERMINAL, timeout=30)
        assert readyz(daemon)[0] == 200, "ready again once the outbox is writable"
        all_metadata_parses(small_outbox)
        log = daemon.log()
    finally:
        daemon.stop()
    assert "Read-only file system" in log and "waiting for the outbox: the outbox is read-only" in log
    assert waiting[0] == 503 and "outbox: the outbox is read-only" in waiting[1], waiting
    assert job["status"] == "completed", job["error"]
    assert job["progress"]["pages_failed"] == 0, job["progress"]
    assert job["progress"]["pages_done"] == 1500


def test_a_read_only_outbox_delays_new_claims(tmpfs: Callable[[str], Path], tmp_path: Path) -> None:
    small_outbox = tmpfs("4m")
    good = text_pdf(tmp_path / "later.pdf", [sample_lines(3, seed=4)])
    daemon = Daemon(tmp_path, outbox=small_outbox, engine="text").start()
    try:
        make_read_only(small_outbox)
        try:
            drop(daemon.inbox, good)
            watch_metadata(daemon, 3.0)
            assert daemon.job_for("later.pdf") is None
        finally:
            make_writable(small_outbox)
        job = daemon.wait_for_job("later.pdf", TERMINAL, timeout=30)
        log = daemon.log()
    finally:
        daemon.stop()
    assert "Read-only file system" in log
    assert job["status"] == "completed", job


def test_an_upload_into_a_full_inbox_is_refused_clearly_and_leaves_nothing(
    tmpfs: Callable[..., Path], tmp_path: Path
) -> None:
    """Given an inbox on a 2 MiB filesystem, when a 3 MiB PDF is uploaded over HTTP, then the client
    gets 503 saying the inbox cannot be written (not a broken connection), no job and no partial
    upload are left, the daemon keeps serving, and a small upload then becomes a job as usual."""
    import requests

    small_inbox = tmpfs("2m", "inbox")
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.7\n" + os.urandom(3 * 2**20) + b"\n%%EOF\n")
    daemon = Daemon(tmp_path, inbox=small_inbox, engine="text").start()
    try:
        base = daemon.http_url
        with open(big, "rb") as fh:
            refused = requests.post(f"{base}/jobs/create", files={"file": ("big.pdf", fh)}, timeout=60)
        assert refused.status_code == 503, refused.text
        assert "cannot write the upload into the inbox" in refused.json()["detail"]
        assert list((small_inbox / ".ocr-watcher" / "uploads").iterdir()) == []
        assert requests.get(f"{base}/jobs", timeout=10).json()["total"] == 0
        small = text_pdf(tmp_path / "small.pdf", [["Fits."]])
        with open(small, "rb") as fh:
            accepted = requests.post(f"{base}/jobs/create", files={"file": ("small.pdf", fh)}, timeout=60)
        assert accepted.status_code == 200, accepted.text
        job = daemon.wait_for_job("small.pdf", TERMINAL, timeout=30)
    finally:
        daemon.stop()
    assert job["status"] == "completed"


def test_an_upload_the_full_outbox_refuses_gets_503_and_never_becomes_a_job_later(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    """Given a full outbox, when a PDF is uploaded over HTTP, then the client gets 503 and nothing of
    it is kept: no job, no claim, no upload file. Once space returns, recovery (which runs on every
    outbox scan) must not make the job the client was told failed; the client's retry makes exactly
    one job. (Before the fix the claim stayed behind, so the retry made a second job.)"""
    import requests

    small_outbox = tmpfs("4m")
    pdf = text_pdf(tmp_path / "refused.pdf", [["Sent twice, made once."]])
    daemon = Daemon(tmp_path, outbox=small_outbox, engine="text", jobs={"outbox_scan_interval_seconds": 0.2}).start()
    try:
        base = daemon.http_url
        filler = fill(small_outbox)
        with open(pdf, "rb") as fh:
            refused = requests.post(f"{base}/jobs/create", files={"file": ("refused.pdf", fh)}, timeout=60)
        assert refused.status_code == 503, refused.text
        assert "cannot create the job" in refused.json()["detail"]
        internal = daemon.inbox / ".ocr-watcher"
        assert list((internal / "uploads").iterdir()) == []
        assert not (internal / "claims").exists() or list((internal / "claims").iterdir()) == []
        filler.unlink()
        time.sleep(1.5)  # several outbox scans, each of which runs claim recovery
        assert daemon.alive(), daemon.log()[-3000:]
        assert requests.get(f"{base}/jobs", timeout=10).json()["total"] == 0
        assert [p.name for p in small_outbox.iterdir() if not p.name.startswith(".")] == []
        with open(pdf, "rb") as fh:
            accepted = requests.post(f"{base}/jobs/create", files={"file": ("refused.pdf", fh)}, timeout=60)
        assert accepted.status_code == 200, accepted.text
        job = daemon.wait_for_job("refused.pdf", TERMINAL, timeout=30)
        jobs_made = [p.name for p in small_outbox.iterdir() if not p.name.startswith(".")]
    finally:
        daemon.stop()
    assert job["status"] == "completed"
    assert jobs_made == [job["job_id"]] == [accepted.json()["job_id"]]
