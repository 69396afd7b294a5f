"""Idempotency-Key on POST /jobs/create: the rules as a table, then real daemons and real uploads,
racing on one daemon and on two daemons sharing an outbox."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import requests

from ocr_watcher.api.idempotency import ABANDONED_SECONDS, KEEP_SECONDS, Held, IdempotencyKeys, decide
from ocr_watcher.spool.layout import OutboxLayout

from .daemon import Daemon
from .pdfgen import sample_lines, text_pdf

PDF = "application/pdf"


@pytest.mark.parametrize(
    ("held", "verdict"),
    [
        (Held("job-1", "aaa", 5.0), "replay"),
        (Held("job-1", "bbb", 5.0), "refuse"),  # the same key with another file
        (Held("job-1", None, 5.0), "replay"),
        (Held("job-1", "aaa", KEEP_SECONDS + 1), "replace"),  # kept for a day
        (Held(None, "aaa", 2.0), "wait"),  # the first upload is being claimed
        (Held(None, None, 0.0), "wait"),  # its file just created, not written yet
        (Held(None, "aaa", ABANDONED_SECONDS + 1), "replace"),  # its daemon died during the claim
    ],
)
def test_what_an_upload_that_finds_its_key_taken_does(held: Held, verdict: str) -> None:
    assert decide(held, "aaa") == verdict


def test_keys_older_than_a_day_are_swept_and_younger_ones_kept(tmp_path: Path) -> None:
    layout = OutboxLayout(tmp_path)
    layout.internal.mkdir()
    keys = IdempotencyKeys(layout, fsync=False)
    assert keys.reserve("old-key", "aaa") is None and keys.reserve("new-key", "bbb") is None
    keys.record("old-key", "aaa", "job-1")
    day_ago = time.time() - KEEP_SECONDS - 60
    os.utime(keys.path("old-key"), (day_ago, day_ago))
    assert keys.sweep(time.time()) == 1
    assert not keys.path("old-key").exists() and keys.path("new-key").exists()


def _post(base: str, pdf: Path, key: str | None, name: str = "report.pdf") -> requests.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    with pdf.open("rb") as fh:
        return requests.post(f"{base}/jobs/create", files={"file": (name, fh, PDF)}, headers=headers, timeout=60)


def _race(bases: list[str], pdf: Path, key: str, per_base: int) -> list[requests.Response]:
    """Uploads with one key, started together from as many threads."""
    answers: list[requests.Response] = []
    gate = threading.Barrier(len(bases) * per_base)

    def one(base: str) -> None:
        gate.wait()
        answers.append(_post(base, pdf, key))

    threads = [threading.Thread(target=one, args=(base,)) for base in bases for _ in range(per_base)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def _job_folders(outbox: Path) -> list[Path]:
    return [p for p in outbox.iterdir() if p.is_dir() and not p.name.startswith(".")]


def test_uploads_racing_with_one_key_make_one_job_and_a_retry_gets_it_back(tmp_path: Path) -> None:
    """Given a daemon, when eight uploads of one file with one Idempotency-Key start together, then
    one job is made and all eight answers name it (seven say they are replays); after it completed,
    the same upload again gets it back, completed; the key with another file is refused (422); a bad
    key is refused (400); an upload without a key makes a job of its own."""
    pdf = text_pdf(tmp_path / "report.pdf", [sample_lines(4, seed=1)])
    other = text_pdf(tmp_path / "other.pdf", [sample_lines(4, seed=2)])
    with Daemon(tmp_path, engine="text") as daemon:
        base = daemon.http_url
        answers = _race([base], pdf, "order-4711", per_base=8)
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
        ids = {a.json()["job_id"] for a in answers}
        assert len(ids) == 1
        assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
        (job_id,) = ids
        daemon.wait_until(lambda: daemon.job_dir({"job_id": job_id}).joinpath("result.md").exists(), 60, "done")
        daemon.wait_for_job("report.pdf", {"completed"})

        again = _post(base, pdf, "order-4711")
        assert again.status_code == 200 and again.json() == {"job_id": job_id, "status": "completed"}
        assert again.headers["Idempotent-Replayed"] == "true"
        reused = _post(base, other, "order-4711", name="other.pdf")
        assert reused.status_code == 422 and "another file" in reused.json()["detail"]
        bad = _post(base, pdf, "spaces are not allowed")
        assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["detail"]
        unkeyed = _post(base, pdf, None)
        assert unkeyed.status_code == 200 and unkeyed.json()["job_id"] != job_id
        assert len(_job_folders(daemon.outbox)) == 2
    assert not list((tmp_path / "inbox" / ".ocr-watcher" / "uploads").glob("*"))  # nothing left over


def test_two_daemons_on_one_outbox_make_one_job_of_uploads_racing_with_one_key(tmp_path: Path) -> None:
    """Given two daemons (each with its own inbox and job API) on one outbox, when uploads with one
    key go to both at once, then one job is made, and every answer names it."""
    pdf = text_pdf(tmp_path / "shared.pdf", [sample_lines(3, seed=7)])
    outbox = tmp_path / "outbox"
    with (
        Daemon(tmp_path, "d1", inbox=tmp_path / "in1", outbox=outbox, engine="text") as first,
        Daemon(tmp_path, "d2", inbox=tmp_path / "in2", outbox=outbox, engine="text") as second,
    ):
        answers = _race([first.http_url, second.http_url], pdf, "batch-17/file-3", per_base=4)
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
        ids = {a.json()["job_id"] for a in answers}
        assert len(ids) == 1
        first.wait_for_job("report.pdf", {"completed"})
        assert len(_job_folders(outbox)) == 1
