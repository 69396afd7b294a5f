"""The daemon's control surface, with real subprocesses: profiles, images, the CLI, deletion as
cancel, graceful stop, and takeover of a dead daemon's job."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from .daemon import Daemon, drop
from .pdfgen import cer, multipage_tiff, sample_lines, scan_with_slow_page, scanned_image, text_pdf


def test_subfolders_select_profiles_and_images_are_jobs(tmp_path: Path) -> None:
    """Given a profile `urgent` with priority 10, when files are dropped in `urgent/`, in an unknown
    subfolder and at the top, then each gets its profile and priority; PNG, JPEG and a 2-page TIFF
    are OCRed like PDFs; ignored names stay in the inbox untouched."""
    daemon = Daemon(tmp_path, profiles={"urgent": {"priority": 10}}).start()
    lines = sample_lines(5, seed=7)
    try:
        drop(daemon.inbox, scanned_image(tmp_path / "photo.png", lines, "PNG"), "urgent/photo.png")
        drop(daemon.inbox, scanned_image(tmp_path / "scan.jpg", lines, "JPEG"), "misc/deeper/scan.jpg")
        drop(daemon.inbox, multipage_tiff(tmp_path / "fax.tif", [lines, sample_lines(5, seed=8)]))
        (daemon.inbox / "draft.pdf.part").write_bytes(b"%PDF-1.4 partial")
        (daemon.inbox / "~$lock.docx").write_bytes(b"lock")
        jobs = {
            name: daemon.wait_for_job(name, {"completed", "failed"}) for name in ("photo.png", "scan.jpg", "fax.tif")
        }
        time.sleep(1.0)
    finally:
        daemon.stop()
    assert {name: (job["profile"], job["priority"]) for name, job in jobs.items()} == {
        "photo.png": ("urgent", 10),
        "scan.jpg": ("default", 0),
        "fax.tif": ("default", 0),
    }
    assert jobs["scan.jpg"]["source"]["inbox_path"] == "misc/deeper/scan.jpg"
    for job in jobs.values():
        assert job["status"] == "completed", job
        assert job["kind"] == "image"
    assert (daemon.job_dir(jobs["photo.png"]) / "input.png").exists()
    assert (daemon.job_dir(jobs["scan.jpg"]) / "input.jpg").exists()
    assert jobs["fax.tif"]["progress"]["pages_total"] == 2
    assert cer("\n".join(lines), (daemon.job_dir(jobs["photo.png"]) / "pages" / "0001.md").read_text()) < 0.05
    assert (daemon.inbox / "draft.pdf.part").exists() and (daemon.inbox / "~$lock.docx").exists()
    assert len(daemon.jobs()) == 3


def test_cli_submit_wait_jobs_status(tmp_path: Path) -> None:
    """Given a running daemon, `submit --wait` copies a file in and waits for its job; `jobs`,
    `status` (by prefix) and `wait` report it; ambiguous and unknown prefixes are refused."""
    daemon = Daemon(tmp_path, engine="text").start()
    first = text_pdf(tmp_path / "first.pdf", [["The first document"]])
    second = text_pdf(tmp_path / "second.pdf", [["The second document"]])
    try:
        submitted = daemon.cli("submit", str(first), str(second), "--wait", "--timeout", "60")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert first.exists(), "submit copies; the caller's file stays"
        listed = daemon.cli("jobs", "--json")
        jobs = json.loads(listed.stdout)
        assert sorted(j["source"]["name"] for j in jobs) == ["first.pdf", "second.pdf"]
        job_id = next(j["job_id"] for j in jobs if j["source"]["name"] == "first.pdf")
        assert job_id in submitted.stdout

        status = daemon.cli("status", job_id[:8], "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
        waited = daemon.cli("wait", job_id[:8])
        assert waited.returncode == 0 and "completed" in waited.stdout
        assert daemon.cli("jobs", "--status", "failed", "--json").stdout.strip() == "[]"

        ambiguous = daemon.cli("status", "")
        assert ambiguous.returncode == 2
        unknown = daemon.cli("status", "nosuchjob")
        assert unknown.returncode == 2 and "no job matches" in unknown.stderr
        escape = daemon.cli("cancel", "../outbox")
        assert escape.returncode == 2
        again = daemon.cli("submit", str(first))  # the same name again while the first is gone: a new job
        assert again.returncode == 0
        daemon.wait_until(lambda: len(daemon.jobs()) == 3, 60, "a third job")
    finally:
        daemon.stop()
    result = (daemon.outbox / job_id / "result.md").read_text()
    assert "The first document" in result


def test_deleting_a_job_folder_cancels_it_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    """Given a long job in progress, when its folder is deleted, then the daemon stops working on it
    (no folder comes back) and keeps serving; SIGTERM then stops the daemon with exit code 0."""
    daemon = Daemon(tmp_path, pipeline={"workers": 1}).start()
    drop(daemon.inbox, scan_with_slow_page(tmp_path / "long.pdf", 2, 27))  # 30 pages, the third slow
    job = daemon.wait_for_job("long.pdf", {"processing"})
    daemon.wait_until(lambda: daemon.job_for("long.pdf")["progress"]["pages_done"] >= 1, 60, "a page")
    import shutil

    shutil.rmtree(daemon.job_dir(job))
    daemon.wait_until(lambda: "folder was deleted" in daemon.log(), 30, "the deletion to be noticed")
    drop(daemon.inbox, text_pdf(tmp_path / "next.pdf", [["Next one"]]))
    assert daemon.wait_for_job("next.pdf", {"completed", "failed"})["status"] == "completed"
    time.sleep(1.0)
    assert not daemon.job_dir(job).exists()
    assert daemon.stop() == 0
    assert "stopped;" in daemon.log()


def test_a_dead_daemons_job_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    """Given two daemons, when the one processing a job is killed, then once its heartbeat lease
    (3 s here) expires the other takes the job over, finishes it, and keeps the pages already done."""
    lease = {"jobs": {"heartbeat_lease_seconds": 3, "outbox_scan_interval_seconds": 0.5}}
    first = Daemon(tmp_path, "first", pipeline={"workers": 1}, **lease).start()
    source = scan_with_slow_page(tmp_path / "shared.pdf", 3, 8)  # 12 pages, the fourth slow
    drop(first.inbox, source)
    job = first.wait_for_job("shared.pdf", {"processing"})
    first.wait_until(lambda: first.job_for("shared.pdf")["progress"]["pages_done"] >= 3, 60, "3 pages")
    first.kill(signal.SIGKILL)
    pages_dir = first.job_dir(job) / "pages"
    before = {p.name: p.stat().st_mtime_ns for p in pages_dir.glob("*.md")}

    second = Daemon(tmp_path, "second", **lease).start()
    try:
        done = second.wait_for_job("shared.pdf", {"completed", "failed"}, timeout=120)
    finally:
        second.stop()
    assert done["status"] == "completed"
    assert done["worker"]["id"] == "second" and done["worker"]["epoch"] == 2
    assert "taken over from first" in second.log()
    for name, mtime in before.items():
        assert (pages_dir / name).stat().st_mtime_ns == mtime, f"{name} was redone"


def _pdf_with_a_hanging_page(tmp_path: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    from .pdfgen import slow_pdf

    writer = PdfWriter()
    for part in (
        text_pdf(tmp_path / "a.pdf", [["Alpha page one"], ["Beta page two"]]),
        slow_pdf(tmp_path / "slow.pdf", shapes=6000),  # page 3: seconds of rendering
        text_pdf(tmp_path / "b.pdf", [["Gamma page four"]]),
    ):
        for page in PdfReader(part).pages:
            writer.add_page(page)
    target = tmp_path / "mixed.pdf"
    with target.open("wb") as fh:
        writer.write(fh)
    return target


@pytest.mark.parametrize(("error_rate", "status"), [(0.3, "completed"), (0.1, "failed")])
def test_a_page_that_hangs_is_retried_then_failed_within_max_page_error_rate(
    tmp_path: Path, error_rate: float, status: str
) -> None:
    """Given a 4-page PDF whose page 3 takes far longer to render than render_timeout_seconds, the page
    is killed and retried, then marked failed; the job completes with a warning when 1 of 4 pages is
    within max_page_error_rate (0.3), and fails naming the page when it is not (0.1)."""
    daemon = Daemon(
        tmp_path,
        pipeline={"render_timeout_seconds": 1.0, "page_retries": 1, "max_page_error_rate": error_rate},
    ).start()
    try:
        drop(daemon.inbox, _pdf_with_a_hanging_page(tmp_path))
        job = daemon.wait_for_job("mixed.pdf", {"completed", "failed"}, timeout=120)
        assert daemon.alive()
    finally:
        daemon.stop()
    assert job["status"] == status
    assert job["progress"]["pages_done"] == 3 and job["progress"]["pages_failed"] == 1
    assert daemon.log().count("page 3 failed (rendering failed") == 1, "one retry, then final"
    if status == "completed":
        result = (daemon.job_dir(job) / "result.md").read_text()
        assert "Page 3 could not be read" in result and "Gamma page four" in result
        meta = json.loads((daemon.job_dir(job) / "result_metadata.json").read_text())
        assert meta["pages"][2]["status"] == "failed" and "took longer than" in meta["pages"][2]["error"]
        assert any(w.startswith("page 3:") for w in job["warnings"])
    else:
        assert job["error"]["type"] == "pages_failed"
        assert "page 3" in job["error"]["message"]
        assert not (daemon.job_dir(job) / "result.md").exists()


def test_a_file_dropped_behind_hanging_pages_completes_while_they_are_retried(tmp_path: Path) -> None:
    """Given 2 render workers and an urgent PDF whose first 3 of 4 pages hang (render_timeout 1 s, 3
    retries each), once one of its renders has timed out the job is suspect and holds at most 1 of
    the 2 render slots: a 1-page PDF dropped then in the normal profile completes while the urgent job
    is still retrying (before, its retries came first and held both slots until all had failed). The
    urgent job then ends with its 3 hanging pages failed and its good page done."""
    from .pdfgen import concat_pdfs, slow_pdf

    slow = slow_pdf(tmp_path / "slow.pdf", shapes=6000)  # seconds of rendering: far above 1 s
    hanging = concat_pdfs(tmp_path / "hanging.pdf", [slow, slow, slow, text_pdf(tmp_path / "d.pdf", [["Delta"]])])
    good = text_pdf(tmp_path / "good.pdf", [["A good page dropped behind"]])
    daemon = Daemon(
        tmp_path,
        profiles={"urgent": {"priority": 10}},
        pipeline={"workers": 2, "render_timeout_seconds": 1.0, "page_retries": 3, "max_page_error_rate": 0.1},
    ).start()
    try:
        drop(daemon.inbox, hanging, "urgent/hanging.pdf")
        daemon.wait_until(lambda: "failed (rendering failed" in daemon.log(), 60, "a render to time out")
        drop(daemon.inbox, good)
        done = daemon.wait_for_job("good.pdf", {"completed", "failed"}, timeout=120)
        meanwhile = daemon.job_for("hanging.pdf")
        final = daemon.wait_for_job("hanging.pdf", {"completed", "failed"}, timeout=120)
        assert daemon.alive()
    finally:
        daemon.stop()
    assert done["status"] == "completed", done
    assert "A good page dropped behind" in (daemon.job_dir(done) / "result.md").read_text()
    assert meanwhile is not None and meanwhile["status"] == "processing", meanwhile
    assert "its pages now get at most 1 of 2 render slots" in daemon.log()
    assert final["status"] == "failed", final
    assert (final["progress"]["pages_done"], final["progress"]["pages_failed"]) == (1, 3), final["progress"]
    assert daemon.log().count("failed (rendering failed") == 9, "3 retries of each hanging page"


@pytest.mark.parametrize(
    "intake",
    [
        {"use_inotify": True, "poll_interval_seconds": 3600},  # only inotify can see the file in time
        {"use_inotify": False, "poll_interval_seconds": 0.3},  # a network share: polling alone
    ],
    ids=["inotify-only", "polling-only"],
)
def test_files_are_detected_by_inotify_and_by_polling_alone(tmp_path: Path, intake: dict) -> None:
    """Either detection layer on its own finds a new file, also in a subfolder created after start."""
    daemon = Daemon(tmp_path, engine="text", intake=intake).start()
    try:
        drop(daemon.inbox, text_pdf(tmp_path / "top.pdf", [["Top level"]]))
        assert daemon.wait_for_job("top.pdf", {"completed"}, timeout=30)
        folder = tmp_path / "batch"  # a whole folder of files moved in at once
        folder.mkdir()
        for index in range(5):
            text_pdf(folder / f"b{index}.pdf", [[f"Batch file {index}"]])
        os.rename(folder, daemon.inbox / "batch")
        for index in range(5):
            assert daemon.wait_for_job(f"b{index}.pdf", {"completed"}, timeout=30)
        drop(daemon.inbox, text_pdf(tmp_path / "sub.pdf", [["In a new folder"]]), "batch/sub.pdf")
        assert daemon.wait_for_job("sub.pdf", {"completed"}, timeout=30)
    finally:
        daemon.stop()
