"""The main loop's outbox scan and the job API's listing with many finished jobs: what they read again
and what they must still notice. Real folders; the service's scan is called directly (no threads)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from ocr_watcher.api.index import JobIndex
from ocr_watcher.api.views import select_page
from ocr_watcher.config import load_config
from ocr_watcher.retention.policy import JobUsage, Limits, choose_deletions, choose_oldest
from ocr_watcher.retention.sweeper import Retention
from ocr_watcher.service import Service
from ocr_watcher.spool.layout import RETRY
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker, iso, utc_now
from ocr_watcher.spool.store import JobStore
from ocr_watcher.spool.walk import OutboxWalker

from .pdfgen import text_pdf

OLD_NS = 1_700_000_000 * 10**9  # an outbox mtime long past: a listing that saw it is trusted


def make_job(store: JobStore, name: str, status: Status, worker: str = "me", minutes_ago: float = 60) -> str:
    created = utc_now() - timedelta(minutes=minutes_ago)
    meta = JobMeta(
        job_id=f"{name}_20260301_120000_{abs(hash(name)) % 16**8:08x}",
        source=Source(name=name, inbox_path=name, size=1),
        input_file="input.pdf",
        kind="pdf",
        created_at=created,
        worker=Worker(id=worker, host="h", pid=1, heartbeat_at=created),
    )
    if status is not Status.QUEUED:
        meta.transition(Status.PROCESSING, now=created + timedelta(seconds=1))
    if status.terminal:
        meta.transition(status, now=created + timedelta(seconds=2))
    paths = store.paths(meta.job_id)
    paths.pages.mkdir(parents=True)
    text_pdf(paths.input("input.pdf"), [["one page"]])
    store.save(meta)
    return meta.job_id


def beat(store: JobStore, worker: str, at: str) -> None:
    store.layout.workers.mkdir(parents=True, exist_ok=True)
    record = {"worker_id": worker, "host": "h", "pid": 1, "heartbeat_at": at, "state": "running"}
    store.layout.worker_heartbeat(worker).write_text(json.dumps(record))


def settle(outbox: Path, tick: int = 0) -> None:
    """Give the outbox an old mtime, as one that has not changed for a while has."""
    os.utime(outbox, ns=(OLD_NS, OLD_NS + tick))


@pytest.fixture
def service(tmp_path: Path) -> Service:
    overrides = {
        "inbox": str(tmp_path / "inbox"),
        "outbox": str(tmp_path / "outbox"),
        "engine": "text",
        "worker_id": "me",
        "jobs": {"heartbeat_lease_seconds": 60, "fsync": False},
        "http": {"enabled": False},
    }
    for folder in ("inbox", "outbox"):
        (tmp_path / folder).mkdir()
    return Service(load_config(environ={}, overrides=overrides))


def test_an_unchanged_outbox_is_not_listed_again_yet_retries_takeovers_and_changes_are_seen(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given 30 completed jobs, a failed one and another daemon's job in progress, when the outbox
    scan runs again and again, then no finished job is read again and, while no folder comes or goes,
    the outbox is not even listed; yet a RETRY, the other daemon's lease running out, a new job
    folder and a deleted one are all noticed."""
    store = service.store
    done = [make_job(store, f"done{i}.pdf", Status.COMPLETED) for i in range(30)]
    failed = make_job(store, "failed.pdf", Status.FAILED)
    foreign = make_job(store, "theirs.pdf", Status.PROCESSING, worker="other")
    beat(store, "other", iso(utc_now()))  # the other daemon is alive
    settle(store.root)
    reads: list[str] = []
    listings: list[int] = []
    load, listing = store.load_unless_completed, store.iter_job_ids
    monkeypatch.setattr(store, "load_unless_completed", lambda job_id: reads.append(job_id) or load(job_id))
    monkeypatch.setattr(store, "iter_job_ids", lambda: listings.append(1) or listing())

    service.scanner.scan(startup=True)
    assert sorted(reads) == sorted([*done, failed, foreign]) and len(listings) == 1
    assert sorted(store.completed.ids()) == sorted(done) and not service.jobs.active

    reads.clear()
    listings.clear()
    for _ in range(3):
        service.scanner.scan()
    assert reads == [foreign] * 3 and listings == []  # only the job that can change, and no listing

    store.request(failed, RETRY)
    service.scanner.scan()
    assert failed in service.jobs.active and service.jobs.active[failed].meta.status is Status.QUEUED

    beat(store, "other", iso(utc_now() - timedelta(hours=1)))  # the other daemon has stopped
    service.scanner.scan()
    assert foreign in service.jobs.active and service.jobs.active[foreign].meta.worker.id == "me"
    assert listings == []

    beat(store, "third", iso(utc_now()))
    newcomer = make_job(store, "new.pdf", Status.QUEUED, worker="third")  # a live daemon's new claim
    reads.clear()
    service.scanner.scan()
    assert reads == [newcomer] and len(listings) == 1  # the folder list changed: listed again
    settle(store.root, 1)
    service.scanner.scan()  # a listing of the settled outbox, trusted from now on
    reads.clear()
    listings.clear()
    service.scanner.scan()
    assert reads == [newcomer] and listings == []

    shutil.rmtree(store.paths(done[0]).dir)
    service.scanner.scan()
    assert done[0] not in store.completed and len(store.completed) == 29


def test_the_listing_index_reads_completed_jobs_once_and_pages_like_the_plain_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an outbox of completed, failed, queued and processing jobs, then every page and filter
    of the index equals the plain selection over all jobs newest first; later refreshes of an
    unchanged outbox read no completed job and list nothing; a job the daemon completed (noted in the
    store) is listed as completed without being read."""
    store = JobStore(tmp_path / "outbox", fsync=False)
    store.root.mkdir()
    statuses = [Status.COMPLETED] * 12 + [Status.FAILED] * 3 + [Status.QUEUED, Status.PROCESSING]
    ids = [make_job(store, f"j{i:02d}.pdf", s, minutes_ago=100 - 3 * i) for i, s in enumerate(statuses)]
    settle(store.root)
    index = JobIndex(store, ttl=0)
    everything = index.newest_first()
    assert [job_id for job_id, _ in everything] == ids[::-1]
    assert [status for _, status in everything] == [s.value for s in statuses[::-1]]
    for wanted in (set(), {"completed"}, {"failed"}, {"queued", "processing"}, {"completed", "failed"}):
        for offset, limit in ((0, 5), (3, 4), (10, 50), (16, 5)):
            assert index.page(wanted, offset, limit) == select_page(everything, wanted, offset, limit)
    assert index.counts() == {"queued": 1, "processing": 1, "completed": 12, "failed": 3, "cancelled": 0}

    reads: list[str] = []
    peek, listing = store.peek, store.iter_job_ids
    monkeypatch.setattr(store, "peek", lambda job_id: reads.append(job_id) or peek(job_id))
    monkeypatch.setattr(store, "iter_job_ids", lambda: reads.append("LISTING") or listing())
    index.counts()
    assert reads == []  # metadata.json unchanged: stat'ed only; completed jobs: not even that
    processing = ids[-1]
    meta = store.load(processing)
    meta.transition(Status.COMPLETED)
    store.save(meta)
    os.utime(store.paths(processing).metadata, ns=(OLD_NS, OLD_NS))  # a coarse-mtime filesystem
    store.completed.add_meta(meta)  # as the daemon does when it completes a job
    assert index.counts()["completed"] == 13 and reads == []
    assert index.page({"processing"}, 0, 10) == ([], 0)


def test_retention_reads_only_as_far_as_it_deletes(tmp_path: Path) -> None:
    """Given 40 completed jobs, when count or age limits hold a few of them, then a pass deletes the
    oldest ones exactly as choose_deletions over the whole inventory would; choose_oldest reads its
    candidates only as far as it deletes."""
    store = JobStore(tmp_path / "outbox", fsync=False)
    store.root.mkdir()
    for i in range(40):
        make_job(store, f"d{i:02d}.pdf", Status.COMPLETED, minutes_ago=1000 - 10 * i)
    retention = Retention(store)
    now = utc_now()
    for limits in (Limits(max_count=37), Limits(max_age=timedelta(minutes=975)), Limits(max_bytes=1)):
        expected = choose_deletions(retention.inventory(), limits, now)
        assert [d.job_id for d in retention.run_pass(limits, now, dry_run=True).deletions] == [
            d.job_id for d in expected
        ]
    read: list[str] = []

    def candidates():
        for i in range(100):
            read.append(str(i))
            yield JobUsage(str(i), 10, True, finished_at=now - timedelta(hours=100 - i))

    deletions = choose_oldest(candidates(), 100, 1000, Limits(max_count=97), now)
    assert [d.job_id for d in deletions] == ["0", "1", "2"] and read == ["0", "1", "2", "3"]


def test_a_completed_job_with_a_pending_retry_is_not_chosen(tmp_path: Path) -> None:
    """Given two completed jobs over a count limit of 1, the older with a RETRY file, then retention
    chooses the newer (the RETRY is checked when a completed job is chosen, not kept per job)."""
    store = JobStore(tmp_path / "outbox", fsync=False)
    store.root.mkdir()
    old, new = (make_job(store, f"{n}.pdf", Status.COMPLETED, minutes_ago=m) for n, m in (("old", 90), ("new", 30)))
    store.request(old, RETRY)  # ignored by the daemon for a completed job, which then removes it
    result = Retention(store).run_pass(Limits(max_count=1), dry_run=True)
    assert [d.job_id for d in result.deletions] == [new]  # as before: a job with a RETRY is kept


def test_a_job_another_daemon_retried_is_taken_over_when_that_daemon_dies(tmp_path: Path) -> None:
    """Given two daemons sharing an outbox and a failed job, when a RETRY is acted on by the second
    daemon before the first one's scan sees the file, and the second daemon then dies, then the first
    takes the job over once the second's lease has run out (invariant 4), and not before. (Before, the
    first kept the job in its RETRY watch list and never read it again.) The lease runs out on the
    first daemon's clock, moved past it: a real lease, no race with the wall clock."""

    def daemon(name: str) -> Service:
        overrides = {
            "inbox": str(tmp_path / "inbox"),
            "outbox": str(tmp_path / "outbox"),
            "engine": "text",
            "worker_id": name,
            "jobs": {"heartbeat_lease_seconds": 60, "fsync": False},
            "http": {"enabled": False},
        }
        return Service(load_config(environ={}, overrides=overrides))

    for folder in ("inbox", "outbox"):
        (tmp_path / folder).mkdir()
    first, second = daemon("first"), daemon("second")
    job = make_job(first.store, "failed.pdf", Status.FAILED, worker="first")
    first.scanner.scan(startup=True)
    second.scanner.scan(startup=True)
    first.store.request(job, RETRY)
    second.scanner.scan()  # the second daemon retries it (and removes RETRY) first
    assert job in second.jobs.active and not first.store.has_control(job, RETRY)
    beat(first.store, "second", iso(utc_now()))  # then it dies: its last heartbeat is now
    first.scanner.scan()
    assert job not in first.jobs.active, "within the second's lease the job stays the second's"
    first.heartbeats.clock = lambda: utc_now() + timedelta(seconds=61)
    first.scanner.scan()
    assert job in first.jobs.active


def test_one_walk_lists_an_unchanged_outbox_once_and_forgets_only_what_a_full_listing_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walker the scan, retention and the index share: completed jobs are never handed out, an
    unchanged outbox is not listed again, and a vanished outbox makes nothing forgotten."""
    store = JobStore(tmp_path / "outbox", fsync=False)
    store.root.mkdir()
    done = [make_job(store, f"d{i}.pdf", Status.COMPLETED) for i in range(3)]
    failed = make_job(store, "f.pdf", Status.FAILED)
    for job_id in done[:2]:
        store.completed.note(job_id, store.peek(job_id))
    listings: list[int] = []
    listing = store.iter_job_ids
    monkeypatch.setattr(store, "iter_job_ids", lambda: listings.append(1) or listing())
    walker = OutboxWalker(store)
    settle(store.root)
    # A first walk lists the folder, hands out all but the completed jobs it knows
    walk = walker.walk(["not-asked-for"])
    assert sorted(walk) == sorted([done[2], failed]) and listings == [1]
    walk.completed_found()  # done[2], read and found completed by the caller
    store.completed.note(done[2], store.peek(done[2]))
    assert walk.finish() and listings == [1]  # every completed job was listed: nothing to prune
    # An unchanged outbox: only what the caller says can change, and no listing
    walk = walker.walk([failed])
    assert list(walk) == [failed] and not walk.finish() and listings == [1]
    # A folder removed: the mtime changes, the next walk lists, and the gone job is forgotten
    shutil.rmtree(store.paths(done[0]).dir)
    settle(store.root, tick=1)
    walk = walker.walk([failed])
    assert list(walk) == [failed] and walk.finish()
    assert done[0] not in store.completed and done[1] in store.completed
    # An outbox gone away lists empty, but forgets nothing
    walk = walker.walk([], full=True)
    store.root.rename(tmp_path / "away")
    assert list(walk) == [] and not walk.finish()
    assert done[1] in store.completed and done[2] in store.completed


def test_retention_measures_an_unchanged_outbox_without_listing_it(tmp_path: Path, monkeypatch) -> None:
    """Given a pass over an outbox whose folders have not changed since the last pass, then retention
    counts and sizes the jobs from what it knows, and still sees a failed job turned completed."""
    store = JobStore(tmp_path / "outbox", fsync=False)
    store.root.mkdir()
    for i in range(4):
        make_job(store, f"d{i}.pdf", Status.COMPLETED)
    failed = make_job(store, "f.pdf", Status.FAILED)
    retention = Retention(store)
    settle(store.root)
    first = retention.run_pass(Limits(max_count=100), dry_run=True)
    listings: list[int] = []
    listing = store.iter_job_ids
    monkeypatch.setattr(store, "iter_job_ids", lambda: listings.append(1) or listing())
    again = retention.run_pass(Limits(max_count=100), dry_run=True)
    assert (again.job_count, again.total_bytes) == (first.job_count, first.total_bytes) == (5, first.total_bytes)
    assert listings == []
    meta = store.load(failed)  # retried elsewhere and completed
    meta.transition(Status.QUEUED)
    meta.transition(Status.PROCESSING)
    meta.transition(Status.COMPLETED)
    store.save(meta)
    settle(store.root)
    result = retention.run_pass(Limits(max_count=4), dry_run=True)
    assert listings == [] and failed in store.completed
    assert len(result.deletions) == 1 and result.job_count == 4  # five jobs, one over the limit
