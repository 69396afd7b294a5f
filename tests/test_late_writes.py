"""A writer that was not done when its file was claimed: it paused longer than the settle time right
after bytes that looked complete (a PDF whose incremental update was still to come), then wrote on.

On one filesystem the claim's rename keeps the inode, so the late bytes land in the job's input; the
job must then be done on the final file, never on the version that was claimed. Across filesystems a
write during the claim's copy must not leave a stale copy. Real files, a real daemon, real PDFs.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from ocr_watcher.pipeline.input_watch import SettleWatch, changed_since_claim, stamp_of
from ocr_watcher.spool import claim as claim_module
from ocr_watcher.spool.claim import Claimer, InputStillWritten
from ocr_watcher.spool.model import Source
from ocr_watcher.spool.store import JobStore

from .daemon import Daemon, drop
from .pdfgen import slow_pdf, text_pdf
from .test_claim import jobs, request, where_is


def _pdf_and_its_update(tmp_path: Path) -> tuple[bytes, bytes]:
    """(first, final): a complete 2-page PDF, and the same bytes followed by an incremental update
    that adds a third page, as an editor saving in place writes it."""
    first = text_pdf(tmp_path / "first.pdf", [["Alpha page one."], ["Bravo page two."]]).read_bytes()
    extra = text_pdf(tmp_path / "extra.pdf", [["Charlie page three came late."]])
    writer = PdfWriter(io.BytesIO(first), incremental=True)
    writer.add_page(PdfReader(extra).pages[0])
    out = io.BytesIO()
    writer.write(out)
    final = out.getvalue()
    assert final.startswith(first) and len(PdfReader(io.BytesIO(final)).pages) == 3
    return first, final


# -- the pure parts -----------------------------------------------------------------------------------
def test_a_recorded_stamp_tells_a_changed_input(tmp_path: Path) -> None:
    path = tmp_path / "input.pdf"
    path.write_bytes(b"%PDF-1.4 one")
    size, mtime_ns = stamp_of(path)
    source = Source(name="a.pdf", inbox_path="a.pdf", size=size, mtime_ns=mtime_ns)
    assert changed_since_claim(source, path) is None
    with open(path, "ab") as fh:
        fh.write(b" two")
    assert changed_since_claim(source, path) == stamp_of(path)
    # Not recorded (a copy from another filesystem, an older job): never reported as changed
    assert changed_since_claim(Source(name="a.pdf", inbox_path="a.pdf", size=1), path) is None
    # Gone: not "changed" either; opening it reports the error
    path.unlink()
    assert changed_since_claim(source, path) is None


def test_settle_watch_lets_a_job_go_once_its_input_holds_still_for_the_settle_time() -> None:
    watch = SettleWatch()
    stamps = {"job": (10, 1)}
    watch.add("job", (10, 1), now=0.0)
    assert watch.settled(1.0, 2.0, stamps.get) == []  # unchanged for 1 s of 2
    stamps["job"] = (20, 2)  # written again: the wait starts over
    assert watch.settled(1.5, 2.0, stamps.get) == []
    assert watch.settled(3.0, 2.0, stamps.get) == []  # 1.5 s since the change
    assert watch.settled(3.5, 2.0, stamps.get) == ["job"]
    assert "job" not in watch and len(watch) == 0


# -- the claim ------------------------------------------------------------------------------------------
def test_a_write_while_the_file_is_claimed_leaves_the_claim_to_recovery_which_takes_the_final_bytes(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(tmp_path / "outbox", fsync=False)
    store.root.mkdir()
    first, final = _pdf_and_its_update(tmp_path)
    (inbox / "a.pdf").write_bytes(first)
    real_hash = claim_module.size_and_sha256

    def hash_then_the_writer_goes_on(path: Path) -> tuple[int, str | None]:
        result = real_hash(path)
        with open(path, "ab") as fh:
            fh.write(final[len(first) :])
        return result

    with monkeypatch.context() as mp:
        mp.setattr(claim_module, "size_and_sha256", hash_then_the_writer_goes_on)
        with pytest.raises(InputStillWritten, match="changed while it was being claimed"):
            Claimer(inbox, store, "me").claim(request("a.pdf"))
    assert jobs(store) == [], "no job from a version that was still being written"
    # When recovery runs (every outbox scan) and the file holds still
    (job_id,) = Claimer(inbox, store, "me").recover(lambda worker: False)
    # Then the one job has the final bytes, and records them
    assert (store.root / job_id / "input.pdf").read_bytes() == final
    source = store.load(job_id).source
    assert (source.size, source.sha256) == (len(final), hashlib.sha256(final).hexdigest())
    assert source.mtime_ns == (store.root / job_id / "input.pdf").stat().st_mtime_ns


def test_a_write_during_a_copy_across_filesystems_never_leaves_a_stale_copy(
    inbox: Path, shm_outbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(shm_outbox, fsync=False)
    first, final = _pdf_and_its_update(tmp_path)
    (inbox / "a.pdf").write_bytes(first)
    real_copy = claim_module._copy_durably

    def copy_then_the_writer_goes_on(src: Path, dst: Path) -> None:
        real_copy(src, dst)
        with open(src, "ab") as fh:
            fh.write(final[len(first) :])

    with monkeypatch.context() as mp:
        mp.setattr(claim_module, "_copy_durably", copy_then_the_writer_goes_on)
        with pytest.raises(InputStillWritten):
            Claimer(inbox, store, "me").claim(request("a.pdf"))
    assert jobs(store) == []
    (job_id,) = Claimer(inbox, store, "me").recover(lambda worker: False)
    assert where_is(final, inbox, shm_outbox) == [shm_outbox / job_id / "input.pdf"]
    source = store.load(job_id).source
    assert source.sha256 == hashlib.sha256(final).hexdigest()
    assert source.mtime_ns is None, "a copy cannot be reached by a late write: nothing to watch"


def test_discarding_pages_is_one_step_and_a_crash_leftover_is_swept(tmp_path: Path) -> None:
    store = JobStore(tmp_path, fsync=False)
    job_id = "a.pdf_20260107_123456_0123abcd"
    (tmp_path / job_id / "pages").mkdir(parents=True)
    store.write_page(job_id, 1, "old page", {"page": 1})
    (tmp_path / job_id / "images").mkdir()
    (tmp_path / job_id / "images" / "p0001-1.png").write_bytes(b"png")
    store.discard_pages(job_id)
    assert store.done_pages(job_id) == set()
    assert sorted(p.name for p in (tmp_path / job_id).iterdir()) == ["pages"]
    # A crash between the rename and the removal leaves a hidden folder: the next activation sweeps it
    leftover = tmp_path / job_id / ".pages.tmp-0badf00d"
    leftover.mkdir()
    (leftover / "0001.md").write_text("old")
    assert store.sweep_temp_files(job_id) == 1
    assert not leftover.exists()


# -- a real daemon ----------------------------------------------------------------------------------------
def test_a_pdf_updated_in_place_after_its_claim_is_done_on_its_final_version(tmp_path: Path) -> None:
    """Given a daemon whose one render slot is busy with a slow page, when a complete-looking 2-page
    PDF is claimed and its writer then appends an incremental update adding a third page (into the
    same inode, now in the job folder), then the job is started over once the file holds still and
    completes with all 3 pages, the final size and digest recorded, and a warning saying why.
    (Before, the job was done on the claimed 2 pages and recorded a digest of bytes it no longer had.)"""
    first, final = _pdf_and_its_update(tmp_path)
    daemon = Daemon(tmp_path, pipeline={"workers": 1}).start()
    try:
        drop(daemon.inbox, slow_pdf(tmp_path / "busy.pdf", shapes=800))  # holds the one render slot
        daemon.wait_for_job("busy.pdf", {"processing"})
        with open(daemon.inbox / "report.pdf", "wb") as writer:  # an editor saving in place
            writer.write(first)
            writer.flush()
            job = daemon.wait_for_job("report.pdf", {"queued", "processing"})
            writer.write(final[len(first) :])
        done = daemon.wait_for_job("report.pdf", {"completed", "failed"}, timeout=120)
        log = daemon.log()
    finally:
        daemon.stop()
    assert done["status"] == "completed", done
    assert done["progress"]["pages_total"] == 3
    result = (daemon.job_dir(done) / "result.md").read_text()
    assert "Alpha" in result and "Charlie" in result
    assert done["source"]["size"] == len(final) and done["source"]["sha256"] == hashlib.sha256(final).hexdigest()
    assert any("started over" in warning for warning in done["warnings"]), done["warnings"]
    assert f"{job['job_id']}: report.pdf changed after it was claimed ({len(first)} -> {len(final)} bytes)" in log
    assert os.path.getsize(daemon.job_dir(done) / "input.pdf") == len(final)
