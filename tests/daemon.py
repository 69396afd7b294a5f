"""A real ocr-watcher daemon as a subprocess over temporary folders, and ways to watch it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

# Fast settings for tests: short settle and polls, a small claim backlog. Real OCR, real files.
BASE_CONFIG: dict[str, Any] = {
    "engine": "tesseract",
    "log_level": "info",
    "intake": {"settle_seconds": 0.5, "poll_interval_seconds": 0.3, "invalid_timeout_seconds": 2.0},
    "pipeline": {"workers": 2, "shutdown_grace_seconds": 5},
    "jobs": {"heartbeat_lease_seconds": 5, "outbox_scan_interval_seconds": 0.5},
    "http": {"port": 0},  # any free port: tests run several daemons at once
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Daemon:
    """`ocr_watcher.cli run --config <yaml>` as a subprocess; the config is `base_config`, the folders
    and worker id, then `config`. (The benchmarks use it too, with their own base.)"""

    base_config: dict[str, Any] = BASE_CONFIG

    def __init__(self, root: Path, name: str = "d1", inbox: Path | None = None, outbox: Path | None = None, **config):
        self.root = root
        self.name = name
        self.inbox = inbox or root / "inbox"
        self.outbox = outbox or root / "outbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.config_path = root / f"{name}.yaml"
        tree = merge(self.base_config, {"inbox": str(self.inbox), "outbox": str(self.outbox), "worker_id": name})
        self.config = merge(tree, config)
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.spawned_at = self.started_at = float("nan")  # wall-clock seconds, for the benchmarks

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- process control -------------------------------------------------------------------------
    def launch(self) -> Daemon:
        """Start the process without waiting for it to be ready (to kill it during start-up)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.spawned_at = time.time()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ocr_watcher.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        return self

    def start(self, timeout: float = 30) -> Daemon:
        self.launch()
        # Only this start's lines count: a restart with the same name appends to the same log.
        try:
            self.wait_until(self._started, timeout, "the daemon to start")
        except BaseException:
            self.stop()  # one that did not start in time is not left running (with its children)
            raise
        self.started_at = time.time()
        return self

    def _started(self) -> bool:
        if "ocr-watcher started" in self.log_since_launch():
            return True
        if self.proc is not None and self.proc.poll() is not None:  # fail at once, not after the timeout
            raise AssertionError(f"daemon exited ({self.proc.returncode}) at start:\n{self.log_since_launch()}")
        return False

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise AssertionError(f"daemon exited ({code}):\n{self.log()[-3000:]}")

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_since_launch(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(timeout=60)

    def stop(self, timeout: float = 60) -> int | None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ocr_watcher.cli", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    @property
    def http_url(self) -> str:
        """The base URL of this daemon's HTTP server (it listens on a free port: read from its log)."""
        found: list[str] = []

        def logged() -> bool:
            found[:] = re.findall(r"metrics on (http://\S+)/metrics", self.log_since_launch())
            return bool(found)

        self.wait_until(logged, 10, "the HTTP server's log line")
        return found[-1]

    # -- reading the outbox ------------------------------------------------------------------------
    def jobs(self) -> list[dict[str, Any]]:
        out = []
        for folder in sorted(self.outbox.iterdir()):
            if folder.name.startswith("."):
                continue
            try:
                out.append(json.loads((folder / "metadata.json").read_text()))
            except (FileNotFoundError, ValueError):
                continue
        return out

    def job_for(self, name: str) -> dict[str, Any] | None:
        matches = [job for job in self.jobs() if job["source"]["name"] == name]
        assert len(matches) <= 1, f"{name} is in {len(matches)} jobs"
        return matches[0] if matches else None

    def job_dir(self, job: dict[str, Any]) -> Path:
        return self.outbox / job["job_id"]

    def wait_for_job(self, name: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
        result: dict[str, Any] = {}

        def check() -> bool:
            job = self.job_for(name)
            if job is not None and job["status"] in statuses:
                result.update(job)
                return True
            return False

        self.wait_until(check, timeout, f"{name} to become {statuses}")
        return result

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None and "start" not in what:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) while waiting for {what}\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n--- log ---\n{self.log()[-5000:]}")


def drop(inbox: Path, source: Path, name: str | None = None) -> Path:
    """Drop a file the way a careful client does: write under a hidden name, then rename."""
    target = inbox / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.uploading")
    tmp.write_bytes(source.read_bytes())
    os.rename(tmp, target)
    return target


class OutboxReader(threading.Thread):
    """Polls every job folder while daemons work, as a person's script would, and records anything a
    reader must never see: metadata.json that is not valid JSON, a result.md that is not exactly the
    join of the job's pages, a page file rewritten after it first appeared (the page checkpoint), a
    DONE that lists a file which is not there with the size and sha256 it lists, and a job recorded
    as completed without DONE (`done_checked` counts the DONE files found whole).

    `page_seen[(job_id, page)]` = (mtime_ns, session) of pages/NNNN.md and .json when first seen.
    """

    def __init__(self, outbox: Path, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.outbox = outbox
        self.interval = interval
        self.problems: list[str] = []
        self.reads = 0
        self.results_checked = 0
        self.done_checked = 0
        self.statuses: dict[str, list[str]] = {}
        self.page_seen: dict[tuple[str, int], tuple[int, str | None]] = {}
        self._settled: set[str] = set()  # completed, result checked: no need to read again
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sweep()
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        self._settled.clear()
        self.sweep()  # one last look at everything, after the daemon's final writes

    def sweep(self) -> None:
        try:
            folders = [f for f in os.scandir(self.outbox) if not f.name.startswith(".")]
        except FileNotFoundError:
            return
        for folder in folders:
            if folder.name not in self._settled:
                self._read_job(Path(folder.path))

    def _read_job(self, folder: Path) -> None:
        try:
            raw = (folder / "metadata.json").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return
        self.reads += 1
        try:
            meta = json.loads(raw)
        except ValueError:
            self.problems.append(f"{folder.name}: metadata.json is not valid JSON ({len(raw)} bytes)")
            return
        seen = self.statuses.setdefault(meta["job_id"], [])
        if not seen or seen[-1] != meta["status"]:
            seen.append(meta["status"])
        self._read_pages(folder)
        done = self._check_done(folder, meta)
        try:
            result = (folder / "result.md").read_text()
        except FileNotFoundError:
            return
        self._check_result(folder, result)
        if meta["status"] == "completed" and done:
            self._settled.add(folder.name)

    def _check_done(self, folder: Path, meta: dict) -> bool:
        """True when DONE is there and every file it lists is as listed."""
        done = _json_or_none(folder / "DONE")
        if done is None:
            # Read again: a job started over since (its DONE removed first) is no longer completed.
            again = _json_or_none(folder / "metadata.json") or {}
            if meta["status"] == "completed" and again.get("revision") == meta.get("revision"):
                self.problems.append(f"{folder.name}: completed (revision {meta.get('revision')}) without DONE")
            return False
        for entry in done["files"]:
            try:
                data = (folder / entry["name"]).read_bytes()
            except FileNotFoundError:
                data = None
            if data is None or len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                if _json_or_none(folder / "DONE") == done:  # the same DONE still stands: a reader was misled
                    self.problems.append(f"{folder.name}: DONE lists {entry['name']} not as it is on disk")
                return False
        self.done_checked += 1
        return True

    def _read_pages(self, folder: Path) -> None:
        try:
            entries = list(os.scandir(folder / "pages"))
        except FileNotFoundError:
            return
        for entry in entries:
            stem, _, ext = entry.name.partition(".")
            if ext != "md" or not stem.isdigit():
                continue
            key = (folder.name, int(stem))
            try:
                mtime = entry.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            session = _page_session(folder / "pages" / f"{stem}.json")
            first = self.page_seen.setdefault(key, (mtime, session))
            if first[0] != mtime:
                self.problems.append(f"{folder.name}: page {key[1]} was written again (mtime {first[0]} -> {mtime})")
                self.page_seen[key] = (mtime, session)
            elif first[1] is not None and session is not None and first[1] != session:
                self.problems.append(f"{folder.name}: page {key[1]} info changed session {first[1]} -> {session}")

    def _check_result(self, folder: Path, result: str) -> None:
        from ocr_watcher.pipeline.assemble import join_pages

        totals = set(re.findall(r"<!-- page \d+ of (\d+) -->", result))
        if len(totals) != 1:
            self.problems.append(f"{folder.name}: result.md has no consistent page markers: {result[-60:]!r}")
            return
        total = int(totals.pop())
        pages = []
        for page in range(1, total + 1):
            try:
                pages.append((page, (folder / "pages" / f"{page:04d}.md").read_text(), None))
            except FileNotFoundError:
                pages.append((page, None, "missing"))
        self.results_checked += 1
        if result != join_pages(pages, total):
            self.problems.append(f"{folder.name}: result.md is not the join of its {total} pages")


def _json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def _page_session(path: Path) -> str | None:
    try:
        return json.loads(path.read_bytes()).get("session")
    except FileNotFoundError:
        return None
    except ValueError:
        return "<invalid JSON>"


def tesseract_call_logger(folder: Path) -> tuple[Path, Path]:
    """A `tesseract.command` that logs each call as "<first argument> <Unix time>" to a file, then
    runs the tesseract the daemon would pick by itself. Returns (wrapper, log)."""
    from ocr_watcher.engines.tesseract import resolve_tesseract

    real = resolve_tesseract(None)
    assert real is not None, "no tesseract to wrap"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "tesseract-calls.log"
    wrapper = folder / "tesseract-logged"
    env = " ".join(f"{key}={shlex.quote(value)}" for key, value in real.env.items())
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "%s %s\\n" "$1" "$(date +%s.%N)" >> {shlex.quote(str(log))}\n'
        f'{env} exec {shlex.quote(real.path)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, log


_RENDERED = re.compile(r"(?P<job>[^/]+)-(?P<page>\d{5})-(?P<attempt>\d+)\.(?:pgm|ppm|png)$")


def tesseract_calls(log: Path) -> list[tuple[str, int, int, float]]:
    """(job_id, page, attempt, Unix time) for each page the wrapper saw (probes like --version left out)."""
    calls = []
    for line in log.read_text().splitlines():
        image, _, when = line.rpartition(" ")
        match = _RENDERED.search(image)
        if match:
            calls.append((match["job"], int(match["page"]), int(match["attempt"]), float(when)))
    return calls


def slow_tesseract(folder: Path, seconds: float) -> Path:
    """A `tesseract.command` that waits `seconds` before each page, then runs the real tesseract: a job
    that stays in processing long enough to be cancelled, without burning CPU."""
    from ocr_watcher.engines.tesseract import resolve_tesseract

    real = resolve_tesseract(None)
    assert real is not None, "no tesseract to wrap"
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "tesseract-slow"
    env = " ".join(f"{key}={shlex.quote(value)}" for key, value in real.env.items())
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$1" in -*) ;; *) sleep {seconds} ;; esac\n'  # probes (--version...) answer at once
        f'{env} exec {shlex.quote(real.path)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper
