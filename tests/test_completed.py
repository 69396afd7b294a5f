"""The outbox's many finished jobs: the shared record of completed jobs, the cheap read of a completed
job's metadata.json, and when a walker must list the outbox again. Real folders, no daemon."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ocr_watcher.spool.completed import (
    Completed,
    CompletedJobs,
    completed_times,
    from_ms,
    header_completed_times,
    iso_ms,
    ms_of,
    pack,
    unpack,
)
from ocr_watcher.spool.listing import OutboxWatch, listing_still_valid
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker
from ocr_watcher.spool.store import JobStore

START = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def make_meta(job_id: str, status: Status, created: datetime = START) -> JobMeta:
    meta = JobMeta(
        job_id=job_id,
        source=Source(name="a.pdf", inbox_path="a.pdf", size=10),
        input_file="input.pdf",
        created_at=created,
        worker=Worker(id="w1", host="h", pid=1),
    )
    if status is not Status.QUEUED:
        meta.transition(Status.PROCESSING, now=created + timedelta(seconds=1))
    if status.terminal:
        meta.transition(status, now=created + timedelta(seconds=3))
    return meta


def job_id(i: int) -> str:
    return f"doc{i}.pdf_20260301_120000_{i:08x}"


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "outbox", fsync=False)
    s.root.mkdir()
    return s


def save(store: JobStore, meta: JobMeta) -> str:
    store.paths(meta.job_id).dir.mkdir(exist_ok=True)
    store.save(meta)
    return meta.job_id


# -- the packed record ------------------------------------------------------------------------------
def test_a_record_packs_into_one_int_and_back() -> None:
    for created, finished, size in [(0, None, None), (1, 0, 0), (1_780_000_000_123, 1_780_000_000_999, 10**12)]:
        assert unpack(pack(created, finished, size)) == Completed(created, finished, size)
    assert Completed(5, None, None).ended_ms == 5 and Completed(5, 9, None).ended_ms == 9


def test_times_in_milliseconds_from_what_metadata_json_holds() -> None:
    ms = 1_772_366_400_123  # 2026-03-01T12:00:00.123Z
    assert iso_ms("2026-03-01T12:00:00.123Z") == ms
    assert iso_ms("2026-03-01T12:00:00.123+00:00") == ms
    assert iso_ms("2026-03-01T13:00:00.123+01:00") == ms
    assert iso_ms("2026-03-01T12:00:00.123") == ms  # no zone: UTC, as the daemon writes it
    assert iso_ms("2026-03-01T12:00:00.123456Z") == ms  # sub-millisecond digits are dropped
    for bad in (None, 7, "", "yesterday", "1960-01-01T00:00:00Z", "2300-01-01T00:00:00Z"):
        assert iso_ms(bad) is None
    assert from_ms(ms) == datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
    assert ms_of(from_ms(ms)) == ms


# -- reading a completed job cheaply ----------------------------------------------------------------
def test_the_header_read_agrees_with_parsing_the_whole_file(store: JobStore) -> None:
    """Given metadata.json as the daemon writes it, for every status, then the header read finds the
    same (created, finished) as parsing the JSON, for completed jobs only."""
    for i, status in enumerate(Status):
        meta = make_meta(job_id(i), status)
        meta.warnings = ['a "status": "completed" in a warning', '\n  "created_at": "1999-01-01T00:00:00Z"']
        save(store, meta)
        raw = store.paths(meta.job_id).metadata.read_bytes()
        expected = completed_times(json.loads(raw), meta.job_id)
        assert header_completed_times(raw, meta.job_id) == expected
        assert (expected is not None) == (status is Status.COMPLETED)
    assert expected is None  # the last status is cancelled
    completed = make_meta(job_id(9), Status.COMPLETED)
    save(store, completed)
    raw = store.paths(completed.job_id).metadata.read_bytes()
    assert header_completed_times(raw, completed.job_id) == (ms_of(START), ms_of(START + timedelta(seconds=3)))


def test_any_other_layout_is_left_to_the_json_parser(store: JobStore) -> None:
    """Given completed jobs' metadata.json written compactly, with other key orders or indents, or
    naming another job, then the header read declines (None) and parsing decides."""
    meta = make_meta(job_id(1), Status.COMPLETED)
    doc = meta.to_json()
    variants = [
        json.dumps(doc),  # compact
        json.dumps(doc, indent=4),
        json.dumps(dict(sorted(doc.items())), indent=2),  # status no longer third
        json.dumps({"schema_version": 1, "job_id": meta.job_id, "status": "queued", "x": doc}, indent=2),
    ]
    for text in variants:
        assert header_completed_times(text.encode(), meta.job_id) is None
    mine = json.dumps(doc, indent=2, ensure_ascii=False).encode()
    assert header_completed_times(mine, meta.job_id) is not None
    assert header_completed_times(mine, job_id(2)) is None  # a copied file names another job
    no_created = mine.replace(b'"created_at"', b'"made_at"')
    assert header_completed_times(no_created, meta.job_id) is None


def test_load_unless_completed_notes_completed_jobs_and_loads_the_others(store: JobStore) -> None:
    done = save(store, make_meta(job_id(1), Status.COMPLETED))
    failed = save(store, make_meta(job_id(2), Status.FAILED))
    compact = make_meta(job_id(3), Status.COMPLETED)
    store.paths(compact.job_id).dir.mkdir()
    store.paths(compact.job_id).metadata.write_text(json.dumps(compact.to_json()))  # another writer's layout
    broken = job_id(4)
    store.paths(broken).dir.mkdir()
    store.paths(broken).metadata.write_text("{not json")
    assert store.load_unless_completed(done) is None and store.load_unless_completed(compact.job_id) is None
    assert sorted(store.completed.ids()) == sorted([done, compact.job_id])
    loaded = store.load_unless_completed(failed)
    assert loaded is not None and loaded.status is Status.FAILED and failed not in store.completed
    assert store.load_unless_completed(broken) is None and broken not in store.completed
    assert store.load_unless_completed(job_id(5)) is None  # no folder at all
    assert store.completed.get(done) == Completed(ms_of(START), ms_of(START + timedelta(seconds=3)), None)


# -- the shared record ------------------------------------------------------------------------------
def test_sizes_are_kept_when_a_job_is_noted_again_and_pruning_keeps_present_folders(store: JobStore) -> None:
    completed = store.completed
    ids = [save(store, make_meta(job_id(i), Status.COMPLETED)) for i in range(4)]
    for i in ids:
        assert store.load_unless_completed(i) is None
    completed.set_size(ids[0], 1234)
    completed.add(ids[0], 1, 2)  # noted again by another walker
    assert completed.get(ids[0]) == Completed(1, 2, 1234)
    completed.set_size("never-noted", 5)  # no effect
    # ids[1] is deleted, ids[2] replaced by a symlink, ids[3] stays but is missing from a stale listing
    shutil.rmtree(store.paths(ids[1]).dir)
    target = store.root.parent / "elsewhere"
    store.paths(ids[2]).dir.rename(target)
    os.symlink(target, store.paths(ids[2]).dir)
    assert completed.prune({ids[0]}, store.root) == 2
    assert sorted(completed.ids()) == sorted([ids[0], ids[3]])


def test_ordered_follows_additions_out_of_order_readditions_and_removals(store: JobStore) -> None:
    completed = CompletedJobs()
    for i in (3, 1, 2):
        completed.add(job_id(i), 1000 + i, None)
    assert completed.ordered() == [job_id(1), job_id(2), job_id(3)]
    first = completed.ordered()
    completed.add(job_id(9), 2000, None)  # newer than all: appended
    completed.add(job_id(0), 500, None)  # finished late: put in its place
    assert completed.ordered() == [job_id(0), job_id(1), job_id(2), job_id(3), job_id(9)]
    assert first == [job_id(1), job_id(2), job_id(3)]  # a list once returned never changes
    completed.forget(job_id(2))
    completed.forget(job_id(3))
    completed.add(job_id(3), 1003, None)  # forgotten, then noted again: listed once
    completed.add(job_id(5), 1001, None)  # the same time as another: by id
    assert completed.ordered() == [job_id(0), job_id(1), job_id(5), job_id(3), job_id(9)]
    many = {f"late{i:03d}_20260301_120000_{i:08x}": 1500 - i for i in range(100)}
    for name, created in many.items():
        completed.add(name, created, None)
    order = completed.ordered()
    keys = [(completed.get(i).created_ms, i) for i in order]
    assert keys == sorted(keys) and len(order) == len(set(order)) == 105


# -- when to list the outbox again ------------------------------------------------------------------
def test_listing_still_valid_only_for_the_same_trusted_recent_mtime() -> None:
    assert listing_still_valid(5, 5, True, 1.0, 30.0)
    assert not listing_still_valid(6, 5, True, 1.0, 30.0)  # a folder came or went
    assert not listing_still_valid(5, 5, False, 1.0, 30.0)  # the mtime was too fresh to trust
    assert not listing_still_valid(5, 5, True, 31.0, 30.0)  # listed long ago: list anyway
    assert not listing_still_valid(None, None, True, 1.0, 30.0)  # cannot tell


def test_the_outbox_watch_sees_folders_come_and_go_and_distrusts_fresh_mtimes(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    root.mkdir()
    now = [100.0]
    watch = OutboxWatch(root, margin=2.0, max_age=30.0, clock=lambda: now[0])
    stamp = watch.stamp()
    assert not watch.unchanged(stamp)  # never listed
    watch.listed(stamp)
    assert not watch.unchanged(watch.stamp())  # the mtime was seen within 2 s of its change
    old = time.time_ns() - 10 * 10**9
    os.utime(root, ns=(old, old))
    watch.listed(watch.stamp())
    assert watch.unchanged(watch.stamp())
    (root / job_id(1)).mkdir()  # a new job folder
    assert not watch.unchanged(watch.stamp())
    os.utime(root, ns=(old, old + 1))
    watch.listed(watch.stamp())
    assert watch.unchanged(watch.stamp())
    (root / job_id(1)).rmdir()
    assert not watch.unchanged(watch.stamp())
    os.utime(root, ns=(old, old + 2))
    watch.listed(watch.stamp())
    now[0] += 31  # listed more than max_age ago
    assert not watch.unchanged(watch.stamp())
    assert not OutboxWatch(tmp_path / "missing").unchanged(None)
