"""The job store on a real folder, and atomic file writing."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ocr_watcher.spool import atomic
from ocr_watcher.spool import store as store_module
from ocr_watcher.spool.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, is_temp_name
from ocr_watcher.spool.layout import OutboxLayout
from ocr_watcher.spool.model import JobMeta, Source, Worker
from ocr_watcher.spool.store import AmbiguousJob, CorruptMetadata, JobNotFound, JobStore
from ocr_watcher.spool.workers import WorkerIdInUse, lock_worker_id

A1 = "report.pdf_20260107_120000_aaaaaaaa"
A2 = "report.pdf_20260107_120000_aaaabbbb"
B1 = "scan.pdf_20260108_090000_12345678"


@pytest.fixture
def store(tmp_path) -> JobStore:
    s = JobStore(tmp_path / "outbox", fsync=False)
    s.root.mkdir()
    for job_id in (A1, A2, B1):
        s.paths(job_id).dir.mkdir()
    return s


def make_meta(job_id: str) -> JobMeta:
    return JobMeta(
        job_id=job_id,
        source=Source(name="x.pdf", inbox_path="x.pdf", size=1),
        input_file="input.pdf",
        created_at=datetime(2026, 1, 7, tzinfo=timezone.utc),
        worker=Worker(id="w", host="h", pid=1),
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if is_temp_name(name))


# -- listing and resolve -------------------------------------------------------------------------
def test_iter_job_ids_lists_only_job_folders(store):
    # Given the outbox also holds the internal area, a stray file and a non-job folder
    (store.root / ".ocr-watcher").mkdir()
    (store.root / "notes.txt").write_text("x")
    (store.root / "not a job").mkdir()
    (store.root / "file.pdf_20260107_120000_cccccccc").write_text("a file, not a folder")
    # Then only job folders are listed
    assert sorted(store.iter_job_ids()) == sorted([A1, A2, B1])


def test_iter_job_ids_of_a_missing_outbox_is_empty(tmp_path):
    assert list(JobStore(tmp_path / "nope").iter_job_ids()) == []


def test_resolve_by_unique_prefix(store):
    assert store.resolve("scan") == B1
    assert store.resolve("report.pdf_20260107_120000_aaaab") == A2
    assert store.resolve(B1) == B1


def test_resolve_full_id_that_is_also_a_prefix_of_nothing_else(store):
    assert store.resolve(A1) == A1


def test_resolve_ambiguous_prefix_names_the_candidates(store):
    with pytest.raises(AmbiguousJob) as excinfo:
        store.resolve("report")
    message = str(excinfo.value)
    assert A1 in message and A2 in message and "2 jobs" in message


def test_resolve_unknown(store):
    with pytest.raises(JobNotFound):
        store.resolve("nothing")


@pytest.mark.parametrize(
    "prefix",
    ["", "../x", "..", ".", "/etc", "/", "./report", "report/../scan", ".ocr-watcher", "../outbox/" + A1],
)
def test_resolve_path_like_input_never_escapes(store, tmp_path, prefix):
    # Given a folder next to the outbox that looks like a job, which a path could reach
    (tmp_path / "x.pdf_20260107_120000_dddddddd").mkdir()
    (store.root / ".ocr-watcher").mkdir(exist_ok=True)
    # Then path-like input is not a job
    with pytest.raises(JobNotFound):
        store.resolve(prefix)


# -- metadata ------------------------------------------------------------------------------------
def test_save_and_load(store):
    meta = make_meta(A1)
    store.save(meta)
    assert store.load(A1) == meta
    assert store.exists(A1)
    assert leftovers(store.paths(A1).dir) == []


def test_every_save_changes_the_metadata_stamp_even_on_the_same_inode_and_mtime(store):
    """Given two rewrites of metadata.json within one timestamp tick, the second on the inode the first
    freed (what a busy filesystem may do), the stamp still changes: the revision tells them apart."""
    meta = make_meta(A1)
    store.save(meta)
    path = store.paths(A1).metadata
    before, first = store.metadata_stamp(A1), path.stat()
    kept = path.with_name("first-inode")
    os.link(path, kept)  # hold on to the first file's inode
    meta.priority = 5
    store.save(meta)
    # The new content in the first file's inode, with the first file's mtime, in its place:
    kept.write_bytes(path.read_bytes())
    os.utime(kept, ns=(first.st_atime_ns, first.st_mtime_ns))
    os.replace(kept, path)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert store.metadata_stamp(A1) != before
    assert store.load(A1).priority == 5 and store.load(A1).revision == before[0] + 1 == 2


def test_a_metadata_json_without_a_revision_is_stamped_by_inode_and_mtime(store):
    """A file written by hand (or by an older daemon) has no revision: its inode and mtime still tell."""
    path = store.paths(A1).metadata
    doc = make_meta(A1).to_json()
    del doc["revision"]
    path.write_text(json.dumps(doc))
    st = path.stat()
    assert store.metadata_stamp(A1) == (-1, st.st_ino, st.st_mtime_ns)
    assert store.metadata_stamp(B1) is None  # no metadata.json


def test_load_missing_and_corrupt(store):
    with pytest.raises(JobNotFound):
        store.load(A1)
    store.paths(A1).metadata.write_text("{not json")
    with pytest.raises(CorruptMetadata):
        store.load(A1)
    assert store.try_load(A1) is None


def test_save_into_a_deleted_job_folder_raises_and_does_not_recreate_it(store):
    meta = make_meta(A1)
    store.paths(A1).dir.rmdir()
    with pytest.raises(FileNotFoundError):
        store.save(meta)
    assert not store.paths(A1).dir.exists()


# -- leases --------------------------------------------------------------------------------------
def test_take_lease_once_per_epoch(store):
    assert store.take_lease(A1, 2) is True
    assert store.take_lease(A1, 2) is False
    assert store.take_lease(A1, 3) is True
    assert store.take_lease(A2, 2) is True  # per job


def test_take_lease_from_8_threads_has_exactly_one_winner(store):
    # Given 8 daemons that all try to take the job over at the same epoch at the same moment
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def contend() -> None:
        barrier.wait()
        won = store.take_lease(A1, 5)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then exactly one wins
    assert sorted(results) == [False] * 7 + [True]


def test_is_fenced(store):
    # Given the owner at epoch 1
    assert not store.is_fenced(A1, 1)
    # When another daemon takes the lease for epoch 2
    assert store.take_lease(A1, 2)
    # Then the epoch-1 owner is fenced, the new owner is not
    assert store.is_fenced(A1, 1)
    assert not store.is_fenced(A1, 2)


# -- pages ---------------------------------------------------------------------------------------
def test_done_pages_are_the_md_files(store):
    pages = store.paths(A1).pages
    pages.mkdir()
    for name in ("0001.md", "0002.json", "0003.md", "0010.md", ".0004.md.tmp-abcd1234", "notes.md", "0005.md.bak"):
        (pages / name).write_text("x")
    assert store.done_pages(A1) == {1, 3, 10}


def test_done_pages_without_pages_folder(store):
    assert store.done_pages(A1) == set()


@pytest.mark.hand_made_pages
def test_write_page_writes_info_and_markdown(store):
    store.write_page(A1, 7, "# Seven", {"page": 7, "engine": "text"})
    assert store.read_page(A1, 7) == "# Seven"
    assert store.read_page_info(A1, 7) == {"page": 7, "engine": "text"}
    assert store.done_pages(A1) == {7}
    assert store.read_page(A1, 8) is None
    assert store.read_page_info(A1, 8) is None
    assert leftovers(store.paths(A1).pages) == []


@pytest.mark.hand_made_pages
def test_write_page_writes_json_before_md(store, monkeypatch):
    # Given that writing the Markdown fails (a crash between the two writes)
    def fail(path, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "atomic_write_text", fail)
    # When a page is written
    with pytest.raises(OSError):
        store.write_page(A1, 1, "text", {"page": 1})
    # Then the info is already there but the page is not a checkpoint: it will be OCRed again
    assert store.read_page_info(A1, 1) == {"page": 1}
    assert store.done_pages(A1) == set()


@pytest.mark.hand_made_pages
def test_write_page_records_the_order(store, monkeypatch):
    order: list[str] = []
    real_json, real_text = store_module.atomic_write_json, store_module.atomic_write_text

    def spy_json(path, *a, **k):
        order.append(Path(path).name)
        real_json(path, *a, **k)

    def spy_text(path, *a, **k):
        order.append(Path(path).name)
        real_text(path, *a, **k)

    monkeypatch.setattr(store_module, "atomic_write_json", spy_json)
    monkeypatch.setattr(store_module, "atomic_write_text", spy_text)
    store.write_page(A1, 12, "x", {})
    assert order == ["0012.json", "0012.md"]


def test_write_page_into_a_deleted_job_does_not_recreate_it(store):
    store.paths(A1).dir.rmdir()
    with pytest.raises(FileNotFoundError):
        store.write_page(A1, 1, "x", {})
    assert not store.paths(A1).dir.exists()


def test_sweep_temp_files(store):
    # Given temp files a crash left in the job folder and in pages/
    paths = store.paths(A1)
    paths.pages.mkdir()
    (paths.dir / ".metadata.json.tmp-0a1b2c3d").write_text("partial")
    (paths.pages / ".0003.md.tmp-deadbeef").write_text("partial")
    (paths.dir / "metadata.json").write_text("{}")
    (paths.pages / "0001.md").write_text("done")
    (paths.dir / ".lease-2").write_text("")
    (paths.dir / "input.pdf").write_text("pdf")
    # When swept
    removed = store.sweep_temp_files(A1)
    # Then only the temp files are gone
    assert removed == 2
    assert sorted(os.listdir(paths.dir)) == [".lease-2", "input.pdf", "metadata.json", "pages"]
    assert os.listdir(paths.pages) == ["0001.md"]
    assert store.sweep_temp_files(A1) == 0


def test_sweep_temp_files_of_a_missing_job(store):
    assert store.sweep_temp_files("gone.pdf_20260101_000000_00000000") == 0


def test_control_files(store):
    assert not store.has_control(A1, "CANCEL")
    store.request(A1, "CANCEL")
    assert store.has_control(A1, "CANCEL")
    store.clear_control(A1, "CANCEL")
    store.clear_control(A1, "CANCEL")
    assert not store.has_control(A1, "CANCEL")
    with pytest.raises(ValueError):
        store.request(A1, "../../etc/passwd")


def test_write_and_remove_result(store):
    store.write_result(A1, "# done", {"job_id": A1})
    assert store.paths(A1).result_md.read_text() == "# done"
    assert json.loads(store.paths(A1).result_metadata.read_text()) == {"job_id": A1}
    store.remove_result(A1)
    store.remove_result(A1)
    assert not store.paths(A1).result_md.exists()


# -- atomic writes -------------------------------------------------------------------------------
def test_atomic_write_replaces_the_whole_file(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1, "text": "ü"})
    atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": 2}
    assert leftovers(tmp_path) == []


def test_atomic_write_mode(tmp_path):
    target = tmp_path / "f"
    atomic_write_bytes(target, b"x", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_into_a_missing_folder_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "f.md", "x")
    assert os.listdir(tmp_path) == []


def test_atomic_write_onto_a_directory_leaves_no_temp_file(tmp_path):
    # Given a directory where the file should go
    (tmp_path / "result.md").mkdir()
    # When a file is written there
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "result.md", "x")
    # Then it fails, and leaves no temp file behind
    assert sorted(os.listdir(tmp_path)) == ["result.md"]
    assert (tmp_path / "result.md").is_dir()


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    # Given an existing file
    target = tmp_path / "metadata.json"
    target.write_text("old")

    # When the fsync of the new version fails (an I/O error mid-write)
    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    # Then the old version is intact and no temp file is left
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["metadata.json"]


def test_unserializable_json_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "f.json", {"x": object()})
    assert os.listdir(tmp_path) == []


def test_temp_names_are_hidden_and_recognised(tmp_path):
    name = atomic.temp_name_for(tmp_path / "metadata.json").name
    assert name.startswith(".metadata.json.tmp-")
    assert is_temp_name(name)
    assert not is_temp_name("metadata.json")
    assert not is_temp_name(".lease-2")


def test_take_next_lease_steps_over_an_abandoned_lease_but_not_a_live_one(tmp_path):
    """A takeover that crashed between taking its lease and writing metadata.json leaves a lease
    nobody uses: once it is older than `abandoned_after`, the next taker steps over it to the next
    epoch (and the old owner stays fenced); a fresh lease means someone is taking over right now."""
    import os as _os

    store = JobStore(tmp_path)
    job_dir = tmp_path / "a.pdf_20260101_000000_0000000a"
    job_dir.mkdir()
    job_id = job_dir.name
    assert store.take_lease(job_id, 2)  # a taker that then crashed
    assert store.take_next_lease(job_id, 1, abandoned_after=60) == []  # still fresh: hands off
    old = store.paths(job_id).lease(2)
    _os.utime(old, (old.stat().st_mtime - 120, old.stat().st_mtime - 120))
    assert store.take_next_lease(job_id, 1, abandoned_after=60) == [2, 3]
    assert store.is_fenced(job_id, 1) and store.is_fenced(job_id, 2) and not store.is_fenced(job_id, 3)
    assert store.take_next_lease(job_id, 1, abandoned_after=60) == []  # 3 is live now


def test_a_lease_its_holder_touches_while_the_record_cannot_be_written_is_not_stepped_over(tmp_path):
    """A takeover whose metadata.json cannot be written yet (a full outbox) keeps its lease fresh:
    nobody steps over it while its holder lives; once it stops touching it, it ages and is."""
    store = JobStore(tmp_path)
    job_id = "a.pdf_20260101_000000_0000000a"
    (tmp_path / job_id).mkdir()
    assert store.take_lease(job_id, 2)
    lease = store.paths(job_id).lease(2)
    os.utime(lease, (lease.stat().st_mtime - 120, lease.stat().st_mtime - 120))
    store.touch_lease(job_id, 2)  # the holder is alive, still waiting to write the record
    assert store.take_next_lease(job_id, 1, abandoned_after=60) == []
    os.utime(lease, (lease.stat().st_mtime - 120, lease.stat().st_mtime - 120))  # then it died
    assert store.take_next_lease(job_id, 1, abandoned_after=60) == [2, 3]
    store.touch_lease(job_id, 1)  # epoch 1 has no lease file: nothing happens


def test_a_worker_id_is_locked_to_one_running_daemon(tmp_path: Path) -> None:
    """Given a daemon holding worker id "w", a second one asking for "w" is refused with a message
    that says what to do; "v" is free, and "w" is free again once the first lets go."""
    layout = OutboxLayout(tmp_path / "outbox")
    first = lock_worker_id(layout, "w")
    with pytest.raises(WorkerIdInUse, match="give each daemon its own worker_id"):
        lock_worker_id(layout, "w")
    os.close(lock_worker_id(layout, "v"))
    os.close(first)
    os.close(lock_worker_id(layout, "w"))
