"""metadata.json: the job model, its state machine and its JSON form."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from ocr_watcher.spool.model import (
    SCHEMA_VERSION,
    InvalidTransition,
    JobError,
    JobMeta,
    Source,
    Status,
    Worker,
    check_transition,
)

T0 = datetime(2026, 1, 7, 12, 0, 0, tzinfo=timezone.utc)


def make_meta(**fields) -> JobMeta:
    base = dict(
        job_id="a.pdf_20260107_120000_abcdef12",
        source=Source(name="a.pdf", inbox_path="sub/a.pdf", size=123, sha256="0" * 64),
        input_file="input.pdf",
        kind="pdf",
        created_at=T0,
        worker=Worker(id="w1", host="h", pid=42),
    )
    base.update(fields)
    return JobMeta(**base)


ALLOWED = {
    (Status.QUEUED, Status.PROCESSING),
    (Status.QUEUED, Status.FAILED),
    (Status.QUEUED, Status.CANCELLED),
    (Status.PROCESSING, Status.COMPLETED),
    (Status.PROCESSING, Status.FAILED),
    (Status.PROCESSING, Status.CANCELLED),
    (Status.FAILED, Status.QUEUED),
    (Status.CANCELLED, Status.QUEUED),
}
ALL_PAIRS = [(a, b) for a in Status for b in Status]


@pytest.mark.parametrize(("current", "new"), sorted(ALLOWED, key=str))
def test_allowed_transitions(current, new):
    # Given a job in `current`
    meta = make_meta(status=current)
    # When it moves to `new`
    meta.transition(new, now=T0)
    # Then it is there
    assert meta.status is new


@pytest.mark.parametrize(("current", "new"), [p for p in ALL_PAIRS if p not in ALLOWED], ids=str)
def test_forbidden_transitions_raise_and_change_nothing(current, new):
    # Given a job in `current`
    meta = make_meta(status=current)
    before = meta.to_json()
    # When asked to go to a status the state machine does not allow
    with pytest.raises(InvalidTransition) as excinfo:
        meta.transition(new, now=T0)
    # Then it refuses, says which, and the job is unchanged
    assert current.value in str(excinfo.value) and new.value in str(excinfo.value)
    assert meta.to_json() == before
    with pytest.raises(InvalidTransition):
        check_transition(current, new)


def test_completed_is_final():
    meta = make_meta(status=Status.COMPLETED)
    for new in Status:
        with pytest.raises(InvalidTransition):
            meta.transition(new)


def test_terminal_statuses():
    assert {s for s in Status if s.terminal} == {Status.COMPLETED, Status.FAILED, Status.CANCELLED}


def test_processing_sets_started_at_once():
    # Given a queued job
    meta = make_meta()
    # When it starts, fails, is retried and starts again
    meta.transition(Status.PROCESSING, now=T0)
    meta.transition(Status.FAILED, now=T0 + timedelta(seconds=5), error=JobError(type="x", message="y"))
    meta.transition(Status.QUEUED, now=T0 + timedelta(seconds=10))
    meta.transition(Status.PROCESSING, now=T0 + timedelta(seconds=20))
    # Then started_at is the first start
    assert meta.started_at == T0


@pytest.mark.parametrize("terminal", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_terminal_transition_sets_finished_at(terminal):
    meta = make_meta(status=Status.PROCESSING, started_at=T0)
    assert meta.finished_at is None
    meta.transition(terminal, now=T0 + timedelta(minutes=3))
    assert meta.finished_at == T0 + timedelta(minutes=3)


def test_retry_clears_finished_at_and_error_and_counts_an_attempt():
    # Given a failed job on its first attempt
    meta = make_meta(status=Status.PROCESSING, started_at=T0)
    meta.transition(Status.FAILED, now=T0 + timedelta(seconds=1), error=JobError(type="engine", message="boom"))
    assert meta.attempts == 1
    assert meta.error == JobError(type="engine", message="boom")
    # When it is retried
    meta.transition(Status.QUEUED, now=T0 + timedelta(seconds=2))
    # Then it is a fresh attempt with no error and no finish time
    assert meta.attempts == 2
    assert meta.error is None
    assert meta.finished_at is None
    # And a cancelled job retried counts one more
    meta.transition(Status.CANCELLED, now=T0 + timedelta(seconds=3))
    meta.transition(Status.QUEUED, now=T0 + timedelta(seconds=4))
    assert meta.attempts == 3


def test_error_is_kept_only_on_failed_or_cancelled():
    err = JobError(type="x", message="y")
    meta = make_meta()
    # An error passed with a non-retryable status is not recorded
    meta.transition(Status.PROCESSING, now=T0, error=err)
    assert meta.error is None
    meta.transition(Status.COMPLETED, now=T0, error=err)
    assert meta.error is None
    # And it is recorded for failed and cancelled
    failed = make_meta()
    failed.transition(Status.FAILED, now=T0, error=err)
    assert failed.error == err
    cancelled = make_meta()
    cancelled.transition(Status.CANCELLED, now=T0, error=JobError(type="cancelled", message="by user"))
    assert cancelled.error.type == "cancelled"


def test_transition_without_now_uses_the_current_utc_time():
    before = datetime.now(timezone.utc)
    meta = make_meta()
    meta.transition(Status.PROCESSING)
    assert meta.started_at is not None and meta.started_at.tzinfo is not None
    assert before <= meta.started_at <= datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("total", "done", "failed", "percent"),
    [
        (None, 0, 0, 0.0),
        (0, 0, 0, 0.0),
        (10, 0, 0, 0.0),
        (10, 3, 0, 30.0),
        (10, 3, 1, 40.0),
        (3, 1, 0, 33.3),
        (3, 2, 0, 66.7),
        (4, 4, 0, 100.0),
        (7, 6, 1, 100.0),
    ],
)
def test_set_progress_percent(total, done, failed, percent):
    meta = make_meta()
    meta.set_progress(total, done, failed)
    assert meta.progress.pages_total == total
    assert meta.progress.pages_done == done
    assert meta.progress.pages_failed == failed
    assert meta.progress.percent == percent


def test_json_round_trip_is_lossless():
    # Given a job with every kind of field set
    meta = make_meta(status=Status.PROCESSING, started_at=T0 + timedelta(seconds=1), warnings=["w"])
    meta.set_progress(5, 2, 1)
    meta.transition(Status.FAILED, now=T0 + timedelta(seconds=9), error=JobError(type="t", message="m"))
    # When written as JSON text and read back
    text = json.dumps(meta.to_json())
    again = JobMeta.model_validate(json.loads(text))
    # Then nothing is lost
    assert again == meta
    assert again.to_json() == meta.to_json()
    data = json.loads(text)
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["status"] == "failed"
    assert data["source"] == {
        "name": "a.pdf",
        "inbox_path": "sub/a.pdf",
        "size": 123,
        "sha256": "0" * 64,
        "origin": "inbox",
        "mtime_ns": None,  # recorded by a claim on the outbox's own filesystem (pipeline/input_watch.py)
    }
    assert data["progress"] == {"pages_total": 5, "pages_done": 2, "pages_failed": 1, "percent": 60.0}
    assert data["error"] == {"type": "t", "message": "m"}


def test_json_times_are_iso_8601_utc():
    data = make_meta().to_json()
    moment = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
    assert moment == T0 and moment.utcoffset() == timedelta(0)


def test_unknown_fields_from_a_newer_daemon_survive_a_rewrite():
    # Given metadata.json written by a newer daemon with fields this one does not know
    data = make_meta().to_json()
    data["future_field"] = {"nested": [1, 2, 3]}
    data["source"]["original_mtime"] = "2026-01-01T00:00:00Z"
    data["progress"]["eta_seconds"] = 12.5
    data["worker"]["gpu"] = "H200"
    # When this daemon loads it, changes its state and writes it again
    meta = JobMeta.model_validate(json.loads(json.dumps(data)))
    meta.transition(Status.PROCESSING, now=T0)
    out = json.loads(json.dumps(meta.to_json()))
    # Then the unknown fields are still there, unchanged
    assert out["future_field"] == {"nested": [1, 2, 3]}
    assert out["source"]["original_mtime"] == "2026-01-01T00:00:00Z"
    assert out["worker"]["gpu"] == "H200"
    assert out["progress"]["eta_seconds"] == 12.5
    assert out["status"] == "processing"


def test_a_whole_copy_is_equal_and_shares_nothing_with_the_record():
    # Given a failed job's record with fields of a newer daemon and nested values
    data = make_meta().to_json()
    data["future_field"] = {"nested": [1, 2, 3]}
    meta = JobMeta.model_validate(data)
    meta.transition(Status.PROCESSING, now=T0)
    meta.transition(Status.FAILED, now=T0, error=JobError(type="render_failed", message="page 2"))
    # When it is copied for another thread
    copy = meta.copy_whole()
    history = list(meta.history)
    # Then the copy says the same, down to the unknown fields
    assert copy == meta and copy.to_json() == meta.to_json()
    # And changing anything in the copy leaves the record as it was
    copy.history.append({"status": "queued", "at": "2026-01-01T00:00:00Z"})
    copy.model_extra["future_field"]["nested"].append(4)
    copy.error.message = "changed"
    copy.worker.pid = -1
    assert meta.history == history and meta.model_extra["future_field"] == {"nested": [1, 2, 3]}
    assert meta.error.message == "page 2" and meta.worker.pid != -1


def test_transitions_are_recorded_in_history():
    meta = make_meta()
    meta.transition(Status.PROCESSING, now=T0)
    meta.transition(Status.COMPLETED, now=T0 + timedelta(seconds=1))
    recorded = [(h["status"], datetime.fromisoformat(h["at"].replace("Z", "+00:00"))) for h in meta.history[-2:]]
    assert recorded == [("processing", T0), ("completed", T0 + timedelta(seconds=1))]


def test_invalid_status_in_json_is_refused():
    data = make_meta().to_json()
    data["status"] = "exploded"
    with pytest.raises(ValueError):
        JobMeta.model_validate(data)
