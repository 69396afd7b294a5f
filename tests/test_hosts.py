"""Several daemons (hosts) on one inbox and one outbox, as real subprocesses: every file becomes
exactly one job, a killed daemon's jobs are taken over once its heartbeat lease expires, and a
daemon that was only paused past its lease does not write into the jobs taken from it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .daemon import BASE_CONFIG, Daemon, drop
from .pdfgen import sample_lines, scan_with_slow_page, text_pdf

LEASE = 3.0
SHARED = {
    "jobs": {"heartbeat_lease_seconds": LEASE, "outbox_scan_interval_seconds": 0.5},
    "pipeline": {"workers": 1},
}
TERMINAL = {"completed", "failed", "cancelled"}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _all_jobs(outbox: Path) -> list[dict[str, Any]]:
    jobs = []
    with os.scandir(outbox) as entries:
        for entry in entries:
            if not entry.name.startswith("."):
                meta = _read_json(Path(entry.path) / "metadata.json")
                if meta is not None:
                    jobs.append(meta)
    return jobs


def _wait(predicate, timeout: float, what: str, daemons: list[Daemon]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.name} ---\n{d.log()[-3000:]}" for d in daemons)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.2)


def _page_infos(job_dir: Path) -> dict[int, dict[str, Any]]:
    infos = {}
    for path in (job_dir / "pages").glob("*.json"):
        info = _read_json(path)
        if info is not None:
            infos[int(path.stem)] = info
    return infos


def test_three_daemons_share_500_files_and_a_killed_ones_jobs_are_taken_over(tmp_path: Path) -> None:
    """Given three daemons `a`, `b` (engine text) and `slow` (Tesseract, so that it always holds
    unfinished jobs) on one inbox and outbox, when 500 distinct one-page PDFs are dropped and `slow`
    is killed with SIGKILL while it owns jobs, then each file is in exactly one job (by sha256), all
    500 complete, and the jobs `slow` left unfinished are taken over by `a` or `b` (epoch 2), not
    before its heartbeat lease ran out, and finished once."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    common = {"inbox": inbox, "outbox": outbox, **SHARED}
    a = Daemon(tmp_path, "a", engine="text", **common)
    b = Daemon(tmp_path, "b", engine="text", **common)
    slow = Daemon(tmp_path, "slow", engine="tesseract", intake={"max_queued_jobs": 6}, **common)
    daemons = [a, b, slow]
    staging = tmp_path / "staging"
    staging.mkdir()
    sources = {}
    for index in range(500):
        line = f"Unique document number {index:04d}"
        path = text_pdf(staging / f"doc{index:04d}.pdf", [[line, *sample_lines(3, seed=index)]])
        sources[_sha256(path)] = (path.name, line)
    try:
        for daemon in daemons:
            daemon.start()
        for name in sorted(os.listdir(staging)):
            os.rename(staging / name, inbox / name)  # how a fast client on the share drops files

        def slow_owns_unfinished() -> bool:
            owned = [j for j in _all_jobs(outbox) if j["worker"]["id"] == "slow" and j["status"] not in TERMINAL]
            return len(owned) >= 3 and any(j["status"] == "processing" for j in owned)

        _wait(slow_owns_unfinished, 60, "`slow` to own unfinished jobs", daemons)
        slow.kill(signal.SIGKILL)
        killed_at = time.time()
        last_beat = _ts(_read_json(outbox / ".ocr-watcher" / "workers" / "slow.json")["heartbeat_at"])
        orphans = {
            j["job_id"] for j in _all_jobs(outbox) if j["worker"]["id"] == "slow" and j["status"] not in TERMINAL
        }
        assert orphans, "`slow` was killed while owning unfinished jobs"

        def all_terminal() -> bool:
            jobs = _all_jobs(outbox)
            return len(jobs) >= 500 and all(j["status"] in TERMINAL for j in jobs)

        _wait(all_terminal, 150, "all 500 jobs to finish", daemons)
        time.sleep(1.0)  # anything still (wrongly) running would show up now
        assert a.alive() and b.alive()
    finally:
        for daemon in daemons:
            daemon.stop()

    jobs = _all_jobs(outbox)
    by_sha = {}
    for job in jobs:
        assert job["source"]["sha256"] not in by_sha, f"{job['source']['name']} is in two jobs"
        by_sha[job["source"]["sha256"]] = job
    assert set(by_sha) == set(sources), "every file is in exactly one job"
    assert [j["source"]["name"] for j in jobs if j["status"] != "completed"] == []
    for sha, job in by_sha.items():
        name, line = sources[sha]
        assert job["source"]["name"] == name
        result = (outbox / job["job_id"] / "result.md").read_text()
        if job["engine"]["kind"] == "text":
            assert line in result, job["job_id"]
        assert len(list((outbox / job["job_id"] / "pages").glob("*.md"))) == 1
    assert [p.name for p in inbox.iterdir() if p.name != ".ocr-watcher"] == []
    assert list((inbox / ".ocr-watcher" / "claims").glob("*")) == [], "no claim is left half-way"

    logs = a.log() + b.log()
    for job_id in orphans:
        job = next(j for j in jobs if j["job_id"] == job_id)
        assert job["worker"]["id"] in {"a", "b"} and job["worker"]["epoch"] == 2, job["worker"]
        assert f"{job_id}: taken over from slow" in logs
        lease_file = outbox / job_id / ".lease-2"
        taken_at = lease_file.stat().st_mtime
        assert taken_at >= last_beat + LEASE, f"{job_id} was taken {taken_at - last_beat:.2f} s after the last beat"
        for info in _page_infos(outbox / job_id).values():
            if info["worker"] != "slow":
                assert _ts(info["finished_at"]) >= last_beat + LEASE
    assert logs.count("taken over from slow") == len(orphans), "each orphan is taken over once"
    assert "taken over from a" not in logs and "taken over from b" not in logs, "live daemons keep their jobs"
    print(f"killed `slow` {killed_at - last_beat:.2f} s after its last heartbeat; {len(orphans)} jobs taken over")


def _job_dir_snapshot(job_dir: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (inode, mtime_ns): every atomic rewrite changes the inode."""
    snapshot = {}
    for path in job_dir.rglob("*"):
        if path.is_file():
            st = path.stat()
            snapshot[str(path.relative_to(job_dir))] = (st.st_ino, st.st_mtime_ns)
    return snapshot


def test_a_paused_daemon_does_not_write_into_a_job_taken_from_it(tmp_path: Path) -> None:
    """Given daemon `paused` OCRing a 24-page scan and a second daemon `other`, when `paused` is
    stopped (SIGSTOP) for longer than its lease, then `other` takes the job over; and when `paused`
    continues (SIGCONT), it logs that the job was taken over and writes nothing into it again: no page
    file, no metadata.json, no result; the job completes once, owned by `other` at epoch 2."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    common = {"inbox": inbox, "outbox": outbox, **SHARED}
    paused = Daemon(tmp_path, "paused", **merge_workers(common, 2))
    # `other` claims nothing from the inbox (so the job is surely `paused`'s) and is started first:
    # a start takes a second or two, and 24 pages can be done in that time.
    other = Daemon(tmp_path, "other", **common, intake={**BASE_CONFIG["intake"], "ignore": ["*.pdf"]})
    daemons = [paused, other]
    source = scan_with_slow_page(tmp_path / "long.pdf", 2, 21)  # 24 pages, the third slow
    seen_paused_meta_after_cont: list[dict[str, Any]] = []
    try:
        paused.start()
        other.start()
        drop(inbox, source)
        job = paused.wait_for_job("long.pdf", {"processing"}, timeout=60)
        job_dir = outbox / job["job_id"]
        paused.wait_until(lambda: paused.job_for("long.pdf")["progress"]["pages_done"] >= 2, 60, "2 pages")
        paused.kill(signal.SIGSTOP)
        stopped_at = time.time()
        other.wait_until(lambda: "taken over from paused" in other.log(), 30, "the takeover")
        other.wait_until(
            lambda: any(i["worker"] == "other" for i in _page_infos(job_dir).values()), 60, "a page by `other`"
        )
        paused.kill(signal.SIGCONT)
        continued_at = time.time()
        deadline = time.monotonic() + 2 * LEASE
        while time.monotonic() < deadline or (other.job_for("long.pdf") or {}).get("status") not in TERMINAL:
            meta = _read_json(job_dir / "metadata.json")
            if meta is not None and meta["worker"]["id"] == "paused":
                seen_paused_meta_after_cont.append(meta)
            assert time.monotonic() < deadline + 120, "the job did not finish"
            time.sleep(0.02)
        done = other.job_for("long.pdf")
        settled = _job_dir_snapshot(job_dir)
        paused.wait_until(lambda: "another daemon has taken it over" in paused.log(), 10, "`paused` to notice")
        time.sleep(LEASE)  # give `paused` every chance to write something more
        after = _job_dir_snapshot(job_dir)
        assert paused.alive() and other.alive()
    finally:
        paused.kill(signal.SIGCONT) if paused.alive() else None
        for daemon in daemons:
            daemon.stop()

    assert seen_paused_meta_after_cont == [], "metadata.json was written by the paused daemon after SIGCONT"
    assert done["status"] == "completed"
    assert done["worker"]["id"] == "other" and done["worker"]["epoch"] == 2
    assert after == settled, "files of the finished job changed afterwards"
    infos = _page_infos(job_dir)
    assert sorted(infos) == list(range(1, 25)) and len(list((job_dir / "pages").glob("*.md"))) == 24
    for page, info in infos.items():
        if info["worker"] == "paused":
            assert _ts(info["finished_at"]) <= stopped_at, f"page {page} was written by `paused` after SIGSTOP"
    assert any(i["worker"] == "other" for i in infos.values())
    assert f"{job['job_id']}: no longer working on it: another daemon has taken it over" in paused.log()
    print(
        f"paused for {continued_at - stopped_at:.1f} s; pages by paused/other:",
        sum(i["worker"] == "paused" for i in infos.values()),
        sum(i["worker"] == "other" for i in infos.values()),
    )


def merge_workers(config: dict[str, Any], workers: int) -> dict[str, Any]:
    return {**config, "pipeline": {**config["pipeline"], "workers": workers}}


def test_recovery_on_another_host_never_removes_a_claim_in_progress(tmp_path: Path) -> None:
    """Given host A in the middle of a claim, when host B runs claim recovery (at start, and on every
    outbox scan), then B leaves A's claim alone at every step: the claim folder is built under a hidden
    name with its record inside and only then renamed into place, so B never meets a claim it cannot
    attribute; a half-built folder is removed once its builder is gone, or hours old when its builder
    cannot be told."""
    import os
    import time

    from ocr_watcher.spool.claim import ABANDONED_BUILD_SECONDS, CLAIM_RECORD, Claimer
    from ocr_watcher.spool.store import JobStore

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    claims = inbox / ".ocr-watcher" / "claims"
    claims.mkdir(parents=True)
    outbox.mkdir()
    host_b = Claimer(inbox, JobStore(outbox, fsync=False), "host-b")
    # A, step 1: the claim folder being built, record written, not yet renamed into place.
    building = claims / ".doc.pdf_20260101_000000_0000000a.tmp-00aa11bb"
    building.mkdir()
    (building / CLAIM_RECORD).write_text("{}")
    assert host_b.recover(lambda worker: True) == []
    assert building.exists(), "a claim being built is never removed by another host"
    # A crash left it behind long ago: now it goes.
    old = time.time() - ABANDONED_BUILD_SECONDS - 60
    os.utime(building, (old, old))
    host_b.recover(lambda worker: True)
    assert not building.exists()
    # A's build with its record (or only the record's temporary file: A died in its fsync) goes as
    # soon as A is gone, and not before: removing it cannot lose a file, the inbox file moves later.
    for record_name in (CLAIM_RECORD, f".{CLAIM_RECORD}.tmp-0badf00d"):
        built = claims / f".doc.pdf_20260101_000000_0000000c.tmp-{len(record_name):08x}"
        built.mkdir()
        record = {"job_id": "doc.pdf_20260101_000000_0000000c", "worker_id": "host-a", "claimed_at": "", "request": {}}
        (built / record_name).write_text(json.dumps(record))
        host_b.recover(lambda worker: worker != "host-a")
        assert built.exists(), "host-a is alive: its claim in progress stays"
        host_b.recover(lambda worker: worker == "host-a")
        assert not built.exists(), f"host-a is gone: its half-built claim goes ({record_name})"
    # A folder without a record but with a file in it (a damaged disk): the file is never deleted.
    odd = claims / "doc.pdf_20260101_000000_0000000b"
    odd.mkdir()
    (odd / "input.pdf").write_bytes(b"%PDF-1.4 kept")
    os.utime(odd, (old, old))
    host_b.recover(lambda worker: True)
    assert (odd / "input.pdf").read_bytes() == b"%PDF-1.4 kept"
