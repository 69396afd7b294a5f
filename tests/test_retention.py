"""Retention: the pure choice, then real job folders, the `purge` command and a real daemon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ocr_watcher.config import Config, RetentionConfig, load_config
from ocr_watcher.hooks import HookList, Hooks
from ocr_watcher.observe import JobDeleted, OutboxMeasured, Snapshot, Started, snapshot_of
from ocr_watcher.retention import sweeper as sweeper_module
from ocr_watcher.retention.daemon_hooks import RetentionHooks
from ocr_watcher.retention.policy import Deletion, JobUsage, Limits, choose_deletions
from ocr_watcher.retention.sweeper import Retention, folder_size
from ocr_watcher.service import Service
from ocr_watcher.spool.ids import new_job_id
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker, utc_now
from ocr_watcher.spool.store import JobStore

from .daemon import REPO, Daemon, drop
from .pdfgen import text_pdf

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
KB = 1000


# -- the pure choice -------------------------------------------------------------------------------
def usage(name: str, hours_ago: float, size: int = 100, terminal: bool = True) -> JobUsage:
    ended = NOW - timedelta(hours=hours_ago)
    return JobUsage(name, size, terminal, finished_at=ended if terminal else None, created_at=ended - HOUR)


def chosen(deletions: list[Deletion]) -> list[tuple[str, str]]:
    return [(d.job_id, d.reason) for d in deletions]


def test_no_limits_delete_nothing():
    jobs = [usage("a", 10_000, size=10**12), usage("b", 1)]
    assert choose_deletions(jobs, Limits(), NOW) == []


def test_age_alone_deletes_only_jobs_older_than_the_limit():
    jobs = [usage("new", 1), usage("old", 50), usage("older", 80), usage("edge", 24)]
    deletions = choose_deletions(jobs, Limits(max_age=timedelta(hours=24)), NOW)
    assert chosen(deletions) == [("older", "age"), ("old", "age")]  # oldest first; exactly 24 h is kept


def test_count_alone_deletes_the_oldest_until_within_the_limit():
    jobs = [usage(name, hours) for name, hours in [("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)]]
    deletions = choose_deletions(jobs, Limits(max_count=2), NOW)
    assert chosen(deletions) == [("a", "count"), ("b", "count"), ("c", "count")]
    assert [d.size_bytes for d in deletions] == [100, 100, 100]


def test_storage_alone_deletes_the_oldest_until_within_the_limit():
    jobs = [usage("a", 3, size=500), usage("b", 2, size=300), usage("c", 1, size=400)]
    assert chosen(choose_deletions(jobs, Limits(max_bytes=800), NOW)) == [("a", "storage")]
    assert chosen(choose_deletions(jobs, Limits(max_bytes=1200), NOW)) == []
    assert chosen(choose_deletions(jobs, Limits(max_bytes=399), NOW)) == [
        ("a", "storage"),
        ("b", "storage"),
        ("c", "storage"),
    ]


def test_limits_together_name_the_first_reason_that_applies():
    # Given old jobs, more jobs than allowed and too many bytes
    jobs = [usage("old1", 100), usage("old2", 90), usage("mid", 3, size=1000), usage("new1", 2), usage("new2", 1)]
    limits = Limits(max_age=timedelta(hours=48), max_count=3, max_bytes=250)
    # Then age removes the old ones (which also brings the count to 3), storage removes one more
    assert chosen(choose_deletions(jobs, limits, NOW)) == [("old1", "age"), ("old2", "age"), ("mid", "storage")]


def test_count_then_storage():
    jobs = [usage("a", 4, size=100), usage("b", 3, size=100), usage("c", 2, size=900), usage("d", 1, size=100)]
    limits = Limits(max_count=3, max_bytes=500)
    assert chosen(choose_deletions(jobs, limits, NOW)) == [("a", "count"), ("b", "storage"), ("c", "storage")]


def test_running_jobs_count_but_survive_even_when_limits_cannot_be_met():
    # Given three old running jobs (counted and measured) and two terminal ones
    jobs = [usage(f"run{i}", 500 + i, size=10_000, terminal=False) for i in range(3)]
    jobs += [usage("done1", 2), usage("done2", 1)]
    limits = Limits(max_age=timedelta(hours=1), max_count=1, max_bytes=1)
    deletions = choose_deletions(jobs, limits, NOW)
    # Then only the terminal jobs go, although count and storage stay over their limits
    assert chosen(deletions) == [("done1", "age"), ("done2", "count")]


def test_ties_are_broken_by_created_at_then_job_id():
    same = NOW - HOUR
    jobs = [
        JobUsage("b", 1, True, finished_at=same, created_at=same - HOUR),
        JobUsage("a", 1, True, finished_at=same, created_at=same - HOUR),
        JobUsage("z", 1, True, finished_at=same, created_at=same - 2 * HOUR),
    ]
    assert [d.job_id for d in choose_deletions(jobs, Limits(max_count=1), NOW)] == ["z", "a"]
    assert [d.job_id for d in choose_deletions(list(reversed(jobs)), Limits(max_count=1), NOW)] == ["z", "a"]


def test_created_at_stands_in_for_a_missing_finished_at():
    jobs = [
        JobUsage("finished-late", 1, True, finished_at=NOW - HOUR, created_at=NOW - 10 * HOUR),
        JobUsage("no-finish", 1, True, finished_at=None, created_at=NOW - 5 * HOUR),
    ]
    assert [d.job_id for d in choose_deletions(jobs, Limits(max_count=1), NOW)] == ["no-finish"]


def test_zero_limits_in_the_config_mean_no_limit():
    limits = Limits.from_config(RetentionConfig(max_job_storage_mb=0, max_job_count=0, max_job_age_hours=0))
    assert limits == Limits()
    limits = Limits.from_config(RetentionConfig(max_job_storage_mb=1.5, max_job_count=7, max_job_age_hours=2))
    assert limits == Limits(max_bytes=1572864, max_count=7, max_age=timedelta(hours=2))


# -- real job folders ------------------------------------------------------------------------------
def make_job(
    store: JobStore,
    name: str,
    status: Status,
    hours_ago: float,
    *,
    input_size: int = 10 * KB,
    epoch: int = 1,
    now: datetime = NOW,
) -> str:
    """A job folder as the daemon leaves it: metadata.json, the input, pages, result for completed."""
    finished = now - timedelta(hours=hours_ago)
    created = finished - timedelta(minutes=5)
    job_id = new_job_id(name, created)
    meta = JobMeta(
        job_id=job_id,
        source=Source(name=name, inbox_path=name, size=input_size),
        input_file="input.pdf",
        created_at=created,
        worker=Worker(id="w1", host="h", pid=1, epoch=epoch),
    )
    meta.transition(Status.PROCESSING, now=created)
    if status.terminal:
        meta.transition(status, now=finished)
    if status is Status.QUEUED:
        meta.status, meta.started_at = Status.QUEUED, None
    paths = store.paths(job_id)
    paths.pages.mkdir(parents=True)
    paths.input("input.pdf").write_bytes(b"%PDF-" + b"x" * (input_size - 5))
    paths.page_md(1).write_text("# page one\n")
    if status is Status.COMPLETED:
        paths.result_md.write_text("# page one\n")
    store.save(meta)
    return job_id


@pytest.fixture
def store(tmp_path) -> JobStore:
    s = JobStore(tmp_path / "outbox", fsync=False)
    s.root.mkdir()
    return s


def job_ids(store: JobStore) -> set[str]:
    return set(store.iter_job_ids())


def assert_nothing_half_deleted(store: JobStore) -> None:
    for job_id in store.iter_job_ids():
        assert store.try_load(job_id) is not None, f"{job_id} has no valid metadata.json"
    trash = store.layout.internal / "trash"
    assert not trash.exists() or os.listdir(trash) == []


def test_age_deletes_old_terminal_jobs_of_every_terminal_status(store):
    old = [make_job(store, f"old-{s.value}.pdf", s, 200) for s in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)]
    new = make_job(store, "new.pdf", Status.COMPLETED, 1)
    result = Retention(store).run_pass(Limits(max_age=timedelta(hours=168)), NOW)
    assert sorted(d.job_id for d in result.deletions) == sorted(old)
    assert {d.reason for d in result.deletions} == {"age"}
    assert job_ids(store) == {new}
    assert_nothing_half_deleted(store)


def test_count_keeps_the_newest(store):
    ids = [make_job(store, f"doc{i}.pdf", Status.COMPLETED, hours) for i, hours in enumerate([5, 4, 3, 2, 1])]
    result = Retention(store).run_pass(Limits(max_count=2), NOW)
    assert [d.job_id for d in result.deletions] == ids[:3]
    assert job_ids(store) == set(ids[3:])
    assert result.job_count == 2 and result.total_bytes == sum(folder_size(store.paths(j).dir) for j in ids[3:])


def test_storage_deletes_the_oldest_until_under_the_limit(store):
    ids = [make_job(store, f"doc{i}.pdf", Status.COMPLETED, 5 - i, input_size=100 * KB) for i in range(5)]
    sizes = [folder_size(store.paths(j).dir) for j in ids]
    # 0.35 MiB holds three of these jobs (about 101 kB each) but not four
    result = Retention(store).run_pass(Limits.from_config(RetentionConfig(max_job_storage_mb=0.35)), NOW)
    assert [(d.job_id, d.reason, d.size_bytes) for d in result.deletions] == [
        (ids[0], "storage", sizes[0]),
        (ids[1], "storage", sizes[1]),
    ]
    assert job_ids(store) == set(ids[2:])


def test_all_limits_together(store):
    ancient = make_job(store, "ancient.pdf", Status.FAILED, 500)
    big = make_job(store, "big.pdf", Status.COMPLETED, 10, input_size=300 * KB)
    mid = make_job(store, "mid.pdf", Status.COMPLETED, 9)
    rest = [make_job(store, f"r{i}.pdf", Status.COMPLETED, 5 - i) for i in range(4)]
    # Each small job holds about 11.4 kB: five are over 50 kB, four are not
    limits = Limits(max_age=timedelta(hours=168), max_count=5, max_bytes=50 * KB)
    result = Retention(store).run_pass(limits, NOW)
    assert [(d.job_id, d.reason) for d in result.deletions] == [(ancient, "age"), (big, "count"), (mid, "storage")]
    assert job_ids(store) == set(rest)


def test_queued_and_processing_jobs_survive_even_as_the_oldest_over_every_limit(store):
    queued = make_job(store, "queued.pdf", Status.QUEUED, 1000, input_size=500 * KB)
    processing = make_job(store, "processing.pdf", Status.PROCESSING, 900, input_size=500 * KB)
    done = make_job(store, "done.pdf", Status.COMPLETED, 800)
    limits = Limits(max_age=timedelta(hours=1), max_count=1, max_bytes=1)
    result = Retention(store).run_pass(limits, NOW)
    assert [d.job_id for d in result.deletions] == [done]
    assert job_ids(store) == {queued, processing}
    assert store.load(queued).status is Status.QUEUED and store.load(processing).status is Status.PROCESSING
    assert result.job_count == 2  # still over the count: nothing more may go


def test_a_job_that_became_active_after_the_choice_is_kept(store):
    job = make_job(store, "retried.pdf", Status.FAILED, 100)
    retention = Retention(store)
    assert [j.job_id for j in retention.inventory() if j.terminal] == [job]
    # A daemon requeues it between the inventory and the deletion
    meta = store.load(job)
    meta.transition(Status.QUEUED)
    store.save(meta)
    assert retention.delete(job) == "it is queued"
    assert store.exists(job)
    assert list(store.paths(job).dir.glob(".lease-*")) == []


def test_a_job_with_a_retry_file_is_not_deleted(store):
    # Given the oldest job is failed with a RETRY waiting for the daemon
    failed = make_job(store, "failed.pdf", Status.FAILED, 500)
    store.request(failed, "RETRY")
    completed = make_job(store, "completed.pdf", Status.COMPLETED, 400)
    newest = make_job(store, "newest.pdf", Status.COMPLETED, 1)
    retention = Retention(store)
    result = retention.run_pass(Limits(max_count=2), NOW)
    # Then it stays (and counts), the next oldest goes instead
    assert [d.job_id for d in result.deletions] == [completed]
    assert job_ids(store) == {failed, newest}
    # And a RETRY created after the inventory is honoured at deletion time, under the lease
    other = make_job(store, "other.pdf", Status.CANCELLED, 300)
    assert other in {j.job_id for j in retention.inventory() if j.terminal}
    store.request(other, "RETRY")
    assert retention.delete(other) == "a RETRY is pending"
    assert store.exists(other) and list(store.paths(other).dir.glob(".lease-*")) == []


def test_nothing_outside_the_job_folders_is_touched(store, tmp_path):
    # Given, next to old terminal jobs: a file, a folder that is not a job, a file named like a job,
    # and a symlink named like a job pointing at a job-like folder outside the outbox
    old = [make_job(store, f"old{i}.pdf", Status.COMPLETED, 1000) for i in range(3)]
    (store.root / "notes.txt").write_text("keep me")
    (store.root / "not a job").mkdir()
    (store.root / "not a job" / "file.txt").write_text("keep me")
    (store.root / "file.pdf_20200101_000000_aaaaaaaa").write_text("a file, not a job folder")
    elsewhere = JobStore(tmp_path / "elsewhere", fsync=False)
    elsewhere.root.mkdir()
    outside = make_job(elsewhere, "outside.pdf", Status.COMPLETED, 2000)
    link_name = "linked.pdf_20200101_000000_bbbbbbbb"
    os.symlink(elsewhere.paths(outside).dir, store.root / link_name)
    # When every limit is exceeded
    result = Retention(store).run_pass(Limits(max_age=HOUR, max_count=1, max_bytes=1), NOW)
    # Then only the job folders went
    assert sorted(d.job_id for d in result.deletions) == sorted(old)
    assert sorted(os.listdir(store.root)) == sorted(
        [".ocr-watcher", "file.pdf_20200101_000000_aaaaaaaa", link_name, "not a job", "notes.txt"]
    )
    assert (store.root / "not a job" / "file.txt").read_text() == "keep me"
    assert (store.root / link_name).is_symlink()
    assert elsewhere.exists(outside) and (elsewhere.paths(outside).input("input.pdf")).exists()


def test_a_crash_after_the_rename_leaves_only_trash_which_the_next_pass_removes(store):
    # Given a job that a crashed pass had renamed into the trash but not removed
    gone = make_job(store, "gone.pdf", Status.COMPLETED, 10)
    trash = store.layout.internal / "trash"
    trash.mkdir(parents=True)
    os.rename(store.paths(gone).dir, trash / f"{gone}-0badc0de")
    keep = make_job(store, "keep.pdf", Status.COMPLETED, 1)
    # Then it is no job (not listed, not counted), and the next pass removes it
    retention = Retention(store)
    assert [j.job_id for j in retention.inventory()] == [keep]
    result = retention.run_pass(Limits(max_count=5), NOW)
    assert result.trash_removed == 1 and result.deletions == []
    assert job_ids(store) == {keep}
    assert_nothing_half_deleted(store)


def test_a_crash_after_taking_the_lease_is_finished_by_the_next_pass(store):
    # Given a job whose lease a crashed pass took (a while ago) before renaming it
    crashed = make_job(store, "crashed.pdf", Status.COMPLETED, 10)
    lease = store.paths(crashed).lease(2)
    assert store.take_lease(crashed, 2)
    os.utime(lease, (time.time() - 3600, time.time() - 3600))
    newer = make_job(store, "newer.pdf", Status.COMPLETED, 1)
    # When the next pass runs, the job is still whole and looks alive
    assert_nothing_half_deleted(store)
    result = Retention(store, lease_grace_seconds=60).run_pass(Limits(max_count=1), NOW)
    # Then it steps over the abandoned lease and deletes the job
    assert [d.job_id for d in result.deletions] == [crashed]
    assert job_ids(store) == {newer}
    assert_nothing_half_deleted(store)


def test_a_fresh_lease_means_someone_is_taking_the_job_over(store):
    busy = make_job(store, "busy.pdf", Status.FAILED, 10)
    assert store.take_lease(busy, 2)  # a daemon retrying it, right now
    make_job(store, "newer.pdf", Status.COMPLETED, 1)
    result = Retention(store, lease_grace_seconds=60).run_pass(Limits(max_count=1), NOW)
    assert result.deletions == []
    assert result.skipped == [(busy, "another process holds its lease (a retry or takeover in progress)")]
    assert store.exists(busy) and store.paths(busy).lease(2).exists()


def test_an_abandoned_lease_on_a_job_kept_for_retry_is_released(store):
    # Given a failed job with a lease a crash left behind, and a RETRY that appears mid-deletion
    job = make_job(store, "retry-me.pdf", Status.FAILED, 10)
    assert store.take_lease(job, 2)
    os.utime(store.paths(job).lease(2), (time.time() - 3600, time.time() - 3600))
    retention = Retention(store, lease_grace_seconds=60)
    real_take = store.take_next_lease

    def take_then_retry(job_id: str, epoch: int, **steps: int | float) -> list[int]:
        taken = real_take(job_id, epoch, **steps)  # type: ignore[arg-type]
        if taken:
            store.request(job_id, "RETRY")
        return taken

    store.take_next_lease = take_then_retry  # type: ignore[method-assign]
    assert retention.delete(job) == "a RETRY is pending"
    # Then the job stays, with no lease above its epoch: a daemon can take it over at epoch 2
    assert store.exists(job)
    assert list(store.paths(job).dir.glob(".lease-*")) == []
    assert store.take_lease(job, 2)


def test_sizes_are_measured_once_per_finished_job(store, monkeypatch):
    done = [make_job(store, f"done{i}.pdf", Status.COMPLETED, 10 + i) for i in range(3)]
    failed = make_job(store, "failed.pdf", Status.FAILED, 5)
    running = make_job(store, "running.pdf", Status.PROCESSING, 1)
    measured: list[str] = []
    real = sweeper_module.folder_size
    monkeypatch.setattr(sweeper_module, "folder_size", lambda p: measured.append(Path(p).name) or real(p))
    retention = Retention(store)
    first = {j.job_id: j for j in retention.inventory()}
    assert sorted(measured) == sorted([*done, failed, running])
    measured.clear()
    # A second pass measures only the job that is still running
    assert {j.job_id: j for j in retention.inventory()} == first
    assert measured == [running]
    measured.clear()
    # A retried job (metadata.json replaced) is read again; a vanished one is forgotten
    meta = store.load(failed)
    meta.transition(Status.QUEUED)
    store.save(meta)
    os.utime(store.paths(failed).dir, ns=(0, 0))  # be sure the folder's mtime differs
    shutil.rmtree(store.paths(done[0]).dir)
    again = {j.job_id: j for j in retention.inventory()}
    assert sorted(measured) == sorted([failed, running])
    assert done[0] not in again and again[failed].terminal is False
    assert done[0] not in retention._cache


def _snapshot(config: Config) -> Snapshot:
    return snapshot_of(config, [], (0, 0), pages_in_flight=0, inbox_waiting=0, outbox_bytes=None, engines={})


def test_the_hook_reports_deletions_and_the_outbox_size_as_data(store):
    """Given four completed jobs and a count limit of two, when the hook starts and ticks, it reports
    the two oldest as deleted and then the size of what is left, as values (it is handed no daemon)."""
    ids = [make_job(store, f"doc{i}.pdf", Status.COMPLETED, 5 - i, now=utc_now()) for i in range(4)]
    config = Config(inbox=store.root.parent / "inbox", outbox=store.root, retention={"max_job_count": 2})
    hook, reports = RetentionHooks(), []
    hook.on_start(Started(_snapshot(config), store, control=SimpleNamespace()))
    deadline = time.monotonic() + 10
    while not any(isinstance(r, OutboxMeasured) for r in reports) and time.monotonic() < deadline:
        hook.on_tick(_snapshot(config))
        reports += hook.take_reports()
        time.sleep(0.01)
    hook.on_stop(_snapshot(config))
    reports += hook.take_reports()
    deleted = [(r.job_id, r.reason) for r in reports if isinstance(r, JobDeleted)]
    assert deleted == [(ids[0], "count"), (ids[1], "count")]
    assert reports[-1] == OutboxMeasured(sum(folder_size(store.paths(j).dir) for j in ids[2:]))


def test_the_service_hands_retention_reports_to_the_other_hooks_on_the_main_thread(store, tmp_path):
    """Given a daemon (in-process) with retention and a recording hook, when retention deletes, the
    recorder hears of each deletion on the main thread, and the snapshots carry the outbox's size."""
    ids = [make_job(store, f"doc{i}.pdf", Status.COMPLETED, 5 - i, now=utc_now()) for i in range(3)]

    class Recorder(Hooks):
        def __init__(self) -> None:
            self.deleted: list[tuple[str, str, int]] = []

        def on_job_deleted(self, job_id: str, reason: str, size_bytes: int) -> None:
            assert threading.current_thread() is threading.main_thread()
            self.deleted.append((job_id, reason, size_bytes))

    recorder = Recorder()
    overrides = {"inbox": str(tmp_path / "inbox"), "outbox": str(store.root), "engine": "text", "worker_id": "r1"}
    overrides |= {"http": {"enabled": False}, "retention": {"max_job_count": 2}, "pipeline": {"workers": 1}}
    service = Service(load_config(environ={}, overrides=overrides), hooks=HookList([RetentionHooks(), recorder]))
    service.start()
    try:
        deadline = time.monotonic() + 20
        while service.snapshot().outbox_bytes is None and time.monotonic() < deadline:
            service.tick()
    finally:
        service.shutdown()
    assert [(job_id, reason) for job_id, reason, _ in recorder.deleted] == [(ids[0], "count")]
    assert service.snapshot().outbox_bytes == sum(folder_size(store.paths(j).dir) for j in ids[1:])


# -- the purge command -----------------------------------------------------------------------------
def test_purge_dry_run_then_purge(store, tmp_path):
    ids = [make_job(store, f"doc{i}.pdf", Status.COMPLETED, 5 - i, now=utc_now()) for i in range(5)]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"inbox": str(tmp_path / "inbox"), "outbox": str(store.root)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_JOB_", "OCR_WATCHER_"))}
    env["MAX_JOB_COUNT"] = "2"

    def purge(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ocr_watcher.cli", "purge", "--config", str(config), *extra]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)

    dry = purge("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert job_ids(store) == set(ids)
    lines = dry.stdout.splitlines()
    assert [line.split()[2].rstrip(":") for line in lines[:-1]] == ids[:3]
    assert all(line.startswith("would delete ") and "count limit" in line and " ago)" in line for line in lines[:-1])
    assert lines[-1].startswith("would delete 3 jobs (") and "2 jobs" in lines[-1]

    real = purge()
    assert real.returncode == 0, real.stderr
    assert job_ids(store) == set(ids[3:])
    lines = real.stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines[:-1]] == ids[:3]
    assert lines[-1].startswith("deleted 3 jobs (")
    assert_nothing_half_deleted(store)


# -- a real daemon ---------------------------------------------------------------------------------
DELETED_LINE = re.compile(r"(\S+): deleted by retention: (\w+) limit, .*, finished (\S+) \(")


def test_a_running_daemon_keeps_the_three_newest_jobs(tmp_path):
    daemon = Daemon(tmp_path, engine="text", retention={"max_job_count": 3, "interval_seconds": 0.5}).start()
    try:
        for i in range(6):
            drop(daemon.inbox, text_pdf(tmp_path / f"doc{i}.pdf", [[f"Document number {i}"]]))

        def settled() -> bool:
            log = daemon.log()
            jobs = daemon.jobs()
            return (
                log.count(": completed (pages") == 6
                and len(DELETED_LINE.findall(log)) == 3
                and len(jobs) == 3
                and all(job["status"] == "completed" for job in jobs)
            )

        daemon.wait_until(settled, 60, "6 jobs to complete and 3 to be deleted")
    finally:
        daemon.stop()
    deleted = DELETED_LINE.findall(daemon.log())
    kept = daemon.jobs()
    assert {reason for _, reason, _ in deleted} == {"count"}
    assert len({job_id for job_id, _, _ in deleted} | {job["job_id"] for job in kept}) == 6
    newest_deleted = max(datetime.fromisoformat(finished) for _, _, finished in deleted)
    assert all(datetime.fromisoformat(job["finished_at"]) >= newest_deleted for job in kept)
    trash = daemon.outbox / ".ocr-watcher" / "trash"
    assert not trash.exists() or os.listdir(trash) == []
