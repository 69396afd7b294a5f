"""The job store: reading and writing job folders in the outbox. Knows nothing of OCR.

Ownership: a job belongs to the worker named in its metadata.json, at an `epoch`. Another daemon
takes a job over by creating `.lease-<epoch+1>` in the job folder with O_EXCL, which exactly one
daemon can do; the previous owner checks for that file before each write (`is_fenced`) and stops
touching a job that has been taken from it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import leases
from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, is_temp_name, json_bytes, temp_name_for
from .completed import CompletedJobs
from .done import manifest, remove_done, write_done
from .ids import is_job_id
from .layout import CANCEL, METADATA, RESULT_JSON, RESULT_MD, RESULT_METADATA, RESULT_PDF, RETRY, JobPaths, OutboxLayout
from .model import JobMeta

MetadataStamp = tuple[int, int, int]  # (revision, inode, mtime_ns): see JobStore.metadata_stamp
_REVISION = re.compile(rb'^\{\n  "schema_version": \d+,\n  "revision": (\d+),\n')


class JobNotFound(Exception):
    pass


class AmbiguousJob(Exception):
    pass


class CorruptMetadata(Exception):
    pass


class JobStore:
    def __init__(self, outbox: Path, *, fsync: bool = True) -> None:
        self.layout = OutboxLayout(outbox)
        self.fsync = fsync
        # str paths where a call runs per job per scan (pathlib takes ten times as long)
        self._root = os.path.join(os.fspath(outbox), "")
        # What the completed jobs said, read once for every walker of this outbox (see completed.py).
        self.completed = CompletedJobs()
        self._identity: bytes | None = None  # the outbox's token, once `pin_identity` has read it

    @property
    def root(self) -> Path:
        return self.layout.root

    def paths(self, job_id: str) -> JobPaths:
        return self.layout.job(job_id)

    # -- the outbox itself -----------------------------------------------------------------------
    def pin_identity(self) -> None:
        """Read this outbox's token, writing one first where there is none (the first daemon to
        start on it; a link, so that daemons starting together agree on one whole token)."""
        path = self.layout.identity
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = temp_name_for(path)
            atomic_write_bytes(tmp, secrets.token_hex(16).encode(), fsync=self.fsync)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another daemon's token came first
            finally:
                os.unlink(tmp)
        self._identity = path.read_bytes()

    def missing(self) -> str | None:
        """Why the outbox this store pinned is not there now (unmounted, removed, replaced), or None.
        A listing taken while it is missing is empty, and must not be read as "every job is gone"."""
        try:
            found = read_small(os.fspath(self.layout.identity))
        except FileNotFoundError:
            found = None
        except OSError as exc:
            return f"the outbox {self.root} cannot be read: {exc.strerror or exc}"
        if self._identity is None:
            return None if os.path.isdir(self.root) else f"the outbox {self.root} is gone"
        if found == self._identity:
            return None
        state = "is gone" if not os.path.isdir(self.root) else "is not the outbox this daemon started on"
        return (
            f"the outbox {self.root} {state} (its {self.layout.identity.name} is "
            f"{'missing' if found is None else 'another'}): unmounted, moved or replaced? Waiting for it "
            "to come back; restart the daemon to start on a new, empty outbox instead"
        )

    # -- listing -------------------------------------------------------------------------------
    def iter_job_ids(self) -> Iterator[str]:
        """Job folders in the outbox, in no particular order; cheap (one scandir)."""
        completed = self.completed
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    # A completed job's name was checked when it was noted: skip the pattern match.
                    if entry.is_dir(follow_symlinks=False) and (entry.name in completed or is_job_id(entry.name)):
                        yield entry.name
        except FileNotFoundError:
            return

    def resolve(self, prefix: str) -> str:
        """A job id from a unique prefix of it (what people type)."""
        if not prefix or "/" in prefix or prefix.startswith("."):
            raise JobNotFound(f"no job matches {prefix!r}")
        matches = [job_id for job_id in self.iter_job_ids() if job_id.startswith(prefix)]
        if prefix in matches:
            return prefix
        if not matches:
            raise JobNotFound(f"no job matches {prefix!r} in {self.root}")
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5])
            raise AmbiguousJob(f"{prefix!r} matches {len(matches)} jobs ({shown}...); type more of the id")
        return matches[0]

    # -- metadata ------------------------------------------------------------------------------
    def load(self, job_id: str) -> JobMeta:
        path = self.paths(job_id).metadata
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise JobNotFound(f"job {job_id} has no metadata.json (deleted?)") from exc
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise CorruptMetadata(f"{path}: {exc}") from exc
        return self._validated(job_id, doc)

    def _validated(self, job_id: str, doc: Any) -> JobMeta:
        try:
            meta = JobMeta.model_validate(doc)
        except (ValueError, ValidationError) as exc:
            raise CorruptMetadata(f"{self.paths(job_id).metadata}: {exc}") from exc
        if meta.job_id != job_id:  # a planted or copied file must not steer our writes elsewhere
            raise CorruptMetadata(f"{self.paths(job_id).metadata}: it names job {meta.job_id!r}, not {job_id!r}")
        return meta

    def peek(self, job_id: str) -> Any:
        """metadata.json parsed but not validated (None when missing or not JSON): the cheap read of
        a walker that needs only a status and times."""
        try:
            return json.loads(read_small(f"{self._root}{job_id}/{METADATA}"))
        except (OSError, ValueError):
            return None

    def load_unless_completed(self, job_id: str) -> JobMeta | None:
        """try_load for walkers of the whole outbox: a completed job is only noted in `completed`
        (and None returned), since validating the whole model costs more than reading the file, and
        a completed job never changes."""
        try:
            raw = read_small(f"{self._root}{job_id}/{METADATA}")
            if self.completed.note_raw(job_id, raw):
                return None
            doc = json.loads(raw)
        except (OSError, ValueError):
            return None
        if self.completed.note(job_id, doc):
            return None
        try:
            return self._validated(job_id, doc)
        except CorruptMetadata:
            return None

    def try_load(self, job_id: str) -> JobMeta | None:
        try:
            return self.load(job_id)
        except (JobNotFound, CorruptMetadata, OSError):
            return None

    def save(self, meta: JobMeta) -> None:
        """Write metadata.json atomically, at the next revision. Raises FileNotFoundError if the job
        folder is gone."""
        meta.revision += 1
        try:
            atomic_write_json(self.paths(meta.job_id).metadata, meta.to_json(), fsync=self.fsync)
        except BaseException:
            meta.revision -= 1  # not written: the next try writes this revision
            raise

    # -- control files -------------------------------------------------------------------------
    def request(self, job_id: str, control: str) -> Path:
        """Create CANCEL or RETRY in a job folder (what the CLI and a person do)."""
        if control not in (CANCEL, RETRY):
            raise ValueError(control)
        path = self.paths(job_id).dir / control
        path.touch()
        return path

    def metadata_stamp(self, job_id: str) -> MetadataStamp | None:
        """What tells a rewrite of metadata.json: its revision, which every save bumps, with its
        inode and mtime for a file written without one (by hand, or by an older daemon). Inode and
        mtime alone can repeat: two rewrites within one timestamp tick can hand the second the inode
        the first one freed. One open and a 64-byte read (per failed job per scan): the revision is
        the file's second key. None when it cannot be read."""
        try:
            fd = os.open(f"{self._root}{job_id}/{METADATA}", os.O_RDONLY | os.O_CLOEXEC)  # a str path
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            head = os.read(fd, 64)
        except OSError:
            return None
        finally:
            os.close(fd)
        found = _REVISION.search(head)
        return int(found.group(1)) if found else -1, st.st_ino, st.st_mtime_ns

    def has_control(self, job_id: str, control: str) -> bool:
        return os.path.exists(f"{self._root}{job_id}/{control}")  # per failed job per scan

    def clear_control(self, job_id: str, control: str) -> None:
        try:
            (self.paths(job_id).dir / control).unlink()
        except FileNotFoundError:
            pass

    # -- ownership -----------------------------------------------------------------------------
    def take_lease(self, job_id: str, epoch: int) -> bool:
        return leases.take_lease(self.paths(job_id).lease, epoch)

    def take_next_lease(self, job_id: str, epoch: int, *, abandoned_after: float, max_steps: int = 16) -> list[int]:
        """See spool/leases.py: the epochs touched, ours last; empty when another holds the job."""
        lease = self.paths(job_id).lease
        return leases.take_next_lease(lease, epoch, abandoned_after=abandoned_after, max_steps=max_steps)

    def touch_lease(self, job_id: str, epoch: int) -> None:
        leases.touch_lease(self.paths(job_id).lease, epoch)

    def is_fenced(self, job_id: str, epoch: int) -> bool:
        """True when another daemon has taken the job over from the owner at `epoch`."""
        return self.paths(job_id).lease(epoch + 1).exists()

    # -- pages and results ---------------------------------------------------------------------
    def done_pages(self, job_id: str) -> set[int]:
        """Pages whose Markdown is on disk: the page-level checkpoint."""
        done: set[int] = set()
        try:
            with os.scandir(self.paths(job_id).pages) as entries:
                for entry in entries:
                    stem, dot, ext = entry.name.partition(".")
                    if dot and ext == "md" and stem.isdigit():
                        done.add(int(stem))
        except FileNotFoundError:
            pass
        return done

    def write_page(self, job_id: str, page: int, markdown: str, info: dict[str, Any]) -> None:
        """The page's figures first, then its Markdown: the .md file is the checkpoint."""
        paths = self.paths(job_id)
        paths.pages.mkdir(exist_ok=True)
        # The figures are not worth an fsync: after a power loss, a page whose .md survived but whose
        # .json did not is still done (assembly copes); the .md is the checkpoint and is synced.
        atomic_write_json(paths.page_info(page), info, fsync=False)
        atomic_write_text(paths.page_md(page), markdown, fsync=self.fsync)

    def read_page(self, job_id: str, page: int) -> str | None:
        try:
            return self.paths(job_id).page_md(page).read_text(encoding="utf-8")  # text mode: \r\n read as \n
        except FileNotFoundError:
            return None

    def read_page_info(self, job_id: str, page: int) -> dict[str, Any] | None:
        try:
            return json.loads(read_small(str(self.paths(job_id).page_info(page))))
        except (FileNotFoundError, ValueError):
            return None

    def write_result(
        self, job_id: str, markdown: str, result_meta: dict[str, Any], *, more: dict[str, bytes] | None = None
    ) -> None:
        """DONE gone first; result_metadata.json, the other result files (`more`), result.md last (the
        sign of a result to readers); then DONE, listing them (spool/done.py)."""
        paths = self.paths(job_id)
        remove_done(paths.done, fsync=self.fsync)
        written = {RESULT_METADATA: json_bytes(result_meta), **(more or {}), RESULT_MD: markdown.encode("utf-8")}
        for name, data in written.items():
            atomic_write_bytes(paths.dir / name, data, fsync=self.fsync)
        write_done(paths.done, manifest(job_id, written), fsync=self.fsync)

    def remove_result(self, job_id: str) -> None:
        """DONE first, then the result files, so that a watcher never trusts a DONE that lists them."""
        paths = self.paths(job_id)
        remove_done(paths.done, fsync=self.fsync)
        for path in (
            paths.result_md,
            paths.result_txt,
            paths.dir / RESULT_PDF,
            paths.dir / RESULT_JSON,
            paths.result_metadata,
        ):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def discard_pages(self, job_id: str) -> None:
        """Remove every page, figure and the result, as one step for readers and for a crash: the
        folders are renamed away (a temp name, which `sweep_temp_files` removes if a crash leaves it)."""
        paths = self.paths(job_id)
        remove_done(paths.done, fsync=self.fsync)  # before the pages its results came from
        for folder in (paths.pages, paths.images):
            gone = temp_name_for(folder)
            try:
                os.rename(folder, gone)
            except FileNotFoundError:
                continue
            shutil.rmtree(gone, ignore_errors=True)
        paths.pages.mkdir(exist_ok=True)
        self.remove_result(job_id)

    def sweep_temp_files(self, job_id: str) -> int:
        """Remove temp files a crash left behind in a job folder."""
        removed = 0
        paths = self.paths(job_id)
        for folder in (paths.dir, paths.pages):
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                if is_temp_name(name):
                    try:
                        if (folder / name).is_dir():  # pages or figures being discarded
                            shutil.rmtree(folder / name)
                        else:
                            os.unlink(folder / name)
                        removed += 1
                    except OSError:
                        pass
        return removed

    def exists(self, job_id: str) -> bool:
        return self.paths(job_id).metadata.exists()


def read_small(path: str, chunk: int = 1 << 16) -> bytes:
    """A small file's bytes with plain system calls: a third of what open() costs, which counts when
    every job's metadata.json is read at start-up."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = [os.read(fd, chunk)]
        while len(parts[-1]) == chunk:  # more than one chunk: read on to the end
            parts.append(os.read(fd, chunk))
    finally:
        os.close(fd)
    return b"".join(parts)
