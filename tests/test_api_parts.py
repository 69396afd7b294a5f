"""The job API's parts on their own: upload streaming, the listing index, the views, the HTML result."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ocr_watcher.api.index import JobIndex
from ocr_watcher.api.render import inline_images, result_html
from ocr_watcher.api.upload import UploadError, receive_upload, sweep_stale_uploads
from ocr_watcher.api.views import JobView, count_by_status, job_view, parse_statuses, select_page
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker
from ocr_watcher.spool.store import JobStore

BOUNDARY = "XyZ-boundary-42"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def receive(body: bytes, destination: Path, *, limit: int = 1 << 20, chunk: int = 7, declared: bool = True):
    length = len(body) if declared else None
    return asyncio.run(receive_upload(chunks(body, chunk), CONTENT_TYPE, length, destination, limit))


# -- upload streaming -----------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 16])
def test_the_file_part_streams_to_disk_whatever_the_chunking(tmp_path: Path, chunk: int) -> None:
    """Given a body with a profile field after the file, when it arrives in chunks of any size (one
    byte splits every boundary), then the file holds exactly the part's bytes and the field is read."""
    data = os.urandom(3000) + f"\r\n--{BOUNDARY[:-1]}".encode() + os.urandom(500)  # boundary look-alike
    received = receive(
        multipart(("file", "scan 1.pdf", data), ("profile", None, b" urgent ")), tmp_path / "u", chunk=chunk
    )
    assert (tmp_path / "u").read_bytes() == data
    assert (received.filename, received.size, received.fields) == ("scan 1.pdf", len(data), {"profile": "urgent"})
    assert received.sha256 == hashlib.sha256(data).hexdigest()  # hashed as written: the claim trusts it


def test_over_the_limit_stops_writing_and_reads_the_rest(tmp_path: Path) -> None:
    """Given a 1000-byte limit, when a 5000-byte file arrives without a declared length, then 413,
    at most the limit was written, and the whole body was consumed (so the client gets the answer)."""
    body = multipart(("file", "a.pdf", b"%" * 5000), ("profile", None, b"x"))
    consumed: list[int] = []

    async def counting() -> AsyncIterator[bytes]:
        async for piece in chunks(body, 100):
            consumed.append(len(piece))
            yield piece

    with pytest.raises(UploadError) as error:
        asyncio.run(receive_upload(counting(), CONTENT_TYPE, None, tmp_path / "u", 1000))
    assert error.value.status == 413 and "MiB" in error.value.message
    assert (tmp_path / "u").stat().st_size <= 1000
    assert sum(consumed) == len(body)


def test_a_declared_length_over_the_limit_is_refused_without_parsing(tmp_path: Path) -> None:
    body = multipart(("file", "a.pdf", b"%" * 200_000))
    with pytest.raises(UploadError) as error:
        receive(body, tmp_path / "u", limit=100, chunk=4096)
    assert error.value.status == 413
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (multipart(("profile", None, b"x")), CONTENT_TYPE, 400, "field 'file'"),
        (multipart(("file", "a", b"1"), ("file", "b", b"2")), CONTENT_TYPE, 400, "one file"),
        (b"garbage without any boundary", CONTENT_TYPE, 400, ""),
        (b"{}", "application/json", 415, "multipart/form-data"),
        (b"", "multipart/form-data", 415, "multipart/form-data"),  # no boundary parameter
    ],
)
def test_bodies_that_are_not_one_upload_are_refused(
    tmp_path: Path, body: bytes, content_type: str, status: int, words: str
) -> None:
    with pytest.raises(UploadError) as error:
        asyncio.run(receive_upload(chunks(body, 8), content_type, len(body), tmp_path / "u", 1 << 20))
    assert error.value.status == status and words in error.value.message


def test_stale_uploads_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    """Given an upload a crash left two hours ago and one being received now, when swept, then only
    the old one goes (another daemon sharing the inbox may be writing the fresh one)."""
    old, fresh, other = tmp_path / "a.part", tmp_path / "b.part", tmp_path / "keep.txt"
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))
    assert sweep_stale_uploads(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.part", "keep.txt"]
    assert sweep_stale_uploads(tmp_path / "missing") == 0


# -- views ------------------------------------------------------------------------------------------
def _meta(job_id: str, status: Status = Status.QUEUED, created: datetime | None = None) -> JobMeta:
    created = created or datetime(2026, 1, 1, tzinfo=timezone.utc)
    meta = JobMeta(
        job_id=job_id,
        source=Source(name="My scan.pdf", inbox_path="My scan.pdf", size=10),
        input_file="input.pdf",
        created_at=created,
        worker=Worker(id="w", host="h", pid=1),
    )
    if status is not Status.QUEUED:
        meta.transition(Status.PROCESSING)
    if status not in (Status.QUEUED, Status.PROCESSING):
        meta.transition(status)
    return meta


def test_job_view_is_a_valid_job_view_for_every_status() -> None:
    for status in Status:
        meta = _meta("My_scan.pdf_20260101_000000_0000abcd", status)
        meta.set_progress(4, 2, 1)
        view = job_view(meta.to_json())
        JobView.model_validate(view)  # what the OpenAPI description promises
        assert view["progress"] == {"pages_total": 4, "pages_done": 2, "pages_failed": 1, "percent": 75.0}
        assert view["filename"] == "My scan.pdf" and view["status"] == status.value


def test_job_view_tolerates_odd_fields_written_by_other_versions() -> None:
    doc = _meta("a_20260101_000000_0000abcd").to_json()
    doc.update(progress="?", error="boom", warnings=[1, "w"], attempts=True, source=None)
    view = job_view(doc)
    JobView.model_validate(view)
    assert (view["progress"]["pages_done"], view["error"], view["warnings"], view["attempts"]) == (0, None, ["w"], 1)


def test_status_filters_and_paging() -> None:
    assert parse_statuses(["queued,processing", " failed "]) == {"queued", "processing", "failed"}
    assert parse_statuses([]) == set()
    with pytest.raises(ValueError, match="unknown status 'done'"):
        parse_statuses(["completed,done"])
    jobs = [(f"j{i}", "completed" if i % 3 else "failed") for i in range(10)]
    assert select_page(jobs, set(), 8, 5) == (["j8", "j9"], 10)
    assert select_page(jobs, {"failed"}, 1, 2) == (["j3", "j6"], 4)
    assert select_page(jobs, {"cancelled"}, 0, 5) == ([], 0)
    assert count_by_status(s for _, s in jobs) == {
        "queued": 0,
        "processing": 0,
        "completed": 6,
        "failed": 4,
        "cancelled": 0,
    }


# -- the listing index ------------------------------------------------------------------------------
def test_the_index_follows_the_outbox_newest_first(tmp_path: Path) -> None:
    """Given job folders written by anyone, when jobs appear, change status, are deleted or are
    corrupt, then the index (refreshed each time here) lists them newest first with current statuses,
    and does not re-read completed jobs."""
    store = JobStore(tmp_path, fsync=False)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = [f"doc{i}_20260101_00000{i}_0000000{i}" for i in range(4)]

    def write(meta: JobMeta) -> None:
        store.paths(meta.job_id).dir.mkdir(exist_ok=True)
        store.save(meta)

    for i, job_id in enumerate(ids):
        write(_meta(job_id, Status.COMPLETED if i == 0 else Status.QUEUED, start + timedelta(seconds=i)))
    index = JobIndex(store, ttl=0)
    assert index.newest_first() == [(ids[3], "queued"), (ids[2], "queued"), (ids[1], "queued"), (ids[0], "completed")]
    changed = _meta(ids[2], Status.FAILED, start + timedelta(seconds=2))
    write(changed)
    os.utime(store.paths(ids[2]).metadata, ns=(1, time.time_ns() + 10**9))  # a coarse-mtime filesystem
    (tmp_path / ids[1] / "metadata.json").unlink()
    (tmp_path / ids[1]).rmdir()
    store.paths(ids[0]).metadata.write_text("not json")  # completed: never read again, so still listed
    (tmp_path / "broken_20260101_000009_00000009").mkdir()
    (tmp_path / "broken_20260101_000009_00000009" / "metadata.json").write_text(json.dumps({"status": "x"}))
    assert index.newest_first() == [(ids[3], "queued"), (ids[2], "failed"), (ids[0], "completed")]


# -- the rendered result ----------------------------------------------------------------------------
def test_result_html_keeps_tables_inlines_figures_and_leaves_other_links(tmp_path: Path) -> None:
    """Given DeepSeek-style Markdown with an HTML table, a figure and hostile names, when rendered,
    then the table stays a table, the figure is a data: URL, and links outside images/ are untouched."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0001-1.png").write_bytes(b"\x89PNG fake")
    markdown = (
        "# Title\n\n<table><tr><td>1</td></tr></table>\n\n![](images/0001-1.png)\n\n"
        "![](images/missing.png) ![](images/../../secret.png) ![](https://example.invalid/x.png)\n"
    )
    inlined = inline_images(markdown, tmp_path)
    assert "data:image/png;base64," in inlined and "images/missing.png" in inlined
    assert "images/../../secret.png" in inlined
    page = result_html(markdown, tmp_path, "<My & doc>")
    assert "<table><tr><td>1</td></tr></table>" in page and "<h1>Title</h1>" in page
    assert "<title>&lt;My &amp; doc&gt;</title>" in page
