"""The daemon's managed mode against a REAL vLLM 0.32 (CPU build, tests/vllm_cpu): with `vllm.servers` empty
the daemon starts `vllm serve` itself, waits for it, restarts it after a `kill -9` mid-job without losing
or redoing a page, and stops it with itself.

After tests/test_vllm_real.py (file order): it stops that file's shared server first, so that two servers
never share the 2 cores. Two server starts (about 80 s each) and two pages (about 40 s each).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.daemon import Daemon, drop
from tests.pdfgen import text_pdf
from tests.storage import readyz
from tests.vllm_cpu.scrape import metrics, requests_succeeded
from tests.vllm_cpu.server import BASE_FLAGS, LAUNCHER, VllmServers, build_model_folder, free_port

pytestmark = pytest.mark.timeout(1500)


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every process now: pid -> (state, parent pid, process group), from /proc/<pid>/stat."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
            except OSError:
                continue
            found[int(entry.name)] = (fields[0], int(fields[1]), int(fields[2]))
    return found


def _children(parent: int) -> list[int]:
    return [pid for pid, (_, ppid, _) in _processes().items() if ppid == parent]


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group pgid."""
    return [pid for pid, (state, _, group) in _processes().items() if group == pgid and state != "Z"]


def _server_leader(daemon: Daemon) -> int | None:
    """The daemon's `vllm serve` child: the leader of its own process group (the supervisor starts it so)."""
    for pid in _children(daemon.pid):
        try:
            if str(LAUNCHER) in Path(f"/proc/{pid}/cmdline").read_text() and os.getpgid(pid) == pid:
                return pid
        except (OSError, ProcessLookupError):
            continue
    return None


def _pages_done(daemon: Daemon, name: str) -> int:
    return int(((daemon.job_for(name) or {}).get("progress") or {}).get("pages_done") or 0)


def test_the_daemon_runs_its_own_real_vllm_and_a_kill_9_of_it_mid_job_loses_no_page(
    vllm_servers: VllmServers, vllm_python: Path, tmp_path: Path
) -> None:
    """Given engine vllm with no servers listed and the CPU launcher as `vllm.managed.command`, the daemon
    starts a real vLLM as its child without waiting for it: a file dropped meanwhile is claimed and /readyz
    says vLLM is starting, then ready. When the child's leader is
    killed with SIGKILL after page 1 of 2 (page 2 in flight), then the supervisor ends what was left of its
    process group, starts a new server, and the job completes: page 1 is not redone, the new server ran
    exactly one request (page 2), and stopping the daemon stops the new server's whole process group."""
    vllm_servers.stop()
    # A path with "DeepSeek-OCR" in it: vLLM serves the model under its path, and the engine knows the
    # prompt size of models by that name (engines/vllm.py knows_prompt_size).
    model = tmp_path / "DeepSeek-OCR"
    model.symlink_to(build_model_folder(vllm_python, vllm_servers.workdir / "model"), target_is_directory=True)
    port = free_port()
    managed = {
        "command": [str(vllm_python), str(LAUNCHER)],  # the launcher maps `serve MODEL ...` to the module
        "port": port,
        "extra_args": BASE_FLAGS,
        "startup_timeout_seconds": 600,
    }
    vllm = {"servers": [], "model": str(model), "managed": managed, "max_tokens": 16, "loop_retry_temperatures": []}
    # One page in flight at a time, so that page 1 is done and page 2 at the server when it is killed.
    vllm |= {"max_side_px": 640, "max_in_flight": 1}
    pdf = text_pdf(tmp_path / "managed.pdf", [["Invoice 2024-117", "Total: 1,250.00 EUR"]] * 2, page_size=(320, 320))
    daemon = Daemon(tmp_path, engine="vllm", vllm=vllm, pipeline={"workers": 1})
    try:
        daemon.start()  # inside the try: a start that fails must still stop the daemon and its vLLM
        daemon.wait_until(lambda: _server_leader(daemon) is not None, 60, "the daemon to start vLLM")
        first = _server_leader(daemon)
        assert first is not None
        # While the model loads, the daemon already claims files and says what it waits for.
        drop(daemon.inbox, pdf)
        daemon.wait_until(lambda: daemon.job_for("managed.pdf") is not None, 60, "the claim")
        status, text = readyz(daemon)
        assert status == 503 and "vLLM is starting" in text, (status, text)
        daemon.wait_until(lambda: readyz(daemon)[0] == 200, 600, "the managed vLLM to be ready")

        daemon.wait_until(lambda: _pages_done(daemon, "managed.pdf") >= 1, 600, "page 1")
        job_dir = daemon.job_dir(daemon.job_for("managed.pdf") or {})
        page_1 = (job_dir / "pages" / "0001.md").stat().st_mtime_ns
        os.kill(first, signal.SIGKILL)

        job = daemon.wait_for_job("managed.pdf", {"completed", "failed", "cancelled"}, timeout=900)
        second = _server_leader(daemon)
        served_after = metrics(f"http://127.0.0.1:{port}")
    finally:
        code = daemon.stop(timeout=120)
    log = daemon.log()
    assert job["status"] == "completed" and job["progress"]["pages_done"] == 2, job
    assert (job_dir / "pages" / "0001.md").stat().st_mtime_ns == page_1, "page 1 was done again"
    assert requests_succeeded(served_after) == 1, "the new server ran page 2 only"
    assert f"starting vLLM: {vllm_python} {LAUNCHER} serve {model} --host 127.0.0.1 --port {port}" in log
    assert f"vLLM is up at http://127.0.0.1:{port}, serving {model}" in log
    assert "vLLM was killed by signal 9" in log and "restarting vLLM in 5 s (failure 1)" in log, log[-4000:]
    assert second is not None and second != first
    assert _group_members(first) == [], "the killed server's engine processes were left running"
    assert code == 0 and _group_members(second) == [], "stopping the daemon left its vLLM running"
    result = json.loads((job_dir / "result_metadata.json").read_text())
    assert [page["extra"]["server"] for page in result["pages"]] == [f"http://127.0.0.1:{port}"] * 2
