"""Fixtures shared by the tests: inbox and outbox folders, one on another filesystem, tmpfs mounts, and
the real-vLLM tier's servers (tests/test_vllm_real.py); and, after every test, each page JSON it left
in its folders checked against the documented schemas (docs/schema/: page files, result.json)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.schema import check_page_files
from tests.storage import mount_tmpfs, unmount_all
from tests.vllm_cpu.server import VllmServers


@pytest.fixture(autouse=True)
def _page_files_follow_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every pages/NNNN.json a test leaves under its tmp_path validates against the schema."""
    yield
    tmp_path = getattr(request.node, "funcargs", {}).get("tmp_path")  # the folder outlives its fixture
    if tmp_path is not None and request.node.get_closest_marker("hand_made_pages") is None:
        problems = check_page_files(tmp_path)
        assert problems == [], "page JSON not as docs/schema/page.schema.json says:\n" + "\n".join(problems[:10])


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


# The real-vLLM tier: a real vLLM server on this CPU (tests/vllm_cpu). Off unless OCRW_TEST_VLLM_PYTHON
# names the vllm-cpu venv's python, which .ci/vllm-cpu creates and prints and .ci/run exports. Not an
# OCR_WATCHER_* name: the daemon reads those as configuration and refuses unknown keys.
VLLM_PYTHON_ENV = "OCRW_TEST_VLLM_PYTHON"
_ENABLE_VLLM = f"to enable it run `export {VLLM_PYTHON_ENV}=$(.ci/vllm-cpu | tail -n1)` (.ci/run does this)"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    value = os.environ.get(VLLM_PYTHON_ENV, "")
    if not value:
        pytest.skip(f"real-vLLM tier off: {VLLM_PYTHON_ENV} is not set; {_ENABLE_VLLM}")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"real-vLLM tier off: {VLLM_PYTHON_ENV}={value} is not an interpreter (venv gone?); {_ENABLE_VLLM}")
    return path


@pytest.fixture(scope="session")
def vllm_servers(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServers]:
    """The session's real servers (logs under the session temp folder); stopped when the session ends."""
    servers = VllmServers(vllm_python, tmp_path_factory.mktemp("real-vllm"))
    yield servers
    servers.stop()


@pytest.fixture
def real_vllm(vllm_servers: VllmServers) -> str:
    """Base URL of a real vLLM serving tiny DeepSeek-OCR with NGramPerReqLogitsProcessor (started once)."""
    return vllm_servers.url(ngram=True)


@pytest.fixture
def real_vllm_plain(vllm_servers: VllmServers) -> str:
    """Base URL of a real vLLM started without the logits processor (stops the other flavour first)."""
    return vllm_servers.url(ngram=False)
