"""Functions other threads (the HTTP API) hand to the main loop, the one thread that changes job state.

A caller waits a bounded time. A call still queued when its caller gives up is cancelled and never
runs; one already running is waited for to the end. So the caller's answer ("done", "failed") is
always the truth: a client is never told an upload failed while its job is being made.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")


class NotServing(Exception):
    """The daemon is stopping (or stopped) and takes no more requests."""


class CallQueue:
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake  # ends the main loop's wait, so a call is run within one tick
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self.serving = True

    def call(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        """Any thread: run `fn` on the main thread and return its result (or raise its exception).
        Raises TimeoutError when it did not start within `timeout` seconds (it then never runs)."""
        if not self.serving:
            raise NotServing("the daemon is stopping")
        future: Future = Future()
        self._queue.put((fn, future))
        self._wake()
        try:
            return future.result(timeout)
        except FutureTimeout:
            if future.cancel():  # (the builtin TimeoutError: on 3.10 the futures' one is another class)
                raise TimeoutError(f"the main loop did not take the call within {timeout:g} s") from None
            return future.result()  # running now: its outcome must reach the caller

    def run_pending(self) -> None:
        """Main thread: run every call queued so far (answered NotServing once stopped serving)."""
        while True:
            try:
                fn, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up waiting
            if not self.serving:
                future.set_exception(NotServing("the daemon is stopping"))
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who reports it
                future.set_exception(exc)
