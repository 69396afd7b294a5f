"""Fuzzing the intake and the isolated renderer with mutated PDFs (invariant 6).

300 deterministic mutations (byte flips, truncations, splices of two PDFs, inserted junk, deleted
runs) of valid PDFs go into one daemon (engine text, short limits). Every one must end in a
terminal status, the daemon must never die, and no render process may be left working on a file
beyond its time limit.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.daemon import Daemon, drop
from tests.pdfgen import mutations, sample_lines, scanned_pdf, slow_pdf, text_pdf

SEED = int(os.environ.get("FUZZ_SEED", "20261129"))
COUNT = 300
RENDER_TIMEOUT_S = 3
TERMINAL = {"completed", "failed", "cancelled"}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _render_workers(daemon_pid: int) -> dict[int, float]:
    """pid -> CPU seconds (user + system) of the daemon's render worker children."""
    found: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"ocr_watcher.pipeline.render_worker" in cmdline and int(fields[1]) == daemon_pid:
            found[int(entry)] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return found


def _orphan_render_workers() -> list[int]:
    """Render workers whose parent is no longer a daemon (reparented to init or a subreaper)."""
    orphans = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        # A daemon runs as `python -m ocr_watcher.cli` (tests) or as the `ocr-watcher` script (people).
        is_daemon = b"ocr_watcher.cli" in parent or b"ocr-watcher\0run" in parent
        if b"ocr_watcher.pipeline.render_worker" in cmdline and not is_daemon:
            orphans.append(int(entry))
    return orphans


def test_mutated_pdfs_all_end_terminal_and_the_daemon_survives(tmp_path: Path) -> None:
    print(f"fuzz seed {SEED} (set FUZZ_SEED to replay), {COUNT} mutations")
    src = tmp_path / "src"
    src.mkdir()
    sources = [
        text_pdf(src / "a.pdf", [sample_lines(8, seed=s) for s in range(3)]).read_bytes(),
        text_pdf(src / "b.pdf", [sample_lines(4, seed=9)], page_size=(400, 300), rotate=90).read_bytes(),
        scanned_pdf(src / "c.pdf", [["Scanned page"]], dpi=50).read_bytes(),
        slow_pdf(src / "d.pdf", shapes=50).read_bytes(),
    ]
    variants = mutations(sources, COUNT, SEED)
    daemon = Daemon(
        tmp_path,
        engine="text",
        intake={"settle_seconds": 0.3, "poll_interval_seconds": 0.3, "invalid_timeout_seconds": 0.5},
        pipeline={"workers": 2, "render_timeout_seconds": RENDER_TIMEOUT_S, "render_memory_mb": 512, "page_retries": 1},
    ).start()
    assert daemon.proc is not None
    busy_since: dict[int, float] = {}  # render worker pid -> when its CPU time started rising without pause
    longest_busy = [0.0]
    last_cpu: dict[int, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = time.monotonic()
            for pid, cpu in _render_workers(daemon.proc.pid).items():  # type: ignore[union-attr]
                if cpu > last_cpu.get(pid, cpu - 1):
                    busy_since.setdefault(pid, now)
                    longest_busy[0] = max(longest_busy[0], now - busy_since[pid])
                else:
                    busy_since.pop(pid, None)
                last_cpu[pid] = cpu
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for name, data in variants:
            (tmp_path / "m").mkdir(exist_ok=True)
            (tmp_path / "m" / f"{name}.pdf").write_bytes(data)
            drop(daemon.inbox, tmp_path / "m" / f"{name}.pdf")

        def all_terminal() -> bool:
            jobs = daemon.jobs()
            return len(jobs) == COUNT and all(job["status"] in TERMINAL for job in jobs)

        daemon.wait_until(all_terminal, 240, f"all {COUNT} fuzzed jobs to end")
        time.sleep(2 * RENDER_TIMEOUT_S)  # idle now: any render process still working is a leak
        idle = _render_workers(daemon.proc.pid)
        time.sleep(1.0)
        still = _render_workers(daemon.proc.pid)
        assert daemon.alive()
    finally:
        stop.set()
        watcher.join()
        daemon.stop()
    jobs = daemon.jobs()
    statuses = {status: sum(job["status"] == status for job in jobs) for status in TERMINAL}
    print(f"fuzz outcome: {statuses}; longest continuous render-process CPU streak {longest_busy[0]:.1f} s")
    assert len(jobs) == COUNT
    for job in jobs:
        if job["status"] == "failed":
            assert job["error"]["type"] and job["error"]["message"], job
    busy_after = [pid for pid, cpu in still.items() if cpu > idle.get(pid, cpu)]
    assert busy_after == [], f"render processes still working after every job ended: {busy_after}"
    # A render process may work on many pages back to back, so its age says nothing; what must
    # not happen is one call running past the limit. Each busy streak is bounded by the limit
    # plus the time to the next page (generous slack for 2 cores shared with the daemon).
    for job in jobs:
        for info in (tmp_path / "outbox" / job["job_id"] / "pages").glob("*.json"):
            seconds = json.loads(info.read_text())["seconds_render"]
            assert seconds <= RENDER_TIMEOUT_S + 1, (job["job_id"], info.name, seconds)
    assert _orphan_render_workers() == [], "render processes outlived the daemon"
    assert "internal error" not in daemon.log()


@pytest.mark.parametrize("seed", [SEED])
def test_mutations_are_deterministic(seed: int, tmp_path: Path) -> None:
    source = [text_pdf(tmp_path / "a.pdf", [["x"]]).read_bytes()]
    assert mutations(source, 20, seed) == mutations(source, 20, seed)
