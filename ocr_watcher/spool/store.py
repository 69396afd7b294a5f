"""The job store: reading and writing job folders in the outbox. Knows nothing of OCR.

Ownership: a job belongs to the worker named in its metadata.json, at an `epoch`. Another daemon
takes a job over by creating `.lease-<epoch+1>` in the job folder with O_EXCL, which exactly one
daemon can do; the previous owner checks for that file before each write (`is_fenced`) and stops
touching a job that has been taken from it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .atomic import atomic_write_json, atomic_write_text, is_temp_name, temp_name_for
from .ids import is_job_id
from .layout import CANCEL, RETRY, JobPaths, OutboxLayout
from .model import JobMeta


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

    @property
    def root(self) -> Path:
        return self.layout.root

    def paths(self, job_id: str) -> JobPaths:
        return self.layout.job(job_id)

    # -- listing -------------------------------------------------------------------------------
    def iter_job_ids(self) -> Iterator[str]:
        """Job folders in the outbox, in no particular order; cheap (one scandir)."""
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if is_job_id(entry.name) and entry.is_dir(follow_symlinks=False):
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
            meta = JobMeta.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise CorruptMetadata(f"{path}: {exc}") from exc
        if meta.job_id != job_id:  # a planted or copied file must not steer our writes elsewhere
            raise CorruptMetadata(f"{path}: it names job {meta.job_id!r}, not {job_id!r}")
        return meta

    def try_load(self, job_id: str) -> JobMeta | None:
        try:
            return self.load(job_id)
        except (JobNotFound, CorruptMetadata, OSError):
            return None

    def save(self, meta: JobMeta) -> None:
        """Write metadata.json atomically. Raises FileNotFoundError if the job folder is gone."""
        atomic_write_json(self.paths(meta.job_id).metadata, meta.to_json(), fsync=self.fsync)

    # -- control files -------------------------------------------------------------------------
    def request(self, job_id: str, control: str) -> Path:
        """Create CANCEL or RETRY in a job folder (what the CLI and a person do)."""
        if control not in (CANCEL, RETRY):
            raise ValueError(control)
        path = self.paths(job_id).dir / control
        path.touch()
        return path

    def has_control(self, job_id: str, control: str) -> bool:
        return (self.paths(job_id).dir / control).exists()

    def clear_control(self, job_id: str, control: str) -> None:
        try:
            (self.paths(job_id).dir / control).unlink()
        except FileNotFoundError:
            pass

    # -- ownership -----------------------------------------------------------------------------
    def take_lease(self, job_id: str, epoch: int) -> bool:
        """Become the owner at `epoch`: True for exactly one caller per epoch."""
        try:
            fd = os.open(self.paths(job_id).lease(epoch), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def take_next_lease(self, job_id: str, epoch: int, *, abandoned_after: float, max_steps: int = 16) -> list[int]:
        """Own the job at the first free epoch after `epoch`, stepping over leases a crash abandoned.

        A takeover writes metadata.json right after taking its lease; a lease older than
        `abandoned_after` seconds whose taker never did so belongs to a process that died in between,
        and would otherwise block the job for good. Returns the epochs touched, ours last; empty
        when another process holds a live lease (or the folder is gone).
        """
        touched: list[int] = []
        for candidate in range(epoch + 1, epoch + 1 + max_steps):
            try:
                taken = self.take_lease(job_id, candidate)
            except FileNotFoundError:
                return []
            touched.append(candidate)
            if taken:
                return touched
            try:
                age = time.time() - self.paths(job_id).lease(candidate).stat().st_mtime
            except FileNotFoundError:
                return []
            if age <= abandoned_after:
                return []
        return []

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
            return self.paths(job_id).page_md(page).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def read_page_info(self, job_id: str, page: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.paths(job_id).page_info(page).read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def write_result(self, job_id: str, markdown: str, result_meta: dict[str, Any]) -> None:
        paths = self.paths(job_id)
        atomic_write_json(paths.result_metadata, result_meta, fsync=self.fsync)
        atomic_write_text(paths.result_md, markdown, fsync=self.fsync)

    def remove_result(self, job_id: str) -> None:
        for path in (self.paths(job_id).result_md, self.paths(job_id).result_metadata):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def discard_pages(self, job_id: str) -> None:
        """Remove every page, figure and the result, as one step for readers and for a crash: the
        folders are renamed away (a temp name, which `sweep_temp_files` removes if a crash leaves it)."""
        paths = self.paths(job_id)
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
