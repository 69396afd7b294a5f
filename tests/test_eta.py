"""Queue position and ETA: the pure estimate (played against the real page scheduler's order), the
page costs, the published file, and a real daemon's estimates in the job API and the CLI."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ocr_watcher.eta.estimate import Estimate, estimate_queue
from ocr_watcher.eta.published import QueueFiles, publish, queue_file, record
from ocr_watcher.eta.rates import PageCosts
from ocr_watcher.pipeline.scheduler import PageScheduler, PageTask, QueueEntry
from ocr_watcher.spool.layout import OutboxLayout

from .daemon import REPO, Daemon, drop, slow_tesseract
from .pdfgen import scanned_pdf
from .test_scheduler import job


def entry(job_id, pending, *, created=0.0, priority=0, served=0, in_flight=0, engine="text") -> QueueEntry:
    return QueueEntry(job_id, priority, created, served, engine, pending, in_flight)


@pytest.mark.parametrize(
    ("entries", "fast_lane", "costs", "expected"),
    [
        # one job alone: nothing ahead, its pages one after another
        ([entry("a", 10)], 10, {"text": 1.0}, {"a": Estimate(0, 0.0, 10.0)}),
        # the small-job lane: b's first page goes before a's later ones; then age order
        (
            [entry("a", 10, created=1), entry("b", 3, created=2)],
            1,
            {"text": 1.0},
            {"a": Estimate(0, 0.0, 11.0), "b": Estimate(1, 1.0, 13.0)},
        ),
        # priority first, whatever the age
        (
            [entry("old", 4, created=1), entry("urgent", 2, created=5, priority=10)],
            10,
            {"text": 0.5},
            {"old": Estimate(2, 1.0, 3.0), "urgent": Estimate(0, 0.0, 1.0)},
        ),
        # pages in flight are ahead of every page not handed out; a page is done a life after its
        # hand-out (here, with no life measured, Little's law: 2 pages in flight at 1 s each)
        (
            [entry("running", 0, in_flight=2), entry("next", 3, created=1)],
            10,
            {"text": 1.0},
            {"running": Estimate(0, 0.0, 2.0), "next": Estimate(2, 0.0, 4.0)},
        ),
        # not opened yet: its place is known, its pages (and so its finish) are not; for those
        # behind it, it is as long as the opened jobs are on average (here 4 pages)
        (
            [entry("a", 2, created=1, served=4), entry("new", None, created=2), entry("c", 2, created=3)],
            0,
            {"text": 1.0},
            {"a": Estimate(0, 0.0, 2.0), "new": Estimate(2, 2.0, None), "c": Estimate(6, 6.0, 8.0)},
        ),
        # nothing measured yet: positions only
        (
            [entry("a", 2), entry("b", 2, created=1)],
            10,
            {},
            {"a": Estimate(0, None, None), "b": Estimate(2, None, None)},
        ),
        # an engine not measured borrows the others' mean
        (
            [entry("a", 2, engine="tesseract"), entry("b", 1, created=1, engine="vllm")],
            10,
            {"tesseract": 2.0},
            {"a": Estimate(0, 0.0, 4.0), "b": Estimate(2, 4.0, 6.0)},
        ),
    ],
)
def test_estimates(entries, fast_lane, costs, expected) -> None:
    assert estimate_queue(entries, fast_lane, costs) == expected


def test_a_job_whose_last_pages_are_in_flight_ends_a_life_after_the_newest_was_handed_out() -> None:
    running = QueueEntry("running", 0, 0.0, 5, "text", 0, 2, flight_ages=(1.5, 0.5))
    after = entry("next", 3, created=1)
    got = estimate_queue([running, after], 10, {"text": 1.0}, {"text": 2.0})
    assert got == {"running": Estimate(0, 0.0, 1.5), "next": Estimate(2, 0.0, 4.0)}


@pytest.mark.parametrize("seed", range(20))
def test_the_estimate_plays_the_queue_in_the_schedulers_own_order(seed: int) -> None:
    """Random jobs in a real PageScheduler: the pages the estimate puts ahead of each job's first
    page, and its last, are where the scheduler hands them out."""
    rng = random.Random(seed)
    fast_lane = rng.choice([0, 1, 3, 10])
    scheduler = PageScheduler(fast_lane, render_slots=4)
    jobs = []
    for n in range(rng.randint(1, 8)):
        pages = rng.randint(1, 25)
        running = job(f"j{n}", pages, created=rng.choice([1.0, 2.0, 3.0]), priority=rng.choice([0, 0, 5]))
        running.served = rng.choice([0, 0, fast_lane])
        jobs.append(running)
        scheduler.add(running)
    estimates = estimate_queue(scheduler.queue_view(jobs), fast_lane, {"text": 1.0})
    handed = 0
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    while (task := scheduler.next_task(0)) is not None:
        assert isinstance(task, PageTask)
        first.setdefault(task.job.job_id, handed)
        handed += 1
        last[task.job.job_id] = handed
        scheduler.task_finished(task)
    for running in jobs:
        got = estimates[running.job_id]
        assert got.pages_ahead == first[running.job_id] and got.start_in == first[running.job_id]
        assert got.finish_in == last[running.job_id]


def test_a_page_costs_the_busy_time_of_the_latest_pages_over_their_count() -> None:
    costs = PageCosts(window=4)
    costs.page_done("tesseract", at=100.0, took=2.0)  # the first, alone: its own time
    assert costs.seconds_per_page() == {"tesseract": pytest.approx(2.0)}
    costs.page_done("tesseract", at=100.0, took=2.0)  # a second one ran beside it: half each
    assert costs.seconds_per_page() == {"tesseract": pytest.approx(1.0)}
    costs.page_done("tesseract", at=500.0, took=3.0)  # after a quiet spell, which counts for nothing
    assert costs.seconds_per_page() == {"tesseract": pytest.approx((2 + 3) / 3)}
    costs.page_done("vllm", at=10.0, took=0.5)
    for at in (501.0, 502.0, 503.0):  # under load, one every second: the window slides to them
        costs.page_done("tesseract", at=at, took=3.0)
    assert costs.seconds_per_page() == {"tesseract": pytest.approx(6 / 4), "vllm": pytest.approx(0.5)}


def test_a_published_estimate_is_read_as_times_and_a_stale_one_is_not(tmp_path: Path) -> None:
    layout = OutboxLayout(tmp_path)
    layout.internal.mkdir()  # as a daemon's start makes it
    estimates = {"a": Estimate(3, 2.0, 12.5), "b": Estimate(0, None, None)}
    publish(queue_file(layout, "w1"), record("w1", 1_000_000.0, estimates, {"text": 0.5}, inbox_waiting=4))
    files = QueueFiles(layout)
    shown = files.eta("w1", "a", now=1_000_001.0)
    assert shown is not None and shown["pages_ahead"] == 3
    assert shown["seconds_to_start"] == 1.0 and shown["seconds_to_finish"] == 11.5
    assert shown["estimated_finish"] == "1970-01-12T13:46:52.500000Z"
    assert files.eta("w1", "b", now=1_000_001.0)["estimated_finish"] is None
    assert files.eta("w1", "zzz", now=1_000_001.0) is None  # not held by that daemon
    assert files.eta("w2", "a", now=1_000_001.0) is None  # no such daemon
    assert files.eta("w1", "a", now=1_000_100.0) is None  # a minute and a half old: that daemon is gone


def test_a_running_daemon_shows_each_claimed_jobs_estimate_in_the_api_and_the_cli(tmp_path: Path) -> None:
    """Given a daemon with one OCR worker, no small-job lane and Tesseract slowed to half a second a
    page, when a 2-page job has been timed and then a 12-page and a 3-page job are dropped, then
    GET /jobs/{id} gives the later one the other's pages ahead and a finish after the earlier one's,
    `ocr-watcher status` and `jobs` show the estimates, and the estimate file is gone once the
    daemon stops."""
    wrapper = slow_tesseract(tmp_path / "bin", seconds=0.5)
    config = {
        "engine": "tesseract",
        "tesseract": {"command": str(wrapper)},
        "pipeline": {"workers": 1, "fast_lane_pages": 0},
    }
    sizes = {"warm": 2, "big": 12, "small": 3}
    pages = {name: [[f"{name} page {n}"] for n in range(count)] for name, count in sizes.items()}
    with Daemon(tmp_path, **config) as daemon:
        drop(daemon.inbox, scanned_pdf(tmp_path / "warm.pdf", pages["warm"]))
        daemon.wait_for_job("warm.pdf", {"completed"})
        drop(daemon.inbox, scanned_pdf(tmp_path / "big.pdf", pages["big"]))
        big = daemon.wait_for_job("big.pdf", {"processing"})
        drop(daemon.inbox, scanned_pdf(tmp_path / "small.pdf", pages["small"]))
        small = daemon.wait_for_job("small.pdf", {"queued", "processing"})

        def eta_of(job: dict) -> dict | None:
            url = f"{daemon.http_url}/jobs/{job['job_id']}"
            return json.loads(urllib.request.urlopen(url, timeout=10).read())["eta"]

        def both_timed() -> bool:
            shown = [eta_of(big), eta_of(small)]
            return all(e is not None and e["seconds_to_finish"] is not None for e in shown)

        daemon.wait_until(both_timed, 30, "both jobs have a timed estimate")
        big_eta, small_eta = eta_of(big), eta_of(small)
        # Without the small-job lane, jobs go by age: small's pages wait for big's.
        assert small_eta["pages_ahead"] >= 1 and big_eta["pages_ahead"] == 0
        assert small_eta["estimated_finish"] > big_eta["estimated_finish"]
        assert 0 < big_eta["seconds_to_finish"] < small_eta["seconds_to_finish"]

        def cli(*args: str) -> str:
            command = [sys.executable, "-m", "ocr_watcher.cli", *args, "--config", str(daemon.config_path)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
            assert done.returncode == 0, done.stderr
            return done.stdout

        status = cli("status", small["job_id"])
        assert re.search(r"queue +\d+ pages of other jobs ahead, next page in \d+ s, done in about \d+ (s|min)", status)
        listing = cli("jobs")
        header, *rows = listing.splitlines()
        (small_row,) = [row for row in rows if row.startswith(small["job_id"])]
        assert re.match(r"in \d+ (s|min)", small_row[header.index("ETA") :]), listing
        daemon.wait_for_job("small.pdf", {"completed"}, timeout=60)
        published = daemon.outbox / ".ocr-watcher" / "queue" / "d1.json"
        assert published.exists()
    assert not published.exists()
