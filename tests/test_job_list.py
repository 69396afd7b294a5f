"""`ocr-watcher jobs`: the newest jobs found from their ids, few metadata.json files read, an aligned table."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from ocr_watcher.job_list import age, claim_second, newest_first, select, table
from ocr_watcher.spool.model import JobError, JobMeta, Source, Status, Worker
from ocr_watcher.spool.store import JobStore

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 12, 2, 9, 0, 0, tzinfo=timezone.utc)


def _meta(name: str, created: datetime, status: Status = Status.COMPLETED) -> JobMeta:
    meta = JobMeta(
        job_id=f"{name}_{created:%Y%m%d_%H%M%S}_{abs(hash((name, created))) % 16**8:08x}",
        source=Source(name=name, inbox_path=name, size=10),
        input_file="input.pdf",
        created_at=created,
        worker=Worker(id="w", host="h", pid=1),
    )
    meta.set_progress(12, 0, 0)
    if status is not Status.QUEUED:
        meta.transition(Status.PROCESSING)
    if status not in (Status.QUEUED, Status.PROCESSING):
        meta.transition(status)
    if status is Status.FAILED:
        meta.error = JobError(type="not_a_pdf", message="the file is not a PDF")
    if status is Status.COMPLETED:
        meta.set_progress(12, 12, 0)
    return meta


def test_ids_order_jobs_by_their_claim_time_not_their_name() -> None:
    early = _meta("zzz.pdf", T0).job_id
    late = _meta("aaa.pdf", T0 + timedelta(seconds=1)).job_id
    assert claim_second(early) == "20261202090000" and claim_second("not-a-job") == ""
    assert newest_first([early, late]) == [late, early]


def test_the_newest_few_are_listed_without_reading_every_job() -> None:
    """Given 1,000 jobs, listing the newest 5 reads 5 metadata.json files plus those claimed in the same
    second as the 5th (ids order jobs only to the second; the records say the exact order)."""
    metas = {m.job_id: m for m in (_meta(f"f{n}.pdf", T0 + timedelta(seconds=n)) for n in range(1000))}
    twin = _meta("twin.pdf", T0 + timedelta(seconds=995, milliseconds=500))  # same second as the 5th newest
    metas[twin.job_id] = twin
    read: list[str] = []

    def load(job_id: str) -> JobMeta | None:
        read.append(job_id)
        return metas[job_id]

    newest = select(metas, load, None, 5)
    assert [m.source.name for m in newest] == ["f999.pdf", "f998.pdf", "f997.pdf", "f996.pdf", "twin.pdf"]
    assert len(read) == 6
    assert len(select(metas, lambda job_id: metas[job_id], None, 0)) == 1001  # 0: all


def test_a_status_filter_keeps_reading_until_enough_match() -> None:
    metas = {m.job_id: m for m in (_meta(f"f{n}.pdf", T0 + timedelta(minutes=n)) for n in range(20))}
    failed = _meta("bad.pdf", T0 - timedelta(days=1), Status.FAILED)
    metas[failed.job_id] = failed
    assert [m.job_id for m in select(metas, metas.get, "failed", 5)] == [failed.job_id]
    assert select(metas, metas.get, "cancelled", 5) == []


def test_table_columns_line_up_whatever_the_id_lengths() -> None:
    rows = [
        ["short.pdf_20261202_090000_0000abcd", "completed", "12/12", "100%", "3 min", "", ""],
        ["a much longer file name.pdf_20261202_090000_0000abcd", "failed", "0/?", "0%", "2 d", "", "not_a_pdf: no"],
        ["queued.pdf_20261202_090000_0000abcd", "queued", "0/40", "0%", "5 s", "in 2 min", ""],
    ]
    lines = table(rows)
    header, first, second, third = lines
    for word in ("STATUS", "PAGES", "DONE", "CLAIMED"):
        column = header.index(word)
        assert first[column - 1] == " " and second[column - 1] == " ", (word, lines)
    assert third.index("in 2 min") == header.index("ETA") and second.index("not_a_pdf") == header.index("ERROR")
    assert first.index("completed") == second.index("failed") == header.index("STATUS")
    # Numbers are right-aligned: their last characters line up under the header's.
    end = header.index("PAGES") + len("PAGES")
    assert first[end - 5 : end] == "12/12" and second[end - 3 : end] == "0/?"
    assert second.endswith("not_a_pdf: no") and not first.endswith(" ")


def test_age_uses_the_largest_unit_that_fits() -> None:
    assert [age(T0 - timedelta(seconds=s), T0) for s in (5, 125, 7200, 200000)] == ["5 s", "2 min", "2 h", "2 d"]


def test_the_command_prints_an_aligned_table_and_says_what_it_left_out(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    store = JobStore(outbox, fsync=False)
    metas = [_meta(f"report_number_{n}.pdf", T0 + timedelta(seconds=n)) for n in range(60)]
    metas.append(_meta("x.pdf", T0 + timedelta(minutes=5), Status.FAILED))
    for meta in metas:
        store.paths(meta.job_id).dir.mkdir(parents=True)
        store.save(meta)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"inbox": str(tmp_path / "inbox"), "outbox": str(outbox)}))

    def jobs(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ocr_watcher.cli", "jobs", "--config", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)

    listed = jobs()
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["JOB", "STATUS", "PAGES", "DONE", "CLAIMED", "ETA", "ERROR"]
    assert len(rows) == 50 and rows[0].startswith("x.pdf_") and "not_a_pdf: the file is not a PDF" in rows[0]
    assert {row.index("completed") for row in rows[1:]} == {rows[0].index("failed")} == {header.index("STATUS")}
    assert "the newest 50 of 61 jobs; --limit 0 lists all" in listed.stderr
    assert len(jobs("--limit", "0").stdout.splitlines()) == 62
    assert len(json.loads(jobs("--json").stdout)) == 61  # scripts get every job unless they ask for fewer
    assert [j["job_id"] for j in json.loads(jobs("--json", "--status", "failed", "--limit", "3").stdout)] == [
        metas[-1].job_id
    ]
