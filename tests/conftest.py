"""Fixtures shared by the claim tests (tests/test_claim.py, tests/test_late_writes.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
