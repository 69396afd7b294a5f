"""The intake: find files in the inbox, wait until each is complete, hand over claim requests.

Detection is layered because each layer misses something: inotify (watchdog) is immediate but
sees nothing written by another host on a network share; polling (a full scan every
`poll_interval_seconds`) always runs and catches those. Readiness is decided per file from stat
observations (readiness.py) and the file's bytes (sniff.py).
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..config import Config
from ..engines.registry import job_settings, settings_record
from ..spool.claim import ClaimRequest
from ..spool.layout import INTERNAL_DIR
from ..spool.model import JobError
from .fs import default_settle_seconds
from .readiness import Action, Observation, Tracked, decide, next_check_in, observe
from .rules import compile_patterns, is_ignored_name, is_ignored_path, profile_for
from .sniff import Sniff, Verdict, sniff_file

log = logging.getLogger("ocr_watcher.intake")
_MAX_REPORTED = 10_000  # log-once memory for odd entries (symlinks, FIFOs), bounded


def claim_request(
    config: Config,
    engine: str,
    inbox_path: str,
    profile: str,
    sniff: Sniff,
    *,
    failure: JobError | None = None,
    source_name: str | None = None,
    origin: str = "inbox",
    sha256: str | None = None,
) -> ClaimRequest:
    """What to claim a sniffed file as: the one recipe for inbox files and HTTP uploads."""
    return ClaimRequest(
        inbox_path=inbox_path,
        profile=profile,
        priority=config.profile(profile).priority,
        kind=sniff.kind,
        input_suffix=sniff.suffix,
        engine=engine,
        failure=failure,
        source_name=source_name,
        origin=origin,
        sha256=sha256,
        engine_settings=settings_record(job_settings(engine, config, config.profile(profile))),
    )


class Intake:
    def __init__(
        self,
        config: Config,
        engine_for_profile: Callable[[str], str],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.root = config.inbox
        self.wake = wake  # tells the main loop to call refresh() now (from the inotify thread)
        self.config = config
        self.engine_for_profile = engine_for_profile
        self.tracked: dict[str, Tracked] = {}
        self._due: list[tuple[float, str]] = []  # heap of (monotonic time, relative path)
        self._ready: dict[str, ClaimRequest] = {}
        # Heap of (-priority, mtime_ns, rel); entries whose rel left _ready are skipped when popped.
        self._ready_heap: list[tuple[int, int, str]] = []
        self._claiming: set[str] = set()  # taken, and their claims not yet ended (settled)
        self._reported: set[str] = set()
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._last_scan = float("-inf")
        self._folders: list[Path] = [self.root]  # folders the last scan visited (watched with inotify)
        self._watcher = None
        self.apply_config(config)

    def apply_config(self, config: Config) -> None:
        self.config = config
        self.patterns = compile_patterns(config.intake.ignore)
        self.settle = (
            config.intake.settle_seconds
            if config.intake.settle_seconds is not None
            else default_settle_seconds(self.root)
        )
        self.invalid_timeout = config.intake.invalid_timeout_seconds
        for rel in [rel for rel in self.tracked if is_ignored_path(rel.split("/"), self.patterns)]:
            self.forget(rel)  # newly ignored by a reload: not to be claimed from what was seen before

    # -- inotify -------------------------------------------------------------------------------
    def start_watching(self) -> None:
        if not self.config.intake.use_inotify:
            return
        try:
            from .watcher import FolderWatcher

            watcher = FolderWatcher(self._mark_dirty, self.request_scan)
            watcher.start(self.root)
            self._watcher = watcher
        except Exception as exc:  # inotify limits, unsupported filesystem: polling still works
            log.warning("inotify watching of %s is not available (%s); relying on polling", self.root, exc)

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def request_scan(self) -> None:
        """Scan on the next refresh (called from the inotify thread: a plain assignment)."""
        self._last_scan = float("-inf")
        self.wake()

    def _mark_dirty(self, path: str) -> None:
        with self._dirty_lock:
            self._dirty.add(path)
        self.wake()

    def seconds_until_due(self, now: float) -> float:
        """How long the main loop may sleep before refresh() has something to do."""
        next_scan = self._last_scan + self.config.intake.poll_interval_seconds
        next_due = self._due[0][0] if self._due else next_scan
        return min(next_scan, next_due) - now

    # -- the periodic step ---------------------------------------------------------------------
    def refresh(self, now: float | None = None) -> None:
        """Scan if due, look at what inotify reported, and re-decide files whose time has come."""
        now = time.monotonic() if now is None else now
        if now - self._last_scan >= self.config.intake.poll_interval_seconds:
            self._scan(now)
            self._last_scan = now
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for absolute in dirty:
            self._observe_one(absolute, now)
        while self._due and self._due[0][0] <= now:
            _, rel = heapq.heappop(self._due)
            self._evaluate(rel, now)

    def take(self, limit: int) -> list[ClaimRequest]:
        """Up to `limit` ready files: highest profile priority first, then oldest."""
        chosen: list[ClaimRequest] = []
        while len(chosen) < limit and self._ready_heap:
            _, _, rel = heapq.heappop(self._ready_heap)
            request = self._ready.pop(rel, None)
            if request is not None:
                self.tracked.pop(rel, None)
                self._claiming.add(rel)
                chosen.append(request)
        return chosen

    def settled(self, rel: str) -> None:
        """The claim of a file `take` handed out ended (made, or failed): a file still at that path
        is a file to look at again."""
        self._claiming.discard(rel)

    def forget(self, rel: str) -> None:
        self.tracked.pop(rel, None)
        self._ready.pop(rel, None)

    @property
    def waiting(self) -> int:
        return len(self.tracked)

    # -- internals -----------------------------------------------------------------------------
    def _scan(self, now: float) -> None:
        seen: set[str] = set()
        self._folders = [self.root]
        for rel, st in self._walk(self.root, ""):
            seen.add(rel)
            self._record(rel, st, now)
        for rel in [rel for rel in self.tracked if rel not in seen]:
            self.forget(rel)  # gone (claimed by another daemon, or removed by a person)
        if self._watcher is not None:
            self._watcher.sync(self._folders)

    def _walk(self, folder: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except PermissionError as exc:
            self._report_once(prefix or ".", f"cannot list inbox folder {folder}: {exc}")
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if is_ignored_name(entry.name, self.patterns):
                if rel != INTERNAL_DIR:  # nothing is skipped without a log line (hidden names: debug)
                    level = logging.DEBUG if entry.name.startswith(".") else logging.INFO
                    self._report_once(rel, f"ignoring {rel!r}: it matches the ignore rules", level)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                self._folders.append(Path(entry.path))
                yield from self._walk(Path(entry.path), rel + "/")
            elif stat.S_ISREG(st.st_mode):
                yield rel, st
            elif stat.S_ISLNK(st.st_mode):
                self._report_once(rel, f"not following symbolic link {rel!r} in the inbox; copy the file instead")
            else:
                self._report_once(rel, f"ignoring {rel!r}: not a regular file (FIFO, socket or device)")

    def _observe_one(self, absolute: str, now: float) -> None:
        try:
            rel_path = Path(absolute).relative_to(self.root)
        except ValueError:
            return
        if any(is_ignored_name(part, self.patterns) for part in rel_path.parts):
            return
        try:
            st = os.stat(absolute, follow_symlinks=False)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            self._record(rel_path.as_posix(), st, now)

    def _record(self, rel: str, st: os.stat_result, now: float) -> None:
        if rel in self._claiming:
            return  # being claimed: not a new file, even if the claim has not moved it yet
        observation = Observation(st.st_size, st.st_mtime_ns, st.st_ino)
        previous = self.tracked.get(rel)
        if rel in self._ready:
            if previous is not None and previous.observation == observation:
                return
            self._ready.pop(rel)  # written to again after it looked complete: settle anew
        tracked = observe(previous, observation, now)
        if tracked is not previous:
            self.tracked[rel] = tracked
            heapq.heappush(self._due, (now + self.settle, rel))

    def _evaluate(self, rel: str, now: float) -> None:
        tracked = self.tracked.get(rel)
        if tracked is None or rel in self._ready:
            return
        action = decide(tracked, now, self.settle, self.invalid_timeout)
        if action is Action.SNIFF:
            tracked.sniff = self._sniff(rel)
            if tracked.sniff is None:
                self.forget(rel)
                return
            action = decide(tracked, now, self.settle, self.invalid_timeout)
        if action is Action.WAIT:
            wait = next_check_in(tracked, now, self.settle, self.invalid_timeout)
            if wait > 0:
                heapq.heappush(self._due, (now + wait, rel))
            return
        request = self._request(rel, tracked.sniff, failed=action is Action.CLAIM_FAILED)
        self._ready[rel] = request
        heapq.heappush(self._ready_heap, (-request.priority, tracked.observation.mtime_ns, rel))

    def _sniff(self, rel: str) -> Sniff | None:
        try:
            return sniff_file(self.root / rel)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read inbox file %r: %s", rel, exc)
            return Sniff(Verdict.REJECT, error_type="unreadable", message=f"cannot read the file: {exc.strerror}")

    def _request(self, rel: str, sniff: Sniff | None, *, failed: bool) -> ClaimRequest:
        assert sniff is not None
        parts = rel.split("/")
        profile = profile_for(parts, self.config.profiles)
        failure = None
        if failed:
            message = sniff.message or "the file is not a supported document"
            if sniff.verdict is Verdict.INCOMPLETE:
                message = f"{message} (unchanged for {self.settle + self.invalid_timeout:.0f} s)"
            failure = JobError(type=sniff.error_type or "invalid_input", message=message)
        return claim_request(self.config, self.engine_for_profile(profile), rel, profile, sniff, failure=failure)

    def _report_once(self, key: str, message: str, level: int = logging.WARNING) -> None:
        if key in self._reported:
            return
        if len(self._reported) >= _MAX_REPORTED:
            self._reported.clear()
        self._reported.add(key)
        log.log(level, "%s", message)

    def forget_reports(self) -> None:
        """Periodically, so a long-lived oddity is mentioned again now and then."""
        self._reported.clear()
