"""result.md and result_metadata.json from the page files."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from ocr_watcher.pipeline.assemble import assemble_result, join_pages, page_separator
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker
from ocr_watcher.spool.store import JobStore

pytestmark = pytest.mark.hand_made_pages  # page files written by hand, a few fields each

T0 = datetime(2026, 1, 7, 12, 0, 0, tzinfo=timezone.utc)
JOB = "doc.pdf_20260107_120000_abcdef12"


def test_pages_in_order_with_visible_rule_and_comment_between():
    # Given three pages of Markdown
    text = join_pages([(1, "# One\n", None), (2, "Two", None), (3, "Three", None)], 3)
    # Then they appear in order, each preceded by its comment, with a visible rule between pages
    assert text == (
        "<!-- page 1 of 3 -->\n\n# One\n"
        "\n\n---\n\n"
        "<!-- page 2 of 3 -->\n\nTwo\n"
        "\n\n---\n\n"
        "<!-- page 3 of 3 -->\n\nThree\n"
    )
    # And a script can split on the comments
    chunks = re.split(r"<!-- page \d+ of 3 -->", text)[1:]
    assert [c.replace("---", "").strip() for c in chunks] == ["# One", "Two", "Three"]


def test_the_rule_is_a_markdown_thematic_break():
    # A `---` right under a paragraph line would turn it into a heading; blank lines around keep it a rule
    text = join_pages([(1, "last line of page one", None), (2, "x", None)], 2)
    assert "last line of page one\n\n\n---\n\n" in text


def test_single_page_has_no_rule():
    text = join_pages([(1, "only", None)], 1)
    assert text == "<!-- page 1 of 1 -->\n\nonly\n"
    assert "---" not in text


def test_failed_page_is_noted_in_place():
    text = join_pages([(1, "a", None), (2, None, "render timed out"), (3, "c", None)], 3)
    assert "<!-- page 2 of 3 -->\n\n> **Page 2 could not be read:** render timed out\n" in text
    assert text.index("a\n") < text.index("Page 2 could not") < text.index("c\n")


def test_page_markdown_is_trimmed_and_empty_pages_kept():
    text = join_pages([(1, "\n\n  body  \n\n\n", None), (2, "", None)], 2)
    assert "<!-- page 1 of 2 -->\n\nbody\n" in text
    assert text.endswith("<!-- page 2 of 2 -->\n\n\n")


def test_page_separator():
    assert page_separator(7, 120) == "<!-- page 7 of 120 -->"


def test_no_pages():
    assert join_pages([], 0) == ""


# -- assemble_result with a real store -----------------------------------------------------------
@pytest.fixture
def store(tmp_path) -> JobStore:
    s = JobStore(tmp_path / "outbox", fsync=False)
    s.paths(JOB).dir.mkdir(parents=True)
    return s


def make_meta(total: int) -> JobMeta:
    meta = JobMeta(
        job_id=JOB,
        source=Source(name="doc.pdf", inbox_path="urgent/doc.pdf", size=1234, sha256="ab" * 32),
        input_file="input.pdf",
        kind="pdf",
        created_at=T0,
        worker=Worker(id="w1", host="h", pid=1),
        attempts=2,
    )
    meta.transition(Status.PROCESSING, now=T0 + timedelta(seconds=1))
    meta.set_progress(total, 0, 0)
    return meta


def test_assemble_result_from_page_files(store):
    # Given a 3-page job whose pages were written out of order, with page infos
    meta = make_meta(3)
    store.write_page(JOB, 3, "Third", {"page": 3, "status": "done", "engine": "text", "seconds_engine": 0.5})
    store.write_page(
        JOB,
        1,
        "First",
        {"page": 1, "status": "done", "engine": "text", "seconds_engine": 1.25, "warnings": ["looped"]},
    )
    store.write_page(JOB, 2, "Second", {"page": 2, "status": "done", "engine": "text", "seconds_engine": 0.25})
    # When the result is assembled
    markdown, result, _ = assemble_result(store, meta, {})
    # Then result.md has the pages in order
    assert markdown == join_pages([(1, "First", None), (2, "Second", None), (3, "Third", None)], 3)
    assert markdown.index("First") < markdown.index("Second") < markdown.index("Third")
    # And result_metadata.json sums it up
    assert result["job_id"] == JOB
    assert result["source"] == {
        "name": "doc.pdf",
        "inbox_path": "urgent/doc.pdf",
        "size": 1234,
        "sha256": "ab" * 32,
        "origin": "inbox",
    }
    assert result["engine"] == "text"
    assert result["model"] is None
    assert (result["pages_total"], result["pages_done"], result["pages_failed"]) == (3, 3, 0)
    assert result["attempts"] == 2
    assert result["seconds_engine_total"] == 2.0
    assert result["warnings"] == ["page 1: looped"]
    assert [p["page"] for p in result["pages"]] == [1, 2, 3]
    assert datetime.fromisoformat(result["created_at"].replace("Z", "+00:00")) == T0
    assert datetime.fromisoformat(result["started_at"].replace("Z", "+00:00")) == T0 + timedelta(seconds=1)
    assert result["finished_at"] is not None


def test_assemble_result_notes_failed_pages(store):
    # Given a 3-page job whose page 2 failed for good
    meta = make_meta(3)
    store.write_page(JOB, 1, "First", {"page": 1, "status": "done", "engine": "tesseract", "model": "eng"})
    store.write_page(JOB, 3, "Third", {"page": 3, "status": "done", "engine": "tesseract", "model": "eng"})
    # When assembled
    markdown, result, _ = assemble_result(store, meta, {2: "render timed out"})
    # Then the failed page is noted in its place and counted
    assert "> **Page 2 could not be read:** render timed out" in markdown
    assert markdown.index("First") < markdown.index("Page 2 could not") < markdown.index("Third")
    assert (result["pages_done"], result["pages_failed"]) == (2, 1)
    assert result["pages"][1] == {"page": 2, "status": "failed", "error": "render timed out"}
    assert "page 2: render timed out" in result["warnings"]
    assert result["model"] == "eng"


def test_assemble_result_without_page_info_still_works(store):
    meta = make_meta(1)
    store.paths(JOB).pages.mkdir()
    store.paths(JOB).page_md(1).write_text("bare", encoding="utf-8")
    markdown, result, _ = assemble_result(store, meta, {})
    assert "bare" in markdown
    assert result["pages"] == [{"page": 1, "status": "done"}]


def test_assemble_result_refuses_a_missing_page(store):
    # Given a page that is neither on disk nor failed
    meta = make_meta(2)
    store.write_page(JOB, 1, "First", {"page": 1})
    # Then assembling fails loudly rather than writing a result without it
    with pytest.raises(FileNotFoundError, match="page 2"):
        assemble_result(store, meta, {})


def test_assemble_result_with_mixed_engines_lists_them(store):
    meta = make_meta(2)
    store.write_page(JOB, 1, "a", {"page": 1, "engine": "vllm", "model": "deepseek-ai/DeepSeek-OCR"})
    store.write_page(JOB, 2, "b", {"page": 2, "engine": "text"})
    _, result, _ = assemble_result(store, meta, {})
    assert result["engine"] == ["text", "vllm"]
    assert result["model"] == "deepseek-ai/DeepSeek-OCR"


def test_assemble_result_reads_utf8(store):
    meta = make_meta(1)
    store.write_page(JOB, 1, "Größe 文档 ✓", {"page": 1})
    markdown, _, _ = assemble_result(store, meta, {})
    assert "Größe 文档 ✓" in markdown
