"""Storage faults on every path of a job's life, each on a real full, read-only or vanished outbox
under real daemons: a takeover, a retry, a cancel and a completion on a full outbox, and the outbox
moved away with an empty folder left in its place. Whatever happens, the daemon stays up, says
what it waits for (its log and /readyz), and once the fault is gone every job ends, none twice, and
no completed job is forgotten."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.daemon import Daemon, drop
from tests.pdfgen import sample_lines, text_pdf
from tests.storage import TERMINAL, all_metadata_parses, fill, readyz, sweep_leftovers, watch_metadata


def _pages_done(daemon: Daemon, name: str) -> int:
    return (daemon.job_for(name) or {}).get("progress", {}).get("pages_done", 0)


def _statuses(job: dict) -> list[str]:
    return [entry["status"] for entry in job["history"]]


def _waits_for_the_outbox(daemon: Daemon, what: str, seconds: float = 3.0) -> None:
    """The daemon stays up through the fault, every metadata.json stays whole, and both its log
    and /readyz say what it waits for."""
    watch_metadata(daemon, seconds)
    assert "waiting for the outbox" in daemon.log(), daemon.log()[-3000:]
    status, text = readyz(daemon)
    assert status == 503 and "outbox" in text and what in text, (status, text)


def test_a_dead_daemons_job_is_taken_over_on_a_full_outbox_and_finished_once_space_returns(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    """Given a job left processing by a daemon that was kill -9ed, and its outbox full, when a second
    daemon takes it over, then it holds the new lease, waits while metadata.json cannot be written
    (before: ENOSPC out of the outbox scan ended the process), and once space returns finishes the
    job itself: the first daemon's pages are kept, no page is done twice."""
    outbox = tmpfs("48m")  # room for 3,000 pages (two small files each): more than a second's work
    pdf = text_pdf(tmp_path / "ghost.pdf", [[f"Page {i} of the ghost's job"] for i in range(3000)])
    jobs = {"heartbeat_lease_seconds": 1}
    first = Daemon(tmp_path, "ghost", outbox=outbox, engine="text", jobs=jobs).start()
    try:
        drop(first.inbox, pdf)
        first.wait_until(lambda: _pages_done(first, "ghost.pdf") >= 20, 60, "the first daemon to be under way")
    finally:
        first.kill()
    done_by_ghost = _pages_done(first, "ghost.pdf")
    sweep_leftovers(outbox)  # else the heir's sweep of the ghost's half-written page makes room
    filler = fill(outbox)
    second = Daemon(tmp_path, "heir", outbox=outbox, engine="text", jobs=jobs).start()
    try:
        second.wait_until(lambda: "taken over from ghost" in second.log(), 20, "the takeover")
        _waits_for_the_outbox(second, "full")
        job_dir = second.job_dir(second.job_for("ghost.pdf"))
        assert (job_dir / ".lease-2").exists()
        assert second.job_for("ghost.pdf")["worker"]["id"] == "ghost"  # not written yet
        filler.unlink()
        job = second.wait_for_job("ghost.pdf", TERMINAL, timeout=60)
        assert readyz(second)[0] == 200
    finally:
        second.stop()
    all_metadata_parses(outbox)
    assert job["status"] == "completed", job
    assert (job["worker"]["id"], job["worker"]["epoch"]) == ("heir", 2)
    assert _statuses(job).count("completed") == 1
    by = [json.loads(p.read_text())["worker"] for p in sorted((job_dir / "pages").glob("*.json"))]
    assert len(by) == 3000 and by.count("ghost") >= done_by_ghost, "the first daemon's pages were not redone"


def test_a_retry_and_a_cancel_on_a_full_outbox_wait_for_space(tmpfs: Callable[[str], Path], tmp_path: Path) -> None:
    """Given a cancelled job and a running one, when the outbox fills up and a RETRY and a CANCEL
    are created, then the daemon stays up (before: ENOSPC out of the retry ended the process), and
    once space returns the retried job completes and the other ends cancelled, each once."""
    outbox = tmpfs("48m")
    daemon = Daemon(tmp_path, outbox=outbox, engine="text", jobs={"outbox_scan_interval_seconds": 0.2}).start()
    try:
        # The first job is cancelled on a full outbox too: there no page can end it first.
        drop(daemon.inbox, text_pdf(tmp_path / "again.pdf", [[f"Again {i}"] for i in range(3000)]))
        daemon.wait_until(lambda: _pages_done(daemon, "again.pdf") >= 10, 60, "the first job to be under way")
        filler = fill(outbox)
        (daemon.job_dir(daemon.job_for("again.pdf")) / "CANCEL").touch()
        daemon.wait_until(lambda: "cancel requested" in daemon.log(), 10, "the daemon to see the CANCEL")
        filler.unlink()
        assert daemon.wait_for_job("again.pdf", TERMINAL, timeout=30)["status"] == "cancelled"
        drop(daemon.inbox, text_pdf(tmp_path / "stop.pdf", [[f"Stop {i}"] for i in range(3000)]))
        daemon.wait_until(lambda: _pages_done(daemon, "stop.pdf") >= 10, 60, "the second job to be under way")
        filler = fill(outbox)
        (daemon.job_dir(daemon.job_for("again.pdf")) / "RETRY").touch()
        (daemon.job_dir(daemon.job_for("stop.pdf")) / "CANCEL").touch()
        _waits_for_the_outbox(daemon, "full")
        assert daemon.job_for("stop.pdf")["status"] == "processing"  # its end is not written yet
        filler.unlink()
        retried = daemon.wait_for_job("again.pdf", {"completed"}, timeout=60)
        stopped = daemon.wait_for_job("stop.pdf", TERMINAL, timeout=30)
        time.sleep(1.0)  # a second retry of the same request would show by now
        retried = daemon.job_for("again.pdf")
        assert not (daemon.job_dir(retried) / "RETRY").exists()
        assert not (daemon.job_dir(stopped) / "CANCEL").exists()
    finally:
        daemon.stop()
    assert retried["status"] == "completed" and retried["attempts"] == 2, retried
    assert _statuses(retried) == ["queued", "processing", "cancelled", "queued", "processing", "completed"]
    assert stopped["status"] == "cancelled" and _statuses(stopped).count("cancelled") == 1, stopped


def _leave_free(folder: Path, free_bytes: int) -> Path:
    """Fill `folder`'s filesystem until `free_bytes` are left (to the block)."""
    st = os.statvfs(folder)
    filler = folder / ".filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - free_bytes))
    return filler


def test_a_result_the_full_outbox_refuses_is_written_once_space_returns(
    tmpfs: Callable[[str], Path], tmp_path: Path
) -> None:
    """Given an outbox with room for every page of a job but not for its result.md, then the job
    stays processing with all its pages done while the daemon waits and says so (before: the ENOSPC
    reached the main loop's catch-all and the job stayed processing until a restart), and once space
    returns it completes."""
    outbox = tmpfs("8m")
    pages = 100
    # Each page's Markdown nearly fills a 4 KiB block: the pages take two blocks each (.md and .json),
    # the result about one block per page; the input is claimed into the outbox too.
    text = [sample_lines(1, seed=page, max_chars=60) * 60 for page in range(pages)]
    pdf = text_pdf(tmp_path / "big-result.pdf", text)
    room = -(-pdf.stat().st_size // 4096) + 2 * pages + 40  # 40: metadata.json and the heartbeat
    daemon = Daemon(tmp_path, outbox=outbox, engine="text").start()
    try:
        filler = _leave_free(outbox, room * 4096)
        drop(daemon.inbox, pdf)
        daemon.wait_until(lambda: _pages_done(daemon, "big-result.pdf") == pages, 60, "every page done")
        _waits_for_the_outbox(daemon, "full")
        job = daemon.job_for("big-result.pdf")
        assert job["status"] == "processing" and not (daemon.job_dir(job) / "result.md").exists()
        filler.unlink()
        job = daemon.wait_for_job("big-result.pdf", TERMINAL, timeout=30)
    finally:
        daemon.stop()
    assert job["status"] == "completed", job
    result = (outbox / job["job_id"] / "result.md").read_text()
    assert result.count("<!-- page ") == pages


def test_an_outbox_moved_away_and_back_loses_nothing(tmp_path: Path) -> None:
    """Given a running job and a completed one, when the outbox folder is moved away and an empty
    folder takes its place (what an NFS mount that went away leaves), then the daemon claims nothing
    into that folder, fails nothing, forgets nothing, and says that it waits; once the outbox is
    back, the running job and the file dropped meanwhile complete, each in one job."""
    daemon = Daemon(tmp_path, engine="text", jobs={"outbox_scan_interval_seconds": 0.2}).start()
    outbox, away = daemon.outbox, tmp_path / "outbox.away"
    try:
        drop(daemon.inbox, text_pdf(tmp_path / "done.pdf", [["Finished before."]]))
        daemon.wait_for_job("done.pdf", {"completed"}, timeout=30)
        drop(daemon.inbox, text_pdf(tmp_path / "long.pdf", [[f"Line {i}"] for i in range(3000)]))
        daemon.wait_until(lambda: _pages_done(daemon, "long.pdf") >= 100, 60, "the long job to be under way")
        os.rename(outbox, away)
        outbox.mkdir()  # the mount point left behind
        drop(daemon.inbox, text_pdf(tmp_path / "meanwhile.pdf", [["Dropped while the outbox was away."]]))
        time.sleep(3.0)
        assert daemon.alive(), daemon.log()[-3000:]
        assert list(outbox.iterdir()) == [], "nothing is claimed into the empty folder"
        assert (daemon.inbox / "meanwhile.pdf").exists()
        assert "is not the outbox this daemon started on" in daemon.log()
        status, text = readyz(daemon)
        assert status == 503 and "not the outbox this daemon started on" in text, (status, text)
        outbox.rmdir()
        os.rename(away, outbox)
        long_job = daemon.wait_for_job("long.pdf", TERMINAL, timeout=90)
        meanwhile = daemon.wait_for_job("meanwhile.pdf", TERMINAL, timeout=30)
        listed = daemon.cli("jobs", "--json")
    finally:
        daemon.stop()
    assert long_job["status"] == "completed" and long_job["progress"]["pages_done"] == 3000, long_job
    assert _statuses(long_job).count("processing") == 1, "the job went on; it was not started again"
    assert meanwhile["status"] == "completed"
    names = sorted(job["source"]["name"] for job in json.loads(listed.stdout))
    assert names == ["done.pdf", "long.pdf", "meanwhile.pdf"], listed.stdout + listed.stderr
