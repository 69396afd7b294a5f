"""Storage faults made real: a small tmpfs we mount (the tests run as root), filled up, or made
read-only, under a real daemon; and ways to watch the daemon through them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ocr_watcher.spool.atomic import TMP_MARK
from tests.daemon import Daemon

TERMINAL = {"completed", "failed", "cancelled"}


def _mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def mount_tmpfs(folder: Path, size: str) -> Path:
    """A fresh folder on its own tmpfs of `size` (skips where mounting is not allowed)."""
    folder.mkdir()
    result = _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {result.stderr.strip()}")
    return folder


def unmount_all(folders: list[Path]) -> None:
    for folder in folders:
        while subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
            pass  # the read-only bind (if left), then the tmpfs
        if folder.is_mount() and subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def make_read_only(outbox: Path) -> None:
    """`mount -o remount,ro` is refused while the daemon holds a file open for writing (its worker
    lock), so stack a read-only bind mount of the outbox on itself: new opens see EROFS."""
    result = _mount(["--bind", str(outbox), str(outbox)])
    for _ in range(100):  # refused while a write through the new bind is open: try again
        if result.returncode == 0 and "--bind" not in result.args:
            return
        result = _mount(["-o", "remount,ro,bind", str(outbox)])
        time.sleep(0.01)
    pytest.skip(f"cannot make the outbox read-only here: {result.stderr.strip()}")


def make_writable(outbox: Path) -> None:
    subprocess.run(["umount", "-l", str(outbox)], check=True)  # detaches the read-only bind on top


def _temp_files(outbox: Path) -> list[Path]:
    return list(outbox.rglob(f".*{TMP_MARK}*"))


def sweep_leftovers(outbox: Path) -> None:
    """Remove the temp files a kill -9 left mid-write, as the next daemon's recovery would: a test
    that fills the outbox must do it first, or that recovery frees a block and the write the test
    expects to be refused fits in it."""
    for path in _temp_files(outbox):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _top_up(filler: Path) -> None:
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_blocks(outbox: Path) -> int:
    """Blocks held by temp files: a daemon's write in flight, whose failure frees them again."""
    held = 0
    for path in _temp_files(outbox):
        try:
            held += path.lstat().st_blocks
        except FileNotFoundError:
            pass
    return held


def fill(outbox: Path, timeout: float = 20.0) -> Path:
    """Fill the outbox's filesystem to the last byte and return the file that holds it.

    Full for good, not for an instant: a daemon's write in flight while the filler grows takes a
    block, fails, and frees it, and a smaller write (metadata.json) then fits. So top up until no
    temp file holds a block and no space is left, before and after looking (a write that starts on
    a full filesystem gets no block, so nothing can be freed after that)."""
    filler = outbox / ".filler"
    deadline = time.monotonic() + timeout
    while True:
        _top_up(filler)
        before = os.statvfs(outbox).f_bavail
        held = _temp_blocks(outbox)
        if before == 0 and held == 0 and os.statvfs(outbox).f_bavail == 0:
            return filler
        assert time.monotonic() < deadline, f"the outbox does not stay full ({held} blocks in temp files)"
        time.sleep(0.01)


def all_metadata_parses(outbox: Path) -> None:
    for path in outbox.glob("*/metadata.json"):
        json.loads(path.read_text())  # raises on a torn or empty file


def watch_metadata(daemon: Daemon, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        all_metadata_parses(daemon.outbox)
        assert daemon.alive(), daemon.log()[-3000:]
        time.sleep(0.1)


def readyz(daemon: Daemon) -> tuple[int, str]:
    """The daemon's /readyz: (status, text)."""
    try:
        with urllib.request.urlopen(f"{daemon.http_url}/readyz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def storage_errors(daemon: Daemon) -> float:
    """ocr_watcher_storage_errors_total summed over operations, from the daemon's own /metrics."""
    url = re.search(r"metrics on (http://\S+/metrics)", daemon.log()).group(1)
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r"^ocr_watcher_storage_errors_total\{[^}]*\} (\S+)$", text, re.M))
