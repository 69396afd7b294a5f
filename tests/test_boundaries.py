"""Boundaries: nothing read from the folders (job ids, control files, metadata.json) makes the
daemon or the CLI write, or read, outside the outbox; /metrics listens on loopback; files get sane
permissions; nothing read from disk or from an engine is evaluated as code."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import REPO, Daemon, drop
from tests.pdfgen import sample_lines, text_pdf


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("boundaries")
    old = os.umask(0o022)  # what systemd gives a service (UMask=0022): the daemon inherits it
    try:
        d = Daemon(root, engine="text").start()
    finally:
        os.umask(old)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def completed(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> dict:
    good = text_pdf(tmp_path_factory.mktemp("src") / "good.pdf", [sample_lines(3, seed=3)] * 2)
    drop(daemon.inbox, good)
    return daemon.wait_for_job("good.pdf", {"completed"}, timeout=60)


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _plant(daemon: Daemon, completed: dict, folder_name: str, **changes) -> Path:
    """A copy of a completed job under a new job-id folder, metadata.json edited, pages removed:
    what someone with write access to the outbox could leave there."""
    folder = daemon.outbox / ".ocr-watcher" / f"plant-{folder_name}"
    shutil.copytree(daemon.job_dir(completed), folder)
    for name in ("result.md", "result_metadata.json"):
        (folder / name).unlink()
    shutil.rmtree(folder / "pages")
    (folder / "pages").mkdir()
    meta = json.loads((folder / "metadata.json").read_text())
    meta.update({"status": "queued", "finished_at": None, "error": None}, **changes)
    meta["worker"]["id"] = daemon.name  # ours: the daemon resumes it without a lease
    (folder / "metadata.json").write_text(json.dumps(meta))
    target = daemon.outbox / folder_name
    os.rename(folder, target)
    return target


# -- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["../x", "../../etc", "/etc", "..", ".ocr-watcher", "./good"])
@pytest.mark.parametrize("command", ["status", "cancel", "retry"])
def test_cli_job_arguments_cannot_leave_the_outbox(daemon: Daemon, completed: dict, command: str, job: str) -> None:
    before = set(daemon.root.iterdir())
    result = daemon.cli(command, job)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "no job matches" in result.stderr
    assert set(daemon.root.iterdir()) == before
    assert not Path("/etc/CANCEL").exists() and not Path("/etc/RETRY").exists()


# -- folders and metadata in the outbox ---------------------------------------------------------------


def test_a_symlinked_job_folder_is_neither_followed_nor_touched(
    daemon: Daemon, completed: dict, tmp_path: Path
) -> None:
    """outbox/<job id> -> a folder elsewhere holding a failed job with RETRY: the daemon does not
    retry it (no write there), and the CLI does not find it (so `cancel` writes nothing there)."""
    job_id = "linked.pdf_20260101_000000_0badc0de"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(daemon.job_dir(completed), elsewhere)
    meta = json.loads((elsewhere / "metadata.json").read_text())
    meta.update(job_id=job_id, status="failed", error={"type": "x", "message": "planted"})
    (elsewhere / "metadata.json").write_text(json.dumps(meta))
    (elsewhere / "RETRY").touch()
    before = _tree(elsewhere)
    (daemon.outbox / job_id).symlink_to(elsewhere, target_is_directory=True)
    time.sleep(2.5)  # several outbox scans (every 0.5 s)
    assert daemon.cli("cancel", job_id).returncode == 2
    assert daemon.cli("retry", job_id).returncode == 2
    assert _tree(elsewhere) == before
    assert daemon.alive()


def test_a_job_id_in_metadata_cannot_redirect_writes(daemon: Daemon, completed: dict) -> None:
    """A job folder whose metadata.json says job_id '../escape' (status queued, owned by this
    daemon): the daemon must not write metadata.json into <outbox>/../escape."""
    escape = daemon.root / "escape"
    escape.mkdir()
    _plant(daemon, completed, "planted.pdf_20260101_000000_00c0ffee", job_id="../escape")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not list(escape.iterdir()):
        time.sleep(0.2)
    assert list(escape.iterdir()) == [], "the daemon wrote outside the outbox"


def test_an_input_file_in_metadata_cannot_read_outside_the_outbox(
    daemon: Daemon, completed: dict, tmp_path: Path
) -> None:
    """input_file '../../secret.pdf' must not make the daemon OCR a file outside the outbox."""
    secret = text_pdf(daemon.root / "secret.pdf", [["TOPSECRET outside the outbox"]])
    job_id = "reader.pdf_20260101_000000_0defaced"
    _plant(daemon, completed, job_id, job_id=job_id, input_file=f"../../{secret.name}")
    deadline = time.monotonic() + 8
    result = daemon.outbox / job_id / "result.md"
    while time.monotonic() < deadline and not result.exists():
        time.sleep(0.2)
    leaked = result.exists() and "TOPSECRET" in result.read_text()
    assert not leaked, "the daemon read a file outside the outbox and published its text"


# -- HTTP -----------------------------------------------------------------------------------------------


def test_metrics_listen_on_loopback_by_default(daemon: Daemon) -> None:
    from ocr_watcher.config import Config

    assert Config().http.host == "127.0.0.1"
    match = re.search(r"metrics on http://([^/]+):(\d+)/metrics", daemon.log())
    assert match, daemon.log()
    assert match.group(1) == "127.0.0.1"
    port = int(match.group(2))
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                listening.append(address)
    assert listening == ["0100007F"], f"port {port} listens on {listening}"


# -- permissions ------------------------------------------------------------------------------------------


def test_files_the_daemon_writes_have_sane_permissions(daemon: Daemon, completed: dict) -> None:
    """Under umask 022: 0644 files, 0755 folders, in the job folder and its pages."""
    folder = daemon.job_dir(completed)
    modes = {
        p.relative_to(folder).as_posix() or ".": stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]
    }
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if name != "input.pdf" and mode != (0o755 if (folder / name).is_dir() else 0o644)
    }
    assert wrong == {}, wrong
    assert {"metadata.json", "result.md", "result_metadata.json", "pages/0001.md", "pages"} <= set(modes)


def test_group_writable_outbox(tmp_path: Path) -> None:
    """With jobs.group_writable, files are 0664 and folders 0775 even under umask 022."""
    old = os.umask(0o022)
    try:
        daemon = Daemon(tmp_path, engine="text", jobs={"group_writable": True}).start()
    finally:
        os.umask(old)
    try:
        drop(daemon.inbox, text_pdf(tmp_path / "shared.pdf", [["For the whole group"]]))
        job = daemon.wait_for_job("shared.pdf", {"completed"}, timeout=60)
    finally:
        daemon.stop()
    folder = daemon.job_dir(job)
    for path in [folder / "metadata.json", folder / "result.md", folder / "pages" / "0001.md"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path
    for path in [folder, folder / "pages"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o775, path


# -- code -----------------------------------------------------------------------------------------------


def test_no_eval_or_exec_in_the_product() -> None:
    """Nothing read from disk or from an engine is run as code: no eval( or exec( anywhere in
    ocr_watcher/ (grounding coordinates use ast.literal_eval)."""
    pattern = re.compile(r"(?<![\w.])(eval|exec)\s*\(")
    hits = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "ocr_watcher").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
