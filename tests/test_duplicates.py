"""The same file twice: the rule as a table, the content records and the sharing of results on real
folders, then real daemons: a duplicate of a completed job, of one still running, of one that was
cancelled, the default that processes again, other settings, and two daemons racing on one share.
"One OCR" is counted from a wrapper that logs every page tesseract is run on."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from ocr_watcher.daemon.lifecycle import Duplicate, decide_duplicate
from ocr_watcher.spool import shared_results
from ocr_watcher.spool.digests import LOCK_STALE_SECONDS, UNREADABLE, DigestRecords
from ocr_watcher.spool.layout import OutboxLayout
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker, utc_now
from ocr_watcher.spool.store import JobStore

from .daemon import Daemon, drop, slow_tesseract, tesseract_call_logger, tesseract_calls
from .pdfgen import sample_lines, scanned_pdf

A, B = "scan_20261204_101500_0000000a", "again_20261204_101600_0000000b"  # job ids
REUSE = {"profiles": {"default": {"duplicates": "reuse"}}}


@pytest.mark.parametrize(
    ("reuse", "leader", "status", "decision"),
    [
        (False, None, None, Duplicate.PROCESS),  # the default: every file is processed
        (False, A, Status.COMPLETED, Duplicate.PROCESS),
        (True, None, None, Duplicate.LEAD),  # the first of its content
        (True, B, Status.QUEUED, Duplicate.PROCESS),  # it leads already (a resume)
        (True, A, Status.COMPLETED, Duplicate.FOLLOW),
        (True, A, Status.QUEUED, Duplicate.WAIT),
        (True, A, Status.PROCESSING, Duplicate.WAIT),
        (True, A, Status.FAILED, Duplicate.REPLACE),
        (True, A, Status.CANCELLED, Duplicate.REPLACE),
        (True, A, None, Duplicate.REPLACE),  # gone (retention), or unreadable
        (True, UNREADABLE, None, Duplicate.REPLACE),  # a damaged record
    ],
)
def test_what_a_job_of_content_seen_before_does(
    reuse: bool, leader: str | None, status: Status | None, decision: Duplicate
) -> None:
    assert decide_duplicate(reuse, B, leader, status) is decision


def _records(tmp_path: Path) -> DigestRecords:
    layout = OutboxLayout(tmp_path)
    layout.internal.mkdir()
    return DigestRecords(layout)


def test_one_job_leads_a_content_and_only_one_replaces_a_failed_leader(tmp_path: Path) -> None:
    records = _records(tmp_path)
    assert records.leader("k") is None
    assert records.lead("k", A) and not records.lead("k", B)
    assert records.leader("k") == A
    # Two jobs that both saw job-a fail: the second finds the record changed and does not replace it.
    assert records.replace("k", A, B) and not records.replace("k", A, "job-c")
    assert records.leader("k") == B
    records.path("k").write_text("{half")
    assert records.leader("k") == UNREADABLE and records.replace("k", UNREADABLE, "job-d")
    assert records.leader("k") == "job-d"
    assert not any(p.name.endswith(".lock") or ".tmp-" in p.name for p in records.folder.iterdir())


def test_a_held_lock_makes_a_replacement_wait_and_a_dead_holders_lock_is_broken(tmp_path: Path) -> None:
    records = _records(tmp_path)
    assert records.lead("k", A)
    lock = records.folder / "k.lock"
    lock.touch()  # another daemon is replacing it right now
    assert not records.replace("k", A, B) and lock.exists()
    old = time.time() - LOCK_STALE_SECONDS - 5
    os.utime(lock, (old, old))  # ...or died doing so
    assert not records.replace("k", A, B) and not lock.exists()  # broken; the next try
    assert records.replace("k", A, B)


def test_the_sweep_removes_old_records_of_gone_jobs_only(tmp_path: Path) -> None:
    records = _records(tmp_path)
    for key, job in (("gone-old", "job-1"), ("kept-old", "job-2"), ("gone-young", "job-3")):
        assert records.lead(key, job)
    old = time.time() - 7200
    for key in ("gone-old", "kept-old"):
        os.utime(records.path(key), (old, old))
    assert records.sweep(lambda job_id: job_id == "job-2", older_than=3600) == 1
    assert [records.leader(k) for k in ("gone-old", "kept-old", "gone-young")] == [None, "job-2", "job-3"]


def _completed_job(store: JobStore, job_id: str) -> None:
    paths = store.paths(job_id)
    (paths.pages).mkdir(parents=True)
    paths.images.mkdir()
    paths.page_md(1).write_text("page one\n")
    paths.page_info(1).write_text('{"page": 1, "status": "done"}')
    (paths.images / "p1-fig1.png").write_bytes(b"png")
    store.write_result(job_id, "page one\n", {"job_id": job_id, "pages_total": 1, "warnings": []})


def _follower_meta(store: JobStore, job_id: str) -> JobMeta:
    store.paths(job_id).dir.mkdir()
    source = Source(name="again.pdf", inbox_path="again.pdf", size=3, sha256="abc")
    worker = Worker(id="w", host="h", pid=1)
    return JobMeta(job_id=job_id, source=source, input_file="input.pdf", created_at=utc_now(), worker=worker)


@pytest.mark.hand_made_pages
def test_shared_results_are_links_that_outlive_the_earlier_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path, fsync=False)
    _completed_job(store, A)
    meta = _follower_meta(store, B)
    result_meta = shared_results.share_results(store, A, meta)
    own, leader = store.paths(B), store.paths(A)
    assert result_meta["job_id"] == B and result_meta["duplicate_of"] == A
    assert result_meta["source"]["name"] == "again.pdf"
    for mine, theirs in ((own.result_md, leader.result_md), (own.page_md(1), leader.page_md(1))):
        assert os.path.samefile(mine, theirs)
    assert (own.images / "p1-fig1.png").read_bytes() == b"png"
    shared_results.share_results(store, A, meta)  # again, as after a crash: no harm
    shutil.rmtree(leader.dir)  # retention takes the earlier job
    assert own.result_md.read_text() == "page one\n" and own.page_md(1).read_text() == "page one\n"
    with pytest.raises(shared_results.LeaderGone):
        shared_results.share_results(store, A, meta)


@pytest.mark.hand_made_pages
def test_results_are_copied_where_the_filesystem_refuses_hard_links(tmp_path: Path, monkeypatch) -> None:
    """os.link is made to fail as it does on a share mounted without hard links (EPERM on SMB, EXDEV
    across filesystems): a contract double, since this machine's filesystem links."""
    store = JobStore(tmp_path, fsync=False)
    _completed_job(store, A)
    meta = _follower_meta(store, B)

    def refuse(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(shared_results.os, "link", refuse)
    shared_results.share_results(store, A, meta)
    own, leader = store.paths(B), store.paths(A)
    assert own.result_md.read_text() == "page one\n" and not os.path.samefile(own.result_md, leader.result_md)


# -- real daemons ----------------------------------------------------------------------------------
def _pdf(tmp_path: Path, name: str = "scan.pdf", seed: int = 3) -> Path:
    return scanned_pdf(tmp_path / name, [sample_lines(4, seed=seed)])


def _ocred_jobs(call_log: Path) -> set[str]:
    return {job for job, _page, _attempt, _when in tesseract_calls(call_log)} if call_log.exists() else set()


def test_a_file_dropped_again_gets_the_earlier_jobs_results_without_ocr(tmp_path: Path) -> None:
    wrapper, call_log = tesseract_call_logger(tmp_path / "bin")
    pdf = _pdf(tmp_path)
    with Daemon(tmp_path, tesseract={"command": str(wrapper)}, **REUSE) as daemon:
        drop(daemon.inbox, pdf, "first.pdf")
        first = daemon.wait_for_job("first.pdf", {"completed"})
        drop(daemon.inbox, pdf, "second.pdf")
        second = daemon.wait_for_job("second.pdf", {"completed"})
        assert "taking its results" in daemon.log()
        assert _ocred_jobs(call_log) == {first["job_id"]}
        one, two = daemon.job_dir(first), daemon.job_dir(second)
        assert os.path.samefile(one / "result.md", two / "result.md")
        assert os.path.samefile(one / "pages" / "0001.md", two / "pages" / "0001.md")
        assert (two / "input.pdf").exists()  # the original stays in the job folder, as always
        shutil.rmtree(one)  # retention of either never breaks the other...
        assert "<!-- page 1 of 1 -->" in (two / "result.md").read_text()
        drop(daemon.inbox, pdf, "third.pdf")  # ...and with the earlier job gone, a copy is processed
        third = daemon.wait_for_job("third.pdf", {"completed"})
        (daemon.job_dir(third) / "result.md").unlink()  # results removed by hand: as good as gone
        drop(daemon.inbox, pdf, "fourth.pdf")
        fourth = daemon.wait_for_job("fourth.pdf", {"completed"})
    assert _ocred_jobs(call_log) == {first["job_id"], third["job_id"], fourth["job_id"]}
    assert third.get("duplicate_of") is None and fourth.get("duplicate_of") is None
    assert second["duplicate_of"] == first["job_id"] and first.get("duplicate_of") is None
    assert second["progress"]["pages_done"] == first["progress"]["pages_done"] == 1


def test_a_duplicate_of_a_running_job_waits_and_one_of_a_cancelled_job_is_processed(tmp_path: Path) -> None:
    slow = slow_tesseract(tmp_path / "bin", 1.5)
    first_pdf = _pdf(tmp_path, "a.pdf")
    other_pdf = scanned_pdf(tmp_path / "b.pdf", [sample_lines(3, seed=s) for s in range(9, 15)])  # 6 pages
    with Daemon(tmp_path, tesseract={"command": str(slow)}, **REUSE) as daemon:
        # Both copies at once: one leads, the other waits for it, then takes its results.
        drop(daemon.inbox, first_pdf, "a1.pdf")
        drop(daemon.inbox, first_pdf, "a2.pdf")
        waiting = {}

        def one_waits() -> bool:
            jobs = [daemon.job_for(n) for n in ("a1.pdf", "a2.pdf")]
            found = [j for j in jobs if j is not None and j["status"] == "queued" and j.get("duplicate_of")]
            waiting.update(found[0] if found else {})
            return bool(found)

        daemon.wait_until(one_waits, 30, "one copy to wait for the other")
        jobs = [daemon.wait_for_job(n, {"completed"}) for n in ("a1.pdf", "a2.pdf")]
        leader = next(j for j in jobs if j["job_id"] != waiting["job_id"])
        follower = next(j for j in jobs if j["job_id"] == waiting["job_id"])
        assert follower["duplicate_of"] == leader["job_id"] == waiting["duplicate_of"]
        assert f"job {leader['job_id']}'s, of the same content" in daemon.cli("status", follower["job_id"]).stdout

        # A leader that is cancelled: its waiting duplicate is processed after all.
        drop(daemon.inbox, other_pdf, "b1.pdf")
        b1 = daemon.wait_for_job("b1.pdf", {"processing"})
        drop(daemon.inbox, other_pdf, "b2.pdf")
        daemon.wait_until(lambda: (daemon.job_for("b2.pdf") or {}).get("duplicate_of") == b1["job_id"], 30, "b2 waits")
        b2_id = daemon.job_for("b2.pdf")["job_id"]
        assert f"waits for job {b1['job_id']}" in daemon.cli("status", b2_id).stdout
        assert f"after {b1['job_id']}" in daemon.cli("jobs").stdout
        (daemon.job_dir(b1) / "CANCEL").touch()
        daemon.wait_for_job("b1.pdf", {"cancelled"})
        b2 = daemon.wait_for_job("b2.pdf", {"completed"}, timeout=60)
    assert b2.get("duplicate_of") is None and b2["progress"]["pages_done"] == 6
    assert "leads for its content now" in daemon.log()
    assert (daemon.job_dir(b2) / "result.md").exists()


def test_by_default_and_with_other_settings_the_same_file_is_processed_again(tmp_path: Path) -> None:
    wrapper, call_log = tesseract_call_logger(tmp_path / "bin")
    pdf = _pdf(tmp_path)
    profiles = {"default": {"duplicates": "reuse"}, "fine": {"dpi": 250}, "plain": {"duplicates": "process"}}
    with Daemon(tmp_path, tesseract={"command": str(wrapper)}, profiles=profiles) as daemon:
        drop(daemon.inbox, pdf, "one.pdf")
        one = daemon.wait_for_job("one.pdf", {"completed"})
        drop(daemon.inbox / "fine", pdf, "two.pdf")  # inherits reuse, but renders at another dpi
        drop(daemon.inbox / "plain", pdf, "three.pdf")
        two = daemon.wait_for_job("two.pdf", {"completed"})
        three = daemon.wait_for_job("three.pdf", {"completed"})
    assert _ocred_jobs(call_log) == {one["job_id"], two["job_id"], three["job_id"]}
    assert not any(job.get("duplicate_of") for job in (one, two, three))


def test_two_daemons_racing_on_one_share_ocr_the_content_once(tmp_path: Path) -> None:
    wrapper, call_log = tesseract_call_logger(tmp_path / "bin")
    pdfs = [_pdf(tmp_path, f"doc{i}.pdf", seed=20 + i) for i in range(3)]
    outbox = tmp_path / "outbox"
    config = {"tesseract": {"command": str(wrapper)}, **REUSE}
    with (
        Daemon(tmp_path, "d1", inbox=tmp_path / "in1", outbox=outbox, **config) as first,
        Daemon(tmp_path, "d2", inbox=tmp_path / "in2", outbox=outbox, **config) as second,
    ):
        for i, pdf in enumerate(pdfs):  # each content into both inboxes at once
            drop(first.inbox, pdf, f"doc{i}-d1.pdf")
            drop(second.inbox, pdf, f"doc{i}-d2.pdf")
        jobs = [first.wait_for_job(f"doc{i}-{d}.pdf", {"completed"}) for i in range(3) for d in ("d1", "d2")]
    ocred = _ocred_jobs(call_log)
    for i in range(3):
        pair = jobs[2 * i : 2 * i + 2]
        leaders = [job for job in pair if job.get("duplicate_of") is None]
        assert len(leaders) == 1, f"doc{i}: {[(j['job_id'], j.get('duplicate_of')) for j in pair]}"
        follower = next(job for job in pair if job is not leaders[0])
        assert follower["duplicate_of"] == leaders[0]["job_id"]
        assert leaders[0]["job_id"] in ocred and follower["job_id"] not in ocred
    assert len(ocred) == 3
