"""A job's last record is written on a record thread (daemon/record_saves.py) and judged on the main
thread (JobRecords.saved): the same four outcomes as a save on the main thread, against a real
outbox folder."""

from __future__ import annotations

import queue
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ocr_watcher.daemon.active import running_job
from ocr_watcher.daemon.record_saves import RecordSaved, RecordSaves
from ocr_watcher.daemon.records import JobRecords, Saved
from ocr_watcher.spool import store as store_module
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker
from ocr_watcher.spool.store import JobStore
from ocr_watcher.storage_watch import StorageWatch

JOB = "report.pdf_20261207_120000_aaaaaaaa"


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    store = JobStore(tmp_path / "outbox", fsync=True)
    store.paths(JOB).dir.mkdir(parents=True)
    return store


def finished_meta() -> JobMeta:
    meta = JobMeta(
        job_id=JOB,
        source=Source(name="report.pdf", inbox_path="report.pdf", size=1),
        input_file="input.pdf",
        created_at=datetime(2026, 12, 7, tzinfo=timezone.utc),
        worker=Worker(id="w", host="h", pid=1),
    )
    meta.transition(Status.PROCESSING)
    meta.transition(Status.COMPLETED)
    return meta


def saved_on_a_record_thread(store: JobStore, meta: JobMeta) -> tuple[RecordSaved, Saved, list[str]]:
    """One save through the record threads; the event it posted, judged as the main thread would."""
    problems: list[str] = []
    records = JobRecords(store, StorageWatch(lambda problem: None), lambda op, problem: problems.append(op))
    events: queue.Queue[RecordSaved] = queue.Queue()
    saves = RecordSaves(records, events.put)
    job = running_job(meta, store.paths(JOB).input(meta.input_file), set(), "text")
    saves.start(job, meta.model_copy(deep=True))
    event = events.get(timeout=10)
    saves.wait()
    assert event.job is job and not saves.open  # after a stop's wait, saves are the main thread's again
    return event, records.saved(JOB, job.epoch, event.written), problems


def test_a_completed_record_is_written_whole(store):
    meta = finished_meta()
    event, saved, problems = saved_on_a_record_thread(store, meta)
    assert event.written is None and saved is Saved.SAVED and problems == []
    on_disk = store.load(JOB)
    assert on_disk.status is Status.COMPLETED
    # The revision written comes back, for the owner's record in memory to say what is on disk
    assert on_disk.revision == event.revision == meta.revision + 1


def test_a_job_taken_over_meanwhile_is_not_written(store):
    # Given another daemon took the job over (the next epoch's lease) after our copy was made
    store.save(finished_meta().model_copy(update={"status": Status.PROCESSING}))
    assert store.take_next_lease(JOB, 1, abandoned_after=3600)
    event, saved, _ = saved_on_a_record_thread(store, finished_meta())
    # Then our end is not written over theirs
    assert event.written is Saved.FENCED and saved is Saved.FENCED
    assert store.load(JOB).status is Status.PROCESSING


def test_a_deleted_job_folder_is_a_cancel_not_a_storage_fault(store):
    shutil.rmtree(store.paths(JOB).dir)
    event, saved, problems = saved_on_a_record_thread(store, finished_meta())
    assert isinstance(event.written, FileNotFoundError) and saved is Saved.DELETED and problems == []
    assert not store.paths(JOB).dir.exists()  # not made again by the save


def test_an_outbox_that_refuses_the_write_makes_the_job_wait(store, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_write_json", full)  # inside the real save
    event, saved, problems = saved_on_a_record_thread(store, finished_meta())
    assert isinstance(event.written, OSError) and saved is Saved.WAITING and problems == ["metadata"]
    assert event.revision == finished_meta().revision  # nothing written: the next try writes it
