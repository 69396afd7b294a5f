"""Fixtures shared by the tests: inbox and outbox folders, one on another filesystem, and tmpfs mounts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.storage import mount_tmpfs, unmount_all


def _folder(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    return _folder(tmp_path, "inbox")


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return _folder(tmp_path, "outbox")


@pytest.fixture
def shm_outbox(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm for an outbox on another filesystem")
    if shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the temp folder here")
    folder = Path(tempfile.mkdtemp(prefix="ocrw-test-", dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount(size[, name]) -> a fresh folder (default "outbox") on its own tmpfs of that size;
    unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str, name: str = "outbox") -> Path:
        folder = mount_tmpfs(tmp_path / name, size)
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        unmount_all(mounted)
