"""The result files besides result.md: result.txt where a profile asks for it (`outputs`), and DONE,
written last in every completed job's folder, listing the result files with their sizes and sha256.
First the plain-text rule as a table, then real daemons: what the files hold, which profile gets
which, and a reader polling the outbox that never sees a DONE before the files it lists are there as
listed, across kill -9 at random moments of a batch, a retried job and retention's deletions."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time
from pathlib import Path

import pytest
import requests

from ocr_watcher.engines.plain_text import markdown_to_text, pages_to_text

from .daemon import Daemon, OutboxReader, drop
from .pdfgen import text_pdf


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("# Results\n\nRevenue *grew* in `Q3`\nand costs fell.\n", "Results\n\nRevenue grew in Q3 and costs fell.\n"),
        ("- archives\n- mail\n\n1. first\n2. second\n", "archives\n\nmail\n\nfirst\n\nsecond\n"),
        ("| Region | Cost |\n| --- | --- |\n| North | 310 |\n", "Region\tCost\nNorth\t310\n"),
        (
            "<table><tr><td colspan=2>Total &amp; net</td></tr><tr><td>1</td><td>2</td></tr></table>\n",
            "Total & net\n1\t2\n",
        ),
        ("![A bar chart of revenue](images/p1-1.png)\n", "A bar chart of revenue\n"),
        ("\\# not a heading, 3\\. not a list\n", "# not a heading, 3. not a list\n"),
        ("<!-- page 1 of 2 -->\n\n", ""),
    ],
)
def test_markdown_becomes_plain_text(markdown: str, text: str) -> None:
    assert markdown_to_text(markdown) == text


def test_pages_are_separated_by_form_feeds_and_a_failed_page_stays_empty() -> None:
    assert pages_to_text(["One", None, "Three"]) == "One\n\f\fThree\n"


FORMATS = {"result_metadata.json": None, "result.txt": "txt", "result.md": "markdown"}


def _listed(job_dir: Path) -> dict[str, tuple[int, str]]:
    done = json.loads((job_dir / "DONE").read_text())
    return {entry["name"]: (entry["bytes"], entry["sha256"]) for entry in done["files"]}


def _on_disk(job_dir: Path, name: str) -> tuple[int, str]:
    data = (job_dir / name).read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def test_profiles_choose_their_result_files_and_done_lists_them(tmp_path: Path) -> None:
    """Given the default profile with outputs [markdown, txt], a named profile that sets none and one
    that sets [markdown], when a two-page document goes through each, then the first two jobs have
    result.txt (the pages' text, a form feed between them) and the third has none; each job's DONE
    lists exactly its result files as they are; GET /jobs/{id} lists them too, and
    /download?format=txt serves result.txt where there is one and says why not where there is none,
    and so does `ocr-watcher download`."""
    pages = [["Revenue grew in every region."], ["Costs stayed level."]]
    profiles = {"default": {"outputs": ["markdown", "txt"]}, "inherits": {}, "plain": {"outputs": ["markdown"]}}
    with Daemon(tmp_path, engine="text", profiles=profiles) as daemon:
        for folder in ("", "inherits/", "plain/"):
            drop(daemon.inbox, text_pdf(tmp_path / "report.pdf", pages), f"{folder}report.pdf")
        daemon.wait_until(lambda: len([j for j in daemon.jobs() if j["status"] == "completed"]) == 3, 60, "3 jobs")
        jobs = {job["profile"]: job for job in daemon.jobs()}
        base = daemon.http_url
        views = {
            profile: requests.get(f"{base}/jobs/{job['job_id']}", timeout=10).json() for profile, job in jobs.items()
        }
        text = requests.get(f"{base}/jobs/{jobs['default']['job_id']}/download", params={"format": "txt"}, timeout=10)
        none = requests.get(f"{base}/jobs/{jobs['plain']['job_id']}/download", params={"format": "txt"}, timeout=10)
        unknown = requests.get(f"{base}/jobs/{jobs['plain']['job_id']}/download", params={"format": "doc"}, timeout=10)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.text == "Revenue grew in every region.\n\fCosts stayed level.\n"
    assert 'filename="report.txt"' in text.headers["content-disposition"]
    assert none.status_code == 404 and "outputs do not include txt" in none.json()["detail"]
    assert unknown.status_code == 422
    # And the command line copies the same file out, or says why it cannot.
    copied = daemon.cli("download", jobs["default"]["job_id"], "--format", "txt", "-o", str(tmp_path))
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "report.txt").read_bytes() == (daemon.job_dir(jobs["default"]) / "result.txt").read_bytes()
    refused = daemon.cli("download", jobs["plain"]["job_id"], "--format", "txt")
    assert refused.returncode == 2 and "outputs do not include txt" in refused.stderr
    assert set(jobs) == {"default", "inherits", "plain"}
    for profile in ("default", "inherits"):
        job_dir = daemon.job_dir(jobs[profile])
        text = (job_dir / "result.txt").read_text()
        assert text == "Revenue grew in every region.\n\fCosts stayed level.\n", profile
        listed = _listed(job_dir)
        assert list(listed) == ["result_metadata.json", "result.txt", "result.md"]
        assert listed == {name: _on_disk(job_dir, name) for name in listed}
        files = {f["name"]: (f["bytes"], f["sha256"], f["format"]) for f in views[profile]["files"]}
        assert files == {name: (*listed[name], fmt) for name, fmt in FORMATS.items()}
    plain = daemon.job_dir(jobs["plain"])
    assert not (plain / "result.txt").exists()
    assert list(_listed(plain)) == ["result_metadata.json", "result.md"]
    assert _listed(plain) == {name: _on_disk(plain, name) for name in _listed(plain)}


def test_a_reader_never_sees_done_before_its_files(tmp_path: Path) -> None:
    """Given a reader polling every job folder, when 40 documents go through a daemon that is killed
    with SIGKILL at random moments of the batch (claims, OCR, result writing) and started again,
    one failed job is retried and retention deletes the oldest jobs, then the reader never saw a DONE
    that listed a file not there with its size and digest, nor a completed job without DONE, and
    every completed job left has a DONE that matches its files."""
    rng = random.Random(20261204)
    config = {
        "engine": "text",
        "profiles": {"default": {"outputs": ["markdown", "txt"]}},
        "intake": {"max_queued_jobs": 8},
    }
    daemon = Daemon(tmp_path, **config)
    sources = []
    (tmp_path / "src").mkdir()
    for n in range(40):
        sources.append(text_pdf(tmp_path / "src" / f"doc{n:02d}.pdf", [[f"Document {n} page {p}"] for p in range(3)]))
    reader = OutboxReader(daemon.outbox, interval=0.005)
    reader.start()
    try:
        waiting = list(sources)
        for _ in range(5):
            daemon.start()
            for _ in range(8):
                drop(daemon.inbox, waiting.pop())
            time.sleep(rng.uniform(0.2, 1.2))
            daemon.kill(signal.SIGKILL)
        daemon.start()
        broken = tmp_path / "src" / "broken.pdf"
        broken.write_bytes(b"%PDF-1.7\nthis is not a PDF after all\n")  # fails, and again when retried
        drop(daemon.inbox, broken)
        bad = daemon.wait_for_job("broken.pdf", {"failed"})
        (daemon.job_dir(bad) / "RETRY").write_text("")
        daemon.wait_until(lambda: (daemon.job_for("broken.pdf") or {}).get("attempts") == 2, 30, "the retry")
        daemon.wait_until(lambda: sum(j["status"] == "completed" for j in daemon.jobs()) == 40, 120, "40 jobs")
    finally:
        daemon.stop()
    with Daemon(tmp_path, **config, retention={"max_job_count": 20}) as daemon:  # deletes the oldest
        daemon.wait_until(lambda: len(daemon.jobs()) <= 20, 60, "retention")
    reader.stop()
    assert reader.problems == []
    assert reader.done_checked >= 20
    for job in daemon.jobs():
        if job["status"] == "completed":
            job_dir = daemon.job_dir(job)
            assert _listed(job_dir) == {name: _on_disk(job_dir, name) for name in _listed(job_dir)}
