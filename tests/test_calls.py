"""The main-loop call queue: a caller's answer is always the truth (real threads, no mocks)."""

from __future__ import annotations

import threading

import pytest

from ocr_watcher.calls import CallQueue, NotServing


def test_a_call_runs_on_the_thread_that_runs_pending_calls_and_returns_its_result() -> None:
    calls = CallQueue(wake=lambda: None)
    ran_on: list[str] = []
    answers: list[int] = []

    def caller() -> None:
        answers.append(calls.call(lambda: ran_on.append(threading.current_thread().name) or 42, timeout=10))

    thread = threading.Thread(target=caller, name="http")
    thread.start()
    while thread.is_alive():
        calls.run_pending()
        thread.join(0.01)
    assert answers == [42] and ran_on == [threading.current_thread().name]


def test_an_exception_reaches_the_caller() -> None:
    calls = CallQueue(wake=lambda: None)
    errors: list[BaseException] = []

    def fail() -> None:
        raise OSError(28, "No space left on device")

    def caller() -> None:
        try:
            calls.call(fail, timeout=10)
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    while thread.is_alive():
        calls.run_pending()
        thread.join(0.01)
    assert [e.errno for e in errors] == [28]


def test_a_call_whose_caller_gave_up_never_runs() -> None:
    """Given a main loop too busy to run calls, when the caller's wait ends, then it is told so and
    the call is dropped: a later run_pending must not make the job the caller was told failed."""
    calls = CallQueue(wake=lambda: None)
    ran: list[str] = []
    with pytest.raises(TimeoutError):
        calls.call(lambda: ran.append("claimed"), timeout=0.05)
    calls.run_pending()
    assert ran == []


def test_a_call_already_running_when_the_wait_ends_is_waited_for() -> None:
    """Given a call that starts before its caller's timeout and ends after it, then the caller gets
    its result (the job it made), not a timeout."""
    calls = CallQueue(wake=lambda: None)
    started, release = threading.Event(), threading.Event()
    answers: list[str] = []

    def slow_claim() -> str:
        started.set()
        release.wait(10)
        return "job-1"

    caller = threading.Thread(target=lambda: answers.append(calls.call(slow_claim, timeout=0.2)))
    caller.start()
    main = threading.Thread(target=calls.run_pending)
    while not started.is_set():
        if not main.is_alive():
            main = threading.Thread(target=calls.run_pending)
            main.start()
        started.wait(0.01)
    caller.join(0.5)  # well past the caller's timeout
    assert caller.is_alive(), "the caller gave up while its call was running"
    release.set()
    caller.join(10)
    main.join(10)
    assert answers == ["job-1"]


def test_after_the_stop_calls_are_refused_and_queued_ones_answered() -> None:
    woken: list[int] = []
    calls = CallQueue(wake=lambda: woken.append(1))
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            calls.call(lambda: "never", timeout=10)
        except NotServing as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    while not woken:  # the call is queued (it woke the loop)
        thread.join(0.01)
    calls.serving = False
    calls.run_pending()
    thread.join(10)
    assert len(errors) == 1
    with pytest.raises(NotServing):
        calls.call(lambda: "never", timeout=1)
