"""What the daemon says it waits for (storage_watch.StorageWatch), and how it tells its outbox from
an empty folder in its place (JobStore.pin_identity / missing). Plain objects and real folders."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ocr_watcher.spool.store import JobStore
from ocr_watcher.storage_watch import StorageWatch, describe

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
READ_ONLY = OSError(errno.EROFS, os.strerror(errno.EROFS))


def watch() -> tuple[StorageWatch, list[str | None]]:
    changes: list[str | None] = []
    return StorageWatch(changes.append, clock=lambda: 100.0), changes


def test_describe_says_what_is_wrong_then_the_systems_words() -> None:
    assert describe(FULL) == "the outbox is full (No space left on device)"
    assert describe(READ_ONLY) == "the outbox is read-only (Read-only file system)"
    assert describe(OSError(errno.EBADF, "Bad file descriptor")).startswith("the outbox cannot be written")
    assert describe("the outbox /x is gone") == "the outbox /x is gone"


def test_a_kind_of_write_that_failed_waits_until_that_kind_goes_through() -> None:
    """Given a result that could not be written, when metadata.json then is, the daemon still
    waits (a small file fits where a large one does not); once a result is written, it does not."""
    storage, changes = watch()
    storage.failed("result", FULL)
    storage.succeeded("metadata")
    assert storage.problem == "the outbox is full (No space left on device)"
    storage.succeeded("result")
    assert storage.problem is None
    assert changes == ["the outbox is full (No space left on device)", None]


def test_the_latest_problem_is_the_one_shown_and_observers_hear_each_change_once() -> None:
    storage, changes = watch()
    storage.failed("page", FULL)
    storage.failed("page", FULL)  # the same again: no news
    storage.failed("metadata", READ_ONLY)
    assert storage.problem == "the outbox is read-only (Read-only file system)"
    storage.succeeded("metadata")
    assert storage.problem == "the outbox is full (No space left on device)"
    storage.succeeded("unrelated")
    storage.succeeded("page")
    assert changes == [
        "the outbox is full (No space left on device)",
        "the outbox is read-only (Read-only file system)",
        "the outbox is full (No space left on device)",
        None,
    ]


def test_an_outbox_replaced_by_an_empty_folder_or_moved_away_is_missing_until_it_is_back(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    store = JobStore(outbox, fsync=False)
    assert store.missing() is None  # not pinned yet: only the folder itself counts
    store.pin_identity()
    assert store.missing() is None
    os.rename(outbox, tmp_path / "away")
    assert "is gone" in (store.missing() or "")
    outbox.mkdir()  # what an unmounted share leaves: an empty mount point
    assert "is not the outbox this daemon started on" in (store.missing() or "")
    outbox.rmdir()
    os.rename(tmp_path / "away", outbox)
    assert store.missing() is None


def test_daemons_pinning_one_outbox_agree_on_its_identity(tmp_path: Path) -> None:
    first, second = JobStore(tmp_path, fsync=False), JobStore(tmp_path, fsync=False)
    first.pin_identity()
    second.pin_identity()
    assert first.missing() is None and second.missing() is None
    token = first.layout.identity.read_bytes()
    assert len(token) == 32 and [p.name for p in first.layout.identity.parent.iterdir()] == ["outbox-id"]
    first.layout.identity.write_bytes(b"another outbox's token".ljust(32))
    assert "is not the outbox this daemon started on" in (second.missing() or "")
