"""The page scheduler: one queue for all jobs' pages, in a fair and useful order."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

import pytest

from ocr_watcher.pipeline.scheduler import OpenTask, PageScheduler, PageTask, RunningJob

FAST = 10


def job(job_id: str, pages: int | None, *, created: float = 0.0, priority: int = 0, served: int = 0) -> RunningJob:
    j = RunningJob(
        job_id=job_id,
        input_path=Path(f"/nonexistent/{job_id}/input.pdf"),
        kind="pdf",
        priority=priority,
        created_at=created,
        profile="default",
        engine="text",
        pages_total=pages,
        served=served,
    )
    if pages is not None:
        j.pending = deque(range(1, pages + 1))
    return j


def take(sched: PageScheduler) -> PageTask | OpenTask | None:
    return sched.next_task(timeout=0)


def take_pages(sched: PageScheduler, n: int) -> list[tuple[str, int]]:
    out = []
    for _ in range(n):
        task = take(sched)
        assert isinstance(task, PageTask), task
        out.append((task.job.job_id, task.page))
    return out


def waiting_for_a_task(sched: PageScheduler) -> tuple[list[object], threading.Event, threading.Thread]:
    """A render thread blocked in next_task: (what it got, set once it got it, the thread)."""
    got: list[object] = []
    finished = threading.Event()

    def worker() -> None:
        got.append(sched.next_task(timeout=60))
        finished.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    return got, finished, thread


def test_empty_queue_returns_none():
    assert take(PageScheduler(FAST)) is None


def test_pages_of_one_job_in_order():
    sched = PageScheduler(FAST)
    sched.add(job("a", 3))
    assert take_pages(sched, 3) == [("a", 1), ("a", 2), ("a", 3)]
    assert take(sched) is None


def test_priority_comes_first():
    # Given an old low-priority job and a new high-priority one
    sched = PageScheduler(FAST)
    sched.add(job("old", 3, created=1.0, priority=0))
    sched.add(job("urgent", 2, created=99.0, priority=5))
    # Then all of the urgent job's pages go first, even past the old job's fast lane
    assert take_pages(sched, 5) == [("urgent", 1), ("urgent", 2), ("old", 1), ("old", 2), ("old", 3)]


def test_fifo_by_age_among_established_jobs():
    # Given two big jobs past their fast lanes, added newest first
    sched = PageScheduler(FAST)
    sched.add(job("newer", 3, created=20.0, served=FAST))
    sched.add(job("older", 3, created=10.0, served=FAST))
    # Then the older one is finished first (one after another, not interleaved)
    assert take_pages(sched, 6) == [("older", 1), ("older", 2), ("older", 3), ("newer", 1), ("newer", 2), ("newer", 3)]


def test_same_age_is_ordered_by_job_id():
    sched = PageScheduler(FAST)
    sched.add(job("b", 1, created=5.0))
    sched.add(job("a", 1, created=5.0))
    assert take_pages(sched, 2) == [("a", 1), ("b", 1)]


def test_fast_lane_small_new_job_gets_the_very_next_page():
    # Given a 300-page job that has already been served more than fast_lane_pages pages
    sched = PageScheduler(FAST)
    big = job("big", 300, created=1.0)
    sched.add(big)
    served = take_pages(sched, FAST + 5)
    assert served == [("big", p) for p in range(1, FAST + 6)]
    # When a new 1-page job is dropped
    sched.add(job("small", 1, created=2.0))
    # Then its page is the very next one handed out, and the big job continues after it
    assert take_pages(sched, 2) == [("small", 1), ("big", FAST + 6)]


def test_fast_lane_also_for_a_job_whose_page_count_is_not_known_yet():
    sched = PageScheduler(FAST)
    big = job("big", 300, created=1.0)
    sched.add(big)
    take_pages(sched, FAST + 1)
    # A new job still to be opened is opened next
    small = job("small", None, created=2.0)
    sched.add(small)
    opened = take(sched)
    assert isinstance(opened, OpenTask) and opened.job is small
    # And once opened its pages come before the big job's
    small.pages_total = 2
    small.pending.extend([1, 2])
    small.opening = False
    sched.add(small)
    assert take_pages(sched, 3) == [("small", 1), ("small", 2), ("big", FAST + 2)]


def test_first_pages_of_an_older_job_go_before_a_newer_job_in_its_fast_lane():
    # The fast lane is "first N pages ahead of later pages", not "newest first"
    sched = PageScheduler(FAST)
    sched.add(job("older", 20, created=1.0))
    take_pages(sched, 3)
    sched.add(job("newer", 1, created=2.0))
    assert take_pages(sched, 1) == [("older", 4)]


def test_fast_lane_zero_is_plain_fifo():
    sched = PageScheduler(0)
    sched.add(job("big", 5, created=1.0))
    take_pages(sched, 1)
    sched.add(job("small", 1, created=2.0))
    assert take_pages(sched, 5) == [("big", 2), ("big", 3), ("big", 4), ("big", 5), ("small", 1)]


def test_open_task_first_and_handed_out_once():
    # Given a job whose page count is unknown
    sched = PageScheduler(FAST)
    j = job("a", None)
    sched.add(j)
    # Then it is handed out as an open task, once
    task = take(sched)
    assert isinstance(task, OpenTask) and task.job is j
    assert j.opening
    assert take(sched) is None
    # Even if it is added again while it is being opened
    sched.add(j)
    assert take(sched) is None
    assert sched.depth() == (0, 0)


def test_open_failed_can_be_added_again():
    sched = PageScheduler(FAST)
    j = job("a", None)
    sched.add(j)
    assert isinstance(take(sched), OpenTask)
    j.opening = False  # the render process died; try opening again
    sched.add(j)
    assert isinstance(take(sched), OpenTask)


def test_adding_a_job_twice_does_not_duplicate_pages():
    sched = PageScheduler(FAST)
    j = job("a", 2)
    sched.add(j)
    sched.add(j)
    assert take_pages(sched, 2) == [("a", 1), ("a", 2)]
    assert take(sched) is None


def test_a_job_retried_while_its_cancelled_run_is_still_queued_gets_its_pages():
    """A cancel lands while a page of the job is in flight, so its run keeps its heap entry; the
    retry makes a new RunningJob of the same job id, which must be queued in its own right (it
    was taken for the cancelled one and never handed out: the job stayed queued for ever)."""
    sched = PageScheduler(FAST)
    first = job("a", 20)
    sched.add(first)
    assert take_pages(sched, 2) == [("a", 1), ("a", 2)]  # the job is back in the heap with 18 to go
    first.cancelled = True
    again = job("a", 20)
    again.pending = deque(range(3, 21))  # pages 1 and 2 were kept
    sched.add(again)
    tasks = take_pages(sched, 18)
    assert tasks == [("a", page) for page in range(3, 21)]
    assert take(sched) is None


def test_job_with_no_pending_pages_is_not_queued():
    sched = PageScheduler(FAST)
    sched.add(job("done", 0))
    assert sched.depth() == (0, 0)
    assert take(sched) is None


def test_requeue_puts_the_page_first_in_its_job_and_counts_attempts():
    # Given a job whose page 1 was handed out
    sched = PageScheduler(FAST)
    j = job("a", 3)
    sched.add(j)
    first = take(sched)
    assert (first.page, first.try_number) == (1, 1)
    assert take_pages(sched, 1) == [("a", 2)]
    # When page 1 failed and is requeued
    j.in_flight.discard(1)
    sched.requeue(j, 1)
    # Then it is next, as attempt 2, before page 3
    again = take(sched)
    assert (again.page, again.try_number) == (1, 2)
    third = take(sched)
    assert (third.page, third.try_number) == (3, 1)
    # And a further retry is attempt 3
    sched.requeue(j, 1)
    assert take(sched).try_number == 3
    assert j.page_tries == {1: 3, 2: 1, 3: 1}


def test_requeue_of_a_job_with_nothing_else_pending_puts_it_back_in_the_queue():
    sched = PageScheduler(FAST)
    j = job("a", 1)
    sched.add(j)
    take_pages(sched, 1)
    assert take(sched) is None
    sched.requeue(j, 1)
    assert sched.depth() == (1, 1)
    assert take_pages(sched, 1) == [("a", 1)]


def test_handed_out_pages_are_in_flight_and_served():
    sched = PageScheduler(FAST)
    j = job("a", 3)
    sched.add(j)
    task = take(sched)
    assert j.in_flight == {1}
    assert j.served == 1
    assert task.order[0] == 0  # the job's key when handed out: priority first


def test_cancelled_jobs_are_skipped():
    # Given two queued jobs
    sched = PageScheduler(FAST)
    a, b = job("a", 3, created=1.0), job("b", 2, created=2.0)
    sched.add(a)
    sched.add(b)
    # When the first is cancelled
    a.cancelled = True
    # Then only the other's pages come out and the depth ignores the cancelled one
    assert sched.depth() == (1, 2)
    assert take_pages(sched, 2) == [("b", 1), ("b", 2)]
    assert take(sched) is None
    # And a cancelled job added again is not queued
    sched.add(a)
    sched.requeue(a, 1)
    assert take(sched) is None


def test_depth_counts_waiting_jobs_and_pages():
    sched = PageScheduler(FAST)
    assert sched.depth() == (0, 0)
    sched.add(job("a", 5))
    sched.add(job("b", 2))
    sched.add(job("c", None))
    assert sched.depth() == (3, 7)
    take_pages(sched, 2)
    assert sched.depth() == (3, 5)


def test_blocking_next_task_is_woken_by_add_from_another_thread():
    # Given a worker thread blocked in next_task on an empty queue
    sched = PageScheduler(FAST)
    got: list[object] = []
    started, finished = threading.Event(), threading.Event()

    def worker() -> None:
        started.set()
        got.append(sched.next_task(timeout=60))
        finished.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert started.wait(30)
    # wait until it really sleeps on the condition (it has released the lock and registered as a waiter)
    for _ in range(100_000):
        with sched._cond:
            if getattr(sched._cond, "_waiters", [None]):
                break
    assert not finished.is_set()
    # When another thread adds a job
    j = job("a", 1)
    sched.add(j)
    # Then the worker wakes up with its page
    assert finished.wait(30), "next_task was not woken by add()"
    thread.join(5)
    assert len(got) == 1 and isinstance(got[0], PageTask) and got[0].job is j and got[0].page == 1


def test_close_wakes_a_blocked_next_task_with_none():
    sched = PageScheduler(FAST)
    got, finished, thread = waiting_for_a_task(sched)
    sched.close()
    assert finished.wait(30)
    assert got == [None]


def test_many_threads_take_each_page_exactly_once():
    sched = PageScheduler(2)
    jobs = [job(f"j{i}", 25, created=float(i)) for i in range(8)]
    for j in jobs:
        sched.add(j)
    taken: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        while (task := sched.next_task(timeout=0)) is not None:
            with lock:
                taken.append((task.job.job_id, task.page))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == sorted((f"j{i}", p) for i in range(8) for p in range(1, 26))


@pytest.mark.parametrize("served", [FAST - 1, FAST])
def test_fast_lane_boundary(served):
    # A job that has been served fewer than fast_lane_pages pages is still in its fast lane
    sched = PageScheduler(FAST)
    sched.add(job("old", 5, created=1.0, served=served))
    sched.add(job("new", 1, created=2.0))
    first = take_pages(sched, 1)
    assert first == ([("old", 1)] if served < FAST else [("new", 1)])


# -- suspect jobs: a render of theirs timed out or crashed ------------------------------------------


def finish(sched: PageScheduler, task: PageTask | OpenTask | None) -> None:
    assert task is not None
    task.job.in_flight.discard(getattr(task, "page", 0))
    sched.task_finished(task)


def test_a_suspect_job_holds_at_most_half_the_render_slots_and_healthy_pages_go_meanwhile():
    # Given 2 render slots, an older job whose render hung (suspect, 10 pages) and a newer healthy job
    sched = PageScheduler(FAST, render_slots=2)
    bad, good = job("bad", 10, created=1.0), job("good", 3, created=2.0)
    sched.mark_suspect(bad)
    sched.add(bad)
    sched.add(good)
    # Then the suspect job, first by age, gets one slot and every healthy page goes before its second
    hung = take(sched)
    assert (hung.job.job_id, hung.page) == ("bad", 1)
    assert take_pages(sched, 3) == [("good", 1), ("good", 2), ("good", 3)]
    assert take(sched) is None, "the suspect job's one slot is taken: nothing else for it"
    # When its page ends (timed out, rendered), the slot is free for its next page
    finish(sched, hung)
    assert take_pages(sched, 1) == [("bad", 2)]
    assert take(sched) is None


def test_with_one_render_slot_a_suspect_job_runs_only_when_no_healthy_job_has_work():
    # Given one render slot, an urgent suspect job and a healthy job of low priority
    sched = PageScheduler(FAST, render_slots=1)
    bad, good = job("bad", 3, created=1.0, priority=10), job("good", 2, created=2.0)
    sched.mark_suspect(bad)
    sched.add(bad)
    sched.add(good)
    # Then the healthy pages go first, one at a time
    for page in (1, 2):
        task = take(sched)
        assert (task.job.job_id, task.page) == ("good", page)
        finish(sched, task)
    # And the suspect job runs once nothing else waits, one page at a time
    task = take(sched)
    assert (task.job.job_id, task.page) == ("bad", 1)
    assert take(sched) is None
    finish(sched, task)
    assert take_pages(sched, 1) == [("bad", 2)]


def test_the_suspect_share_is_half_the_slots_across_all_suspect_jobs():
    sched = PageScheduler(FAST, render_slots=5)  # share: 2
    a, b, good = job("a", 5, created=1.0), job("b", 5, created=2.0), job("good", 10, created=3.0)
    for j in (a, b):
        sched.mark_suspect(j)
    for j in (a, b, good):
        sched.add(j)
    assert take_pages(sched, 5) == [("a", 1), ("a", 2), ("good", 1), ("good", 2), ("good", 3)]


def test_a_suspect_job_keeps_its_priority_within_its_share():
    # An urgent suspect job still goes before normal work, as long as it is under its share
    sched = PageScheduler(FAST, render_slots=4)
    urgent, normal = job("urgent", 5, created=2.0, priority=5), job("normal", 5, created=1.0)
    sched.mark_suspect(urgent)
    sched.add(normal)
    sched.add(urgent)
    first = take_pages(sched, 4)
    assert first == [("urgent", 1), ("urgent", 2), ("normal", 1), ("normal", 2)]


def test_a_job_turning_suspect_counts_its_pages_already_rendering():
    # Given 4 slots and a healthy job with 3 pages handed out
    sched = PageScheduler(FAST, render_slots=4)
    bad, good = job("bad", 10, created=1.0), job("good", 3, created=2.0)
    sched.add(bad)
    running = [take(sched) for _ in range(3)]
    assert [t.page for t in running] == [1, 2, 3]
    # When one of them times out: the job is suspect and its two others still hold slots
    assert sched.mark_suspect(bad)
    assert not sched.mark_suspect(bad), "already suspect"
    finish(sched, running[0])
    sched.add(good)
    # Then it gets no further slot until one more of them ends (share: 2 of 4)
    assert take_pages(sched, 3) == [("good", 1), ("good", 2), ("good", 3)]
    assert take(sched) is None
    finish(sched, running[1])
    assert take_pages(sched, 1) == [("bad", 4)]


def test_task_finished_is_idempotent_and_ignores_unknown_tasks():
    sched = PageScheduler(FAST, render_slots=2)
    bad = job("bad", 3)
    sched.mark_suspect(bad)
    sched.add(bad)
    task = take(sched)
    finish(sched, task)
    sched.task_finished(task)  # twice: must not free a second slot
    other = take(sched)
    assert other.page == 2
    assert take(sched) is None
    sched.task_finished(PageTask(bad, 99, 1, ()))  # never handed out
    assert take(sched) is None


def test_open_tasks_of_suspect_jobs_count_against_their_share():
    # Given a job whose opening timed out (suspect) and a suspect job with pages
    sched = PageScheduler(FAST, render_slots=2)
    unopened, bad = job("unopened", None, created=1.0), job("bad", 3, created=2.0)
    for j in (unopened, bad):
        sched.mark_suspect(j)
        sched.add(j)
    opening = take(sched)
    assert isinstance(opening, OpenTask) and opening.job is unopened
    assert take(sched) is None
    unopened.opening = False
    sched.task_finished(opening)
    sched.add(unopened)  # it failed to open again: back in the queue, first by age
    assert isinstance(take(sched), OpenTask)


def test_a_suspect_jobs_retry_goes_after_its_other_pages():
    # Given a suspect job whose page 1 was handed out and timed out
    sched = PageScheduler(FAST, render_slots=2)
    j = job("a", 3)
    sched.add(j)
    first = take(sched)
    sched.mark_suspect(j)
    finish(sched, first)
    # When the page is retried
    sched.requeue(j, 1)
    # Then it comes after the job's pages 2 and 3, as attempt 2
    got = []
    for _ in range(3):
        task = take(sched)
        got.append((task.page, task.try_number))
        finish(sched, task)
    assert got == [(2, 1), (3, 1), (1, 2)]


def test_a_waiting_render_thread_is_woken_when_a_suspect_slot_frees():
    # Given a suspect job at its share and a render thread waiting for work
    sched = PageScheduler(FAST, render_slots=2)
    bad = job("bad", 2)
    sched.mark_suspect(bad)
    sched.add(bad)
    hung = take(sched)
    got, finished, thread = waiting_for_a_task(sched)
    assert not finished.wait(0.2), "no task may be handed out while the share is taken"
    # When the hung page ends
    finish(sched, hung)
    # Then the waiting thread gets the next page
    assert finished.wait(30), "task_finished did not wake the waiting thread"
    thread.join(5)
    assert isinstance(got[0], PageTask) and got[0].page == 2


def test_render_threads_keep_serving_healthy_jobs_while_suspect_pages_hang():
    """Real threads as render slots: the suspect job's pages hang until released; with 2 slots every
    page of a healthy job is still rendered, and no more than one suspect page hangs at a time."""
    sched = PageScheduler(FAST, render_slots=2)
    bad, good = job("bad", 6, created=1.0), job("good", 5, created=2.0)
    sched.mark_suspect(bad)
    sched.add(bad)
    sched.add(good)
    release = threading.Event()
    good_done = threading.Event()
    lock = threading.Lock()
    rendered: list[tuple[str, int]] = []
    hanging = [0, 0]  # now, most at once

    def render_thread() -> None:
        while len(rendered) < 11:
            task = sched.next_task(timeout=0.1)
            if task is None:
                continue
            if task.job is bad:
                with lock:
                    hanging[0] += 1
                    hanging[1] = max(hanging[1], hanging[0])
                release.wait(60)
                with lock:
                    hanging[0] -= 1
            with lock:
                rendered.append((task.job.job_id, task.page))
                if sum(1 for r in rendered if r[0] == "good") == 5:
                    good_done.set()
            finish(sched, task)

    threads = [threading.Thread(target=render_thread, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert good_done.wait(30), f"healthy pages were held up behind hanging ones: {rendered}"
        assert not any(r[0] == "bad" for r in rendered), "the hanging page is still hanging"
    finally:
        release.set()
        for t in threads:
            t.join(30)
    assert hanging[1] == 1
    assert sorted(rendered) == sorted([("bad", p) for p in range(1, 7)] + [("good", p) for p in range(1, 6)])


def test_a_job_resumed_after_its_opening_runs_only_the_pages_not_done_and_a_stop_keeps_a_retry_first() -> None:
    """Given a job reopened with pages 2 and 5 done before (and a stale page 9 past its end), when the
    main thread reports the opening, then only pages 1, 3, 4 are handed out, in order; a page that
    comes back and is held first at a stop is the first pending one, and its failed try, forgiven,
    does not count."""
    sched = PageScheduler(FAST)
    resumed = job("resumed", None)
    resumed.done = {2, 5, 9}
    sched.add(resumed)
    opening = take(sched)
    assert isinstance(opening, OpenTask) and resumed.opening
    sched.opened(resumed, 5)
    assert not resumed.opening and resumed.done == {2, 5} and list(resumed.pending) == [1, 3, 4]
    sched.add(resumed)
    first = take(sched)
    assert isinstance(first, PageTask) and (first.page, first.try_number) == (1, 1) and resumed.in_flight == {1}
    assert not sched.finished(resumed)
    sched.page_ended(resumed, 1)
    sched.forgive_try(resumed, 1)
    sched.hold_first(resumed, 1)
    assert resumed.in_flight == set() and list(resumed.pending) == [1, 3, 4] and resumed.page_tries[1] == 0
    assert [task.page for task in (take(sched), take(sched), take(sched)) if isinstance(task, PageTask)] == [1, 3, 4]
    for page in (1, 3, 4):
        sched.page_ended(resumed, page)
        resumed.done.add(page)
    assert sched.finished(resumed)


def test_an_opening_that_did_not_finish_leaves_the_page_count_unknown() -> None:
    sched = PageScheduler(FAST)
    failed_open = job("failed-open", None)
    sched.add(failed_open)
    assert isinstance(take(sched), OpenTask)
    sched.opened(failed_open, None)
    assert failed_open.pages_total is None and not failed_open.opening and not sched.finished(failed_open)
    sched.add(failed_open)
    assert isinstance(take(sched), OpenTask)  # opened again
