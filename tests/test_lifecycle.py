"""The job lifecycle's rules (ocr_watcher/daemon/lifecycle.py), table by table: plain facts in, one
decision out; no threads, folders or clock. The daemon-level tests show the same rules end to end."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ocr_watcher.daemon.lifecycle import (
    Begin,
    FailJob,
    FailPage,
    Found,
    Ignore,
    OpenAgain,
    OpenFacts,
    PageFailFacts,
    RetryAsked,
    RetryPage,
    RunLater,
    StartOver,
    WaitForStorage,
    WriteResult,
    decide_complete,
    decide_found,
    decide_opened,
    decide_page_failed,
    decide_retry,
)
from ocr_watcher.spool.model import JobError, Status

BAD = JobError(type="not_a_pdf", message="not a PDF")
OPENED = OpenFacts(
    changed=None,
    error=None,
    outbox_missing=None,
    pages=3,
    transient=None,
    open_failures=0,
    page_retries=2,
    status=Status.QUEUED,
    stopping=False,
)
NOT_OPENED = "the document could not be opened: the render process died"
DID_NOT_OPEN = replace(OPENED, pages=None, transient="the render process died")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (OPENED, Begin(3, to_processing=True, schedule=True)),
        (replace(OPENED, status=Status.PROCESSING), Begin(3, to_processing=False, schedule=True)),
        (replace(OPENED, stopping=True), Begin(3, to_processing=True, schedule=False)),
        # The input changed since the claim: start over, whatever else happened (it may be half-written).
        (replace(OPENED, changed=(10, 20)), StartOver((10, 20))),
        (replace(OPENED, changed=(10, 20), error=BAD), StartOver((10, 20))),
        (replace(DID_NOT_OPEN, changed=(10, 20)), StartOver((10, 20))),
        (replace(OPENED, pages=None, error=BAD), FailJob(BAD)),
        # A "bad" input while the outbox (where the input lives) is away is the outbox's fault.
        (replace(OPENED, error=BAD, outbox_missing="the outbox /o is gone"), WaitForStorage("the outbox /o is gone")),
        (DID_NOT_OPEN, OpenAgain(schedule=True)),
        (replace(DID_NOT_OPEN, open_failures=1), OpenAgain(schedule=True)),
        (replace(DID_NOT_OPEN, open_failures=1, stopping=True), OpenAgain(schedule=False)),
        (
            replace(DID_NOT_OPEN, open_failures=2),
            FailJob(
                JobError(type="render_failed", message="the document could not be opened: the render process died")
            ),
        ),
        (
            replace(DID_NOT_OPEN, page_retries=0),
            FailJob(
                JobError(type="render_failed", message="the document could not be opened: the render process died")
            ),
        ),
    ],
)
def test_a_job_that_opened_or_did_not(facts: OpenFacts, expected: object) -> None:
    assert decide_opened(facts) == expected


ENGINE_FAILED = PageFailFacts(
    stage="engine",
    error="engine timeout",
    permanent=False,
    tries=1,
    page_retries=2,
    job_cancelled=False,
    outbox_missing=None,
    os_error=None,
    stopping=False,
)
FULL = OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (ENGINE_FAILED, RetryPage(front=False)),
        (replace(ENGINE_FAILED, tries=2), RetryPage(front=False)),
        (replace(ENGINE_FAILED, tries=3), FailPage("engine timeout")),
        (replace(ENGINE_FAILED, page_retries=0), FailPage("engine timeout")),
        (replace(ENGINE_FAILED, permanent=True), FailPage("engine timeout")),
        (replace(ENGINE_FAILED, stopping=True), RetryPage(front=True)),
        (replace(ENGINE_FAILED, stage="render"), RetryPage(front=False)),
        # A job no longer ours: nothing to decide here, the control checks deal with it.
        (replace(ENGINE_FAILED, stage="cancelled", tries=9), RunLater()),
        # The outbox full, read-only or away is never the page's fault, nor a used-up retry.
        (replace(ENGINE_FAILED, stage="write", tries=9, os_error=FULL), WaitForStorage(FULL)),
        (replace(ENGINE_FAILED, stage="write", tries=9), WaitForStorage("engine timeout")),
        (replace(ENGINE_FAILED, stage="render", permanent=True, outbox_missing="gone"), WaitForStorage("gone")),
    ],
)
def test_a_page_that_failed(facts: PageFailFacts, expected: object) -> None:
    assert decide_page_failed(facts) == expected


def test_a_cancelled_job_is_ignored_before_anything_else() -> None:
    facts = replace(ENGINE_FAILED, job_cancelled=True, stage="write", os_error=FULL)
    assert isinstance(decide_page_failed(facts), Ignore)


@pytest.mark.parametrize(
    ("changed", "total", "failed", "rate", "expected"),
    [
        (None, 10, {}, 0.0, WriteResult()),
        (None, 10, {4: "boom"}, 0.1, WriteResult()),  # exactly at the limit: completed
        (
            None,
            10,
            {7: "late", 4: "boom"},
            0.1,
            FailJob(JobError(type="pages_failed", message="2 of 10 pages failed (limit 10%); page 4: boom")),
        ),
        (
            None,
            1,
            {1: "bad page"},
            0.0,
            FailJob(JobError(type="pages_failed", message="1 of 1 pages failed (limit 0%); page 1: bad page")),
        ),
        (None, 0, {}, 0.0, WriteResult()),  # an empty document
        ((5, 6), 10, {1: "x", 2: "y"}, 0.0, StartOver((5, 6))),  # the pages are of an older file
    ],
)
def test_a_job_whose_pages_are_all_done(
    changed: tuple[int, int] | None, total: int, failed: dict[int, str], rate: float, expected: object
) -> None:
    assert decide_complete(changed, total, failed, rate) == expected


@pytest.mark.parametrize(
    ("status", "ours", "fenced", "owner_gone", "expected"),
    [
        (Status.COMPLETED, False, False, True, Found.TERMINAL),
        (Status.FAILED, True, True, False, Found.TERMINAL),
        (Status.CANCELLED, False, False, False, Found.TERMINAL),
        (Status.QUEUED, True, False, False, Found.RESUME),
        (Status.PROCESSING, True, False, True, Found.RESUME),
        (Status.PROCESSING, True, True, False, Found.FINISH_TAKEOVER),
        (Status.PROCESSING, False, False, True, Found.TAKE_OVER),
        (Status.QUEUED, False, True, True, Found.TAKE_OVER),
        (Status.PROCESSING, False, False, False, Found.WATCH),
    ],
)
def test_a_job_found_in_the_outbox(status: Status, ours: bool, fenced: bool, owner_gone: bool, expected: Found) -> None:
    assert decide_found(status, ours, fenced, owner_gone) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.FAILED, RetryAsked.RETRY),
        (Status.CANCELLED, RetryAsked.RETRY),
        (Status.COMPLETED, RetryAsked.IGNORE),
        (Status.PROCESSING, RetryAsked.FORGET),
        (Status.QUEUED, RetryAsked.FORGET),
        (None, RetryAsked.FORGET),  # gone or unreadable
    ],
)
def test_a_retry_asked_for(status: Status | None, expected: RetryAsked) -> None:
    assert decide_retry(status) is expected
