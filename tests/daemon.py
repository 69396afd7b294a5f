"""A real ocr-watcher daemon as a subprocess over temporary folders, and ways to watch it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    def __init__(self, root: Path, name: str = "d1", inbox: Path | None = None, outbox: Path | None = None, **config):
        self.root = root
        self.name = name
        self.inbox = inbox or root / "inbox"
        self.outbox = outbox or root / "outbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.config_path = root / f"{name}.yaml"
        tree = merge(BASE_CONFIG, {"inbox": str(self.inbox), "outbox": str(self.outbox), "worker_id": name})
        self.config_path.write_text(yaml.safe_dump(merge(tree, config)))
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- process control -------------------------------------------------------------------------
    def start(self) -> Daemon:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ocr_watcher.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        self.wait_until(lambda: "ocr-watcher started" in self.log(), 30, "the daemon to start")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(timeout=60)

    def stop(self) -> int | None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
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
