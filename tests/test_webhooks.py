"""Webhooks and the command hook: the rules as pure functions, then real daemons telling a real
local receiver (tests/receiver.py) that jobs ended, through failures, a receiver that is down while
the daemon is killed, and a slow receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import textwrap
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ocr_watcher.config import Config, ConfigError, load_config
from ocr_watcher.deliveries import policy
from ocr_watcher.spool.model import EngineInfo, JobMeta, Source, Status, Worker

from .daemon import Daemon, drop
from .pdfgen import sample_lines, text_pdf
from .receiver import Receiver

SECRET = "s3cret-for-the-tests-only"
FAST = {"engine": "text"}


def _meta(status: Status = Status.COMPLETED, attempts: int = 1) -> JobMeta:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    meta = JobMeta(
        job_id="a.pdf_20261203_120000_0123abcd",
        source=Source(name="a.pdf", inbox_path="a.pdf", size=10),
        input_file="input.pdf",
        created_at=now,
        engine=EngineInfo(kind="text"),
        worker=Worker(id="w", host="h", pid=1),
        attempts=attempts,
    )
    meta.transition(Status.PROCESSING, now=now)
    meta.transition(status, now=now)
    return meta


# -- the rules -----------------------------------------------------------------------------------
def test_the_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    body = policy.body_bytes(policy.job_body(_meta(), "/out/a", None))
    sent = policy.headers("d-1", "job.completed", body, 1_800_000_000, SECRET)
    want = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sent[policy.SIGNATURE_HEADER] == f"sha256={want}"
    assert sent[policy.TIMESTAMP_HEADER] == "1800000000"
    assert policy.SIGNATURE_HEADER not in policy.headers("d-1", "job.completed", body, 1, None)


def test_a_webhook_url_is_shown_without_its_user_password_or_query() -> None:
    assert policy.shown_target("https://u:pw@hooks.example:8443/in?token=abc#x") == "https://hooks.example:8443/in"
    assert policy.shown_target("http://127.0.0.1/hook") == "http://127.0.0.1/hook"
    assert policy.shown_target("/usr/bin/notify --job") == "/usr/bin/notify --job"


def test_one_ending_is_one_delivery_id_and_a_retried_job_gets_a_new_one() -> None:
    job = "a.pdf_20261203_120000_0123abcd"
    assert policy.delivery_id(job, 1) == policy.delivery_id(job, 1)
    assert policy.delivery_id(job, 1) != policy.delivery_id(job, 2)
    body = policy.job_body(_meta(attempts=2), "/out/a", "https://ocr.example/")
    assert body["delivery_id"] == policy.delivery_id(job, 2)
    assert body["status"] == "completed" and body["event"] == "job.completed"
    assert body["files"]["markdown"] == "/out/a/result.md"
    assert body["urls"]["markdown"] == f"https://ocr.example/jobs/{job}/download"
    failed = policy.job_body(_meta(Status.FAILED), "/out/a", None)
    assert failed["files"] == {} and "urls" not in failed


@pytest.mark.parametrize(
    ("answer", "tries", "age", "expected"),
    [
        (policy.Answer(status=500), 1, 0.0, 1.0),
        (policy.Answer(status=503), 3, 0.0, 4.0),
        (policy.Answer(error="ConnectError"), 2, 0.0, 2.0),
        (policy.Answer(status=429, retry_after=30.0), 1, 0.0, 30.0),
        (policy.Answer(status=429, retry_after=1e9), 1, 0.0, policy.LONGEST_RETRY_AFTER_SECONDS),
        (policy.Answer(status=500), 30, 0.0, policy.LONGEST_RETRY_SECONDS),
        (policy.Answer(status=404), 1, 0.0, None),  # other 4xx: it will not change
        (policy.Answer(status=400), 1, 0.0, None),
        (policy.Answer(status=500), 1, 86399.5, None),  # the next try would come after the limit
    ],
)
def test_when_a_delivery_is_tried_again(answer, tries, age, expected) -> None:
    assert policy.next_try_in(answer, tries, age, give_up_after=86400.0) == expected


def test_a_delivery_found_after_a_restart_is_owed_once_its_ending_is_on_disk() -> None:
    assert policy.still_owed(1, _meta(Status.COMPLETED, attempts=1))
    assert policy.still_owed(1, _meta(Status.FAILED, attempts=2))  # retried since: it did end
    assert policy.still_owed(1, None)  # the folder is gone: only ended jobs are deleted
    running = _meta(Status.COMPLETED)
    running.status = Status.PROCESSING
    assert not policy.still_owed(1, running)  # the save never happened: it ends again later


def test_a_named_profile_inherits_the_default_profiles_webhooks(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "profiles": {
                "default": {"webhooks": [{"url": "http://hook.local/a", "secret": SECRET}]},
                "urgent": {"priority": 5},
                "quiet": {"webhooks": []},
                "own": {"webhooks": [{"url": "http://hook.local/b"}], "command": {"argv": ["/bin/true"]}},
            }
        }
    )
    assert [h.url for h in config.webhooks("urgent")] == ["http://hook.local/a"]
    assert [h.url for h in config.webhooks("no-such-profile")] == ["http://hook.local/a"]
    assert config.webhooks("quiet") == []
    assert [h.url for h in config.webhooks("own")] == ["http://hook.local/b"]
    assert config.command_hook("own") is not None and config.command_hook("urgent") is None
    assert SECRET not in repr(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: {default: {webhooks: [{url: 'http://x/', secret: short}]}}\n")
    with pytest.raises(ConfigError, match="secret"):
        load_config(bad, environ={})
    bad.write_text("profiles: {default: {webhooks: [{url: 'ftp://x/'}]}}\n")
    with pytest.raises(ConfigError, match="url"):
        load_config(bad, environ={})


# -- real daemons, a real receiver ----------------------------------------------------------------
def _drop_text_pdfs(tmp_path: Path, inbox: Path, n: int, prefix: str = "doc") -> list[str]:
    names = []
    (tmp_path / "stage").mkdir(exist_ok=True)
    for i in range(n):
        path = text_pdf(tmp_path / "stage" / f"{prefix}{i:03d}.pdf", [sample_lines(3, seed=i)])
        drop(inbox, path)
        names.append(path.name)
    return names


def _hooked(receiver: Receiver, query: str = "", **extra) -> dict:
    hook = {"url": receiver.url + query, "secret": SECRET, **extra}
    return {**FAST, "profiles": {"default": {"webhooks": [hook]}}}


def _wait_delivered(daemon: Daemon, receiver: Receiver, n: int, timeout: float = 120) -> None:
    daemon.wait_until(lambda: len(receiver.accepted_ids()) >= n, timeout, f"{n} deliveries accepted")


def _metric(daemon: Daemon, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"{daemon.http_url}/metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in /metrics")


def _wait_metric(daemon: Daemon, value: float, name: str, **labels: str) -> None:
    """The count is handed to the metrics by the main loop a moment after the job folder shows it."""

    def reached() -> bool:
        try:
            return _metric(daemon, name, **labels) == value
        except AssertionError:
            return False

    daemon.wait_until(reached, 30, f"{name}{labels} == {value}")


def _log_of(daemon: Daemon, job: dict) -> list[dict]:
    return json.loads((daemon.job_dir(job) / "deliveries.json").read_text())["deliveries"]


def test_a_receiver_that_fails_three_times_gets_each_ending_once_signed(tmp_path: Path) -> None:
    """Given a receiver that answers 500 to the first three tries of every delivery, when three
    jobs complete, then each job's one delivery id is accepted on the fourth try, every try is
    signed, and the job folder, the job API, the metrics and nothing else show it (the secret
    appears nowhere, nor does the token in the webhook URL's query)."""
    receiver = Receiver(fail_first=3).start()
    try:
        with Daemon(tmp_path, **_hooked(receiver, query="?token=tok-in-the-query")) as daemon:
            names = _drop_text_pdfs(tmp_path, daemon.inbox, 3)
            jobs = [daemon.wait_for_job(name, {"completed"}) for name in names]
            _wait_delivered(daemon, receiver, 3)
            _wait_metric(daemon, 3, "ocr_watcher_deliveries_total", kind="webhook", outcome="delivered")
            assert _metric(daemon, "ocr_watcher_deliveries_total", kind="webhook", outcome="retried") == 9
            url = f"{daemon.http_url}/jobs/{jobs[0]['job_id']}"
            (shown,) = json.loads(urllib.request.urlopen(url, timeout=10).read())["deliveries"]
            assert shown["state"] == "delivered" and shown["target"] == receiver.url and shown["tries"] == 4
            assert shown["delivery_id"] == policy.delivery_id(jobs[0]["job_id"], 1)
    finally:
        receiver.stop()
    want = {policy.delivery_id(job["job_id"], 1): job for job in jobs}
    assert receiver.accepted_ids() == set(want)
    assert len(receiver.accepted()) == 3 and len(receiver.received) == 12
    for got in receiver.received:
        assert got.path == "/hook?token=tok-in-the-query"
        assert got.signature_ok(SECRET), got.headers
        assert not got.signature_ok("another-secret-entirely")
        body = got.body
        job = want[got.delivery_id]
        assert body["job_id"] == job["job_id"] and body["status"] == "completed"
        assert body["source_name"] == job["source"]["name"] and body["pages_total"] == 1
        assert Path(body["files"]["markdown"]).read_text() == (daemon.job_dir(job) / "result.md").read_text()
    for job in jobs:
        (entry,) = _log_of(daemon, job)
        assert entry["state"] == "delivered" and entry["tries"] == 4 and entry["http_status"] == 200
    assert not list((daemon.outbox / ".ocr-watcher" / "deliveries").glob("*.json"))  # nothing owed
    everything = daemon.log() + "".join(p.read_text() for p in daemon.outbox.rglob("*.json"))
    assert SECRET not in everything and "tok-in-the-query" not in everything


def test_deliveries_owed_when_the_daemon_is_killed_are_made_after_its_restart(tmp_path: Path) -> None:
    """Given a receiver that is down, when jobs complete and the daemon is killed with SIGKILL, then
    the deliveries wait on disk, and after a restart with the receiver up each job's id arrives."""
    receiver = Receiver()  # not started: connections are refused
    daemon = Daemon(tmp_path, **_hooked(receiver)).start()
    names = _drop_text_pdfs(tmp_path, daemon.inbox, 4)
    jobs = [daemon.wait_for_job(name, {"completed"}) for name in names]
    owed = daemon.outbox / ".ocr-watcher" / "deliveries"
    daemon.wait_until(lambda: len(list(owed.glob("*.json"))) == 4, 30, "four deliveries owed on disk")

    def pending_in_job_folders() -> bool:
        logs = [daemon.job_dir(job) / "deliveries.json" for job in jobs]
        return all(log.exists() and json.loads(log.read_text())["deliveries"][0]["state"] == "pending" for log in logs)

    daemon.wait_until(pending_in_job_folders, 30, "pending in every job folder")
    daemon.kill()
    receiver.start()
    try:
        with Daemon(tmp_path, **_hooked(receiver)) as again:
            _wait_delivered(again, receiver, 4)
            again.wait_until(lambda: not list(owed.glob("*.json")), 30, "nothing owed")
    finally:
        receiver.stop()
    assert receiver.accepted_ids() == {policy.delivery_id(job["job_id"], 1) for job in jobs}
    for job in jobs:
        (entry,) = _log_of(daemon, job)
        assert entry["state"] == "delivered" and entry["tries"] >= 2


def test_a_peer_takes_over_the_deliveries_of_a_daemon_killed_on_a_shared_outbox(tmp_path: Path) -> None:
    """Given two daemons on one outbox and a receiver that is down, when one of them is killed with
    SIGKILL owing deliveries, then the other, still running, sends them once the dead one's
    heartbeat lease has run out (without a restart of its own)."""
    receiver = Receiver()
    outbox = tmp_path / "outbox"
    config = _hooked(receiver)
    survivor = Daemon(tmp_path, "d2", inbox=tmp_path / "inbox2", outbox=outbox, **config).start()
    doomed = Daemon(tmp_path, "d1", inbox=tmp_path / "inbox1", outbox=outbox, **config)
    try:
        doomed.start()
        names = _drop_text_pdfs(tmp_path, doomed.inbox, 3)
        jobs = [doomed.wait_for_job(name, {"completed"}) for name in names]
        owed = outbox / ".ocr-watcher" / "deliveries"
        doomed.wait_until(lambda: len(list(owed.glob("*.json"))) == 3, 30, "three deliveries owed on disk")
        doomed.kill()
        receiver.start()
        # the lease (5 s) and the next look at the pending folder (every 30 s)
        _wait_delivered(survivor, receiver, 3, timeout=90)
        survivor.wait_until(lambda: not list(owed.glob("*.json")), 30, "nothing owed")
        assert "taking over its webhook delivery from d1" in survivor.log()
    finally:
        doomed.stop()  # (already dead unless the test failed early)
        survivor.stop()
        receiver.stop()
    assert receiver.accepted_ids() == {policy.delivery_id(job["job_id"], 1) for job in jobs}


def test_a_slow_receiver_gets_every_one_of_a_hundred_endings(tmp_path: Path) -> None:
    receiver = Receiver(delay=0.3).start()
    try:
        with Daemon(tmp_path, **_hooked(receiver), intake={"max_queued_jobs": 64}) as daemon:
            names = _drop_text_pdfs(tmp_path, daemon.inbox, 100)
            _wait_delivered(daemon, receiver, 100, timeout=240)
            jobs = [daemon.job_for(name) for name in names]
    finally:
        receiver.stop()
    assert all(job is not None and job["status"] == "completed" for job in jobs)
    assert receiver.accepted_ids() == {policy.delivery_id(job["job_id"], 1) for job in jobs if job}


def test_a_refusing_receiver_is_not_asked_again_and_a_failed_job_is_told_too(tmp_path: Path) -> None:
    """A 4xx other than 408/429 is final: one try, recorded as undeliverable. A file that fails at
    claim time (not a PDF) is an ending like the others, with its error in the body."""
    receiver = Receiver(status=410).start()
    try:
        with Daemon(tmp_path, **_hooked(receiver)) as daemon:
            junk = tmp_path / "junk.pdf"
            junk.write_bytes(b"this is not a PDF at all\n" * 20)
            drop(daemon.inbox, junk)
            job = daemon.wait_for_job("junk.pdf", {"failed"}, timeout=60)
            daemon.wait_until(
                lambda: (
                    (daemon.job_dir(job) / "deliveries.json").exists()
                    and _log_of(daemon, job)[0]["state"] == "undeliverable"
                ),
                30,
                "undeliverable",
            )
            _wait_metric(daemon, 1, "ocr_watcher_deliveries_total", kind="webhook", outcome="undeliverable")
    finally:
        receiver.stop()
    (got,) = receiver.received
    assert got.body["status"] == "failed" and got.body["error"]["type"]
    assert _log_of(daemon, job)[0]["tries"] == 1 and _log_of(daemon, job)[0]["http_status"] == 410


def test_the_command_hook_runs_with_the_job_in_its_environment(tmp_path: Path) -> None:
    """The profile's command runs once per ending with OCRW_* set and none of the daemon's own
    OCR_WATCHER_* settings; its exit code and output tail are recorded, and a hung one is ended."""
    script = tmp_path / "after.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, sys, time
        env = {{k: v for k, v in os.environ.items() if k.startswith(("OCRW_", "OCR_WATCHER_"))}}
        name = os.environ["OCRW_SOURCE_NAME"]
        open({str(tmp_path)!r} + "/ran-" + name + ".json", "w").write(json.dumps(env))
        print("told about", name)
        if name.startswith("hang"):
            time.sleep(60)
        sys.exit(3 if name.startswith("bad") else 0)
    """)
    )
    config = {
        **FAST,
        "profiles": {"default": {"command": {"argv": [sys.executable, str(script)], "timeout_seconds": 3}}},
    }
    with Daemon(tmp_path, **config) as daemon:
        names = _drop_text_pdfs(tmp_path, daemon.inbox, 1, "good") + _drop_text_pdfs(tmp_path, daemon.inbox, 1, "bad")
        names += _drop_text_pdfs(tmp_path, daemon.inbox, 1, "hang")
        jobs = {name: daemon.wait_for_job(name, {"completed"}) for name in names}

        def ended(name: str) -> bool:
            path = daemon.job_dir(jobs[name]) / "deliveries.json"
            return path.exists() and _log_of(daemon, jobs[name])[0]["state"] != "pending"

        daemon.wait_until(lambda: all(ended(n) for n in names), 60, "every command to end")
        _wait_metric(daemon, 1, "ocr_watcher_deliveries_total", kind="command", outcome="timeout")
    outcome = {name: _log_of(daemon, jobs[name])[0] for name in names}
    assert outcome["good000.pdf"]["state"] == "ok" and outcome["good000.pdf"]["exit_code"] == 0
    assert "told about good000.pdf" in outcome["good000.pdf"]["output_tail"]
    assert outcome["bad000.pdf"]["state"] == "failed" and outcome["bad000.pdf"]["exit_code"] == 3
    assert outcome["hang000.pdf"]["state"] == "timeout"
    env = json.loads((tmp_path / "ran-good000.pdf.json").read_text())
    job = jobs["good000.pdf"]
    assert env["OCRW_JOB_ID"] == job["job_id"] and env["OCRW_JOB_STATUS"] == "completed"
    assert Path(env["OCRW_RESULT_MD"]) == (daemon.job_dir(job) / "result.md").resolve()
    assert env["OCRW_DELIVERY_ID"] == policy.delivery_id(job["job_id"], 1)
    assert not [k for k in env if k.startswith("OCR_WATCHER_")]


def test_a_delivery_the_outbox_refused_to_record_is_recorded_once_it_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an outbox whose pending-deliveries folder cannot be made (a file stands in its place,
    as a full or broken outbox refuses writes), when a job ends, then its delivery is kept in memory
    and recorded, fsynced, on the first retry after the outbox takes writes again."""
    from ocr_watcher.deliveries import recorder as recorder_module
    from ocr_watcher.deliveries.recorder import Recorder
    from ocr_watcher.spool.store import JobStore

    monkeypatch.setattr(recorder_module, "UNWRITTEN_RETRY_SECONDS", 0.0)  # every tick, not every 5 s
    outbox = tmp_path / "outbox"
    (outbox / ".ocr-watcher").mkdir(parents=True)
    blocker = outbox / ".ocr-watcher" / "deliveries"
    blocker.write_text("not a folder")
    config = Config.model_validate(
        {
            "inbox": str(tmp_path / "inbox"),
            "outbox": str(outbox),
            "profiles": {"default": {"webhooks": [{"url": "http://hook.local/a", "secret": SECRET}]}},
        }
    )
    recorder = Recorder(JobStore(outbox, fsync=True), "w1", lambda: config)
    meta = _meta()
    assert recorder.record(meta, confirmed=False) == []  # refused: nothing to hand on yet
    assert recorder.retry_unwritten() == []  # still refused: kept for the next try
    blocker.unlink()
    (name, confirmed), *rest = recorder.retry_unwritten()
    assert not rest and confirmed is False
    written = json.loads((blocker / name).read_text())
    assert written["job_id"] == meta.job_id and written["delivery_id"] == policy.delivery_id(meta.job_id, 1)
    assert SECRET not in (blocker / name).read_text()
