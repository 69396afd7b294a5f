"""A job that is a duplicate gets the results of the earlier job with the same content: its pages,
figures, result.txt, result.pdf and result.md as hard links where the filesystem allows (else copies), so that
retention of either job never breaks the other, and a result_metadata.json of its own. result.md
comes last, then DONE, as when a job writes its own result."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, fsync_dir, is_temp_name, temp_name_for
from .done import file_entry, manifest, remove_done, write_done
from .layout import RESULT_JSON, RESULT_PDF, RESULT_TXT
from .model import JobMeta, iso, utc_now
from .store import JobStore

# Filesystems (or their mount options) that refuse a hard link here: a copy instead.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


class LeaderGone(Exception):
    """The earlier job's results went while they were being shared (retention, a deletion)."""


def share_results(store: JobStore, leader_id: str, meta: JobMeta) -> dict[str, Any]:
    """Give the job of `meta` the results of `leader_id`; returns its result_metadata.json. Raises
    LeaderGone, or OSError when this job's own folder cannot be written (full, read-only)."""
    leader, own = store.paths(leader_id), store.paths(meta.job_id)
    try:
        result_meta = json.loads(leader.result_metadata.read_bytes())
    except (FileNotFoundError, ValueError) as exc:
        raise LeaderGone(f"job {leader_id}'s results are gone") from exc
    for folder, into in ((leader.pages, own.pages), (leader.images, own.images)):
        try:
            names = sorted(name for name in os.listdir(folder) if not is_temp_name(name))
        except FileNotFoundError:
            continue
        into.mkdir(exist_ok=True)
        for name in names:
            _share(folder / name, into / name)
    result_meta.update(
        job_id=meta.job_id,
        source=meta.source.model_dump(mode="json", exclude={"mtime_ns"}),
        duplicate_of=leader_id,
        attempts=meta.attempts,
        created_at=iso(meta.created_at),
        started_at=iso(meta.started_at or utc_now()),
        finished_at=iso(utc_now()),
    )
    remove_done(own.done, fsync=store.fsync)
    atomic_write_json(own.result_metadata, result_meta, fsync=store.fsync)
    written = [own.result_metadata]
    for name in (RESULT_TXT, RESULT_PDF, RESULT_JSON):
        if (leader.dir / name).exists():
            _share(leader.dir / name, own.dir / name)
            written.append(own.dir / name)
    _share(leader.result_md, own.result_md)
    written.append(own.result_md)
    if store.fsync:  # the links are entries in these folders
        for folder in (own.pages, own.images, own.dir):
            fsync_dir(folder)
    done = {**manifest(meta.job_id, {}), "files": [file_entry(path) for path in written]}
    write_done(own.done, done, fsync=store.fsync)
    return result_meta


def _share(source: Path, target: Path) -> None:
    """`target` becomes the same file as `source` (a link) or a copy of it; put in place by a rename,
    so that a reader never sees half a copy and a second run after a crash does no harm."""
    tmp = temp_name_for(target)
    try:
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            shutil.copyfile(source, tmp)
    except FileNotFoundError as exc:
        tmp.unlink(missing_ok=True)
        if not source.exists():
            raise LeaderGone(f"{source} is gone") from exc
        raise  # this job's own folder is gone: its owner sees a deleted job
    os.replace(tmp, target)
