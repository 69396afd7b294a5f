"""The best source per page (engine `auto` without a GPU is `hybrid`): the rule as a table, then a
real daemon on real PDFs made here: a born-digital page is its own text layer, a scan is OCRed, and
so are a scan with only a stamp in its text layer and a page whose text layer is garbage. Each
page's JSON says which source it came from and why."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from ocr_watcher.engines.orientation import Reading, best_turn, turns_to_try
from ocr_watcher.engines.text_trust import judge_text_layer

from .daemon import Daemon, drop
from .pdfgen import (
    Span,
    cer,
    draw_page,
    flow,
    image_page_pdf,
    normalise,
    sample_lines,
    scanned_pdf,
    styled_pdf,
    text_pdf,
)

PROSE = (
    "The quarterly report shows that revenue grew in every region while costs stayed level. "
    "Our teams shipped the new storage service on time, and customers moved their archives to it. "
)
GARBLED = "Tbq qnxk brwn fxjs jmps vr th lzy dgs wth grt spd nd prcsn " * 4
GARBLED_LINES = ["Tbq qnxk brwn fxjs jmps vr th lzy dgs", "wth grt spd nd prcsn rdng"] * 8


@pytest.mark.parametrize(
    ("text", "cover", "use_text", "reason"),
    [
        (PROSE * 3, 0.0, True, "its text layer"),
        ("Annual Report 2026", 0.0, True, "its text layer"),  # a short title page: nothing else to read
        ("", 0.0, False, "no text layer"),
        ("", 0.95, False, "no text layer (a scanned page)"),
        ("\ufffd\ufffd\x01\x02 " * 20, 0.0, False, "the text layer is not text"),  # a broken font mapping
        (GARBLED, 0.0, False, "reads as garbage"),  # a poor OCR layer
        ("SCAN-0042 received", 0.95, False, "a scanned page whose text layer has only"),  # a stamp over a scan
        (PROSE * 3, 0.95, True, "over images covering 95% of the page"),  # a scan with a good OCR layer
        ("HTML CSS JSON XML API REST HTTP " * 5 + PROSE, 0.0, True, "its text layer"),  # acronyms are words
    ],
)
def test_whether_a_pages_text_layer_is_used(text: str, cover: float, use_text: bool, reason: str) -> None:
    verdict = judge_text_layer(text, cover)
    assert verdict.use_text is use_text and reason in verdict.reason


def _scan_with_text_layer(path: Path, lines: list[str], caption: str | list[str], invisible: bool = False) -> Path:
    """A Letter page that is one scanned image of `lines`, with `caption` as its only real text."""
    image = draw_page(lines, dpi=100, size_in=(8.5, 11.0)).convert("L")
    flate = zlib.compress(image.tobytes())
    return image_page_pdf(path, image.width, image.height, 8, flate, caption=caption, invisible=invisible)


def _page(daemon: Daemon, job: dict, page: int = 1) -> tuple[dict, str]:
    pages = daemon.job_dir(job) / "pages"
    return json.loads((pages / f"{page:04d}.json").read_text()), (pages / f"{page:04d}.md").read_text()


def test_each_page_comes_from_its_best_source_and_says_why(tmp_path: Path) -> None:
    words = sample_lines(8, seed=41, max_chars=40)
    scan_lines = sample_lines(5, seed=42)
    stamp_lines = sample_lines(5, seed=43)
    sources = {
        "digital.pdf": text_pdf(tmp_path / "digital.pdf", [words]),
        "scan.pdf": scanned_pdf(tmp_path / "scan.pdf", [scan_lines]),
        "stamped.pdf": _scan_with_text_layer(tmp_path / "stamped.pdf", stamp_lines, "SCAN-0042"),
        "garbage.pdf": _scan_with_text_layer(tmp_path / "garbage.pdf", scan_lines, GARBLED_LINES, invisible=True),
    }
    with Daemon(tmp_path, engine="auto") as daemon:
        for name, path in sources.items():
            drop(daemon.inbox, path, name)
        jobs = {name: daemon.wait_for_job(name, {"completed"}) for name in sources}
    assert {job["engine"]["kind"] for job in jobs.values()} == {"hybrid"}

    info, markdown = _page(daemon, jobs["digital.pdf"])
    assert (info["source"], info["engine"]) == ("text_layer", "text") and "its text layer" in info["source_reason"]
    assert normalise(markdown) == normalise(" ".join(words))  # exact: no OCR errors

    info, markdown = _page(daemon, jobs["scan.pdf"])
    assert (info["source"], info["engine"], info["source_reason"]) == (
        "ocr",
        "tesseract",
        "no text layer (a scanned page)",
    )
    assert cer(" ".join(scan_lines), markdown) < 0.1

    info, markdown = _page(daemon, jobs["stamped.pdf"])
    assert info["source"] == "ocr" and "only 9 characters" in info["source_reason"]
    assert cer(" ".join(stamp_lines), markdown) < 0.15

    info, markdown = _page(daemon, jobs["garbage.pdf"])
    assert info["source"] == "ocr" and "reads as garbage" in info["source_reason"]
    assert "brwn" not in markdown and cer(" ".join(scan_lines), markdown) < 0.15

    result = json.loads((daemon.job_dir(jobs["digital.pdf"]) / "result_metadata.json").read_text())
    assert result["pages"][0]["source"] == "text_layer"


def test_engines_tesseract_and_text_keep_their_meaning(tmp_path: Path) -> None:
    words = sample_lines(6, seed=44, max_chars=40)
    digital = text_pdf(tmp_path / "digital.pdf", [words])
    profiles = {"ocr": {"engine": "tesseract"}, "layer": {"engine": "text"}}
    with Daemon(tmp_path, engine="auto", profiles=profiles) as daemon:
        drop(daemon.inbox / "ocr", digital, "a.pdf")
        drop(daemon.inbox / "layer", digital, "b.pdf")
        ocred = daemon.wait_for_job("a.pdf", {"completed"})
        layered = daemon.wait_for_job("b.pdf", {"completed"})
    info, _ = _page(daemon, ocred)
    assert info["engine"] == "tesseract" and "source" not in info  # OCRed although the layer is good
    info, _ = _page(daemon, layered)
    assert info["engine"] == "text" and "source" not in info


# -- structure from the text layer's geometry --------------------------------------------------------
BODY_A = [
    "Revenue grew in every region this quarter while the cost of running the",
    "storage service stayed level, so that the margin rose for the third time in",
    "a row and the teams could hire for the new archive product line.",
]
BODY_B = [
    "Customers moved their archives to the new service at twice the expected",
    "rate, and the support desk answered most questions within a day of receiv-",
    "ing them.",
]


def _report_page(number: int) -> list[Span]:
    """A page of a born-digital report: a running header and footer, a title, a bold heading, two
    paragraphs, a bulleted and a numbered list."""
    spans = [Span("Storage Corporation Quarterly Report", 72, 40, 9), Span(f"Page {number}", 290, 760, 9)]
    spans.append(Span(f"Results of Part {number}", 72, 100, 22))
    spans.extend(flow(BODY_A, 72, 140))
    spans.append(Span("Where the growth came from", 72, 200, 11, bold=True))
    spans.extend(flow(BODY_B, 72, 222))
    spans.extend(flow(["\u2022 archives of scanned contracts", "\u2022 mail of the legal department"], 90, 280))
    spans.extend(flow(["1. the first quarter", "2. the second quarter"], 90, 320))
    return spans


def test_a_born_digital_report_becomes_markdown_with_its_structure(tmp_path: Path) -> None:
    report = styled_pdf(tmp_path / "report.pdf", [_report_page(n) for n in (1, 2, 3)])
    with Daemon(tmp_path, engine="auto") as daemon:
        drop(daemon.inbox, report, "report.pdf")
        job = daemon.wait_for_job("report.pdf", {"completed"})
    page_md = (daemon.job_dir(job) / "pages" / "0002.md").read_text()
    blocks = page_md.strip().split("\n\n")
    assert "# Results of Part 2" in blocks  # a title from its size
    assert "### Where the growth came from" in blocks  # a heading from its weight
    assert " ".join(BODY_A) in blocks  # one paragraph, joined across its lines
    assert any(block.endswith("within a day of receiving them.") for block in blocks)  # hyphenation undone
    assert "- archives of scanned contracts\n- mail of the legal department" in blocks
    assert "1. the first quarter\n2. the second quarter" in blocks
    result = (daemon.job_dir(job) / "result.md").read_text()
    assert "Quarterly Report" not in result and "Page 2" not in result  # running header, footer, number
    assert "Quarterly Report" in page_md  # kept in the page's own file
    assert result.count("# Results of Part") == 3


def test_a_two_column_page_reads_column_by_column(tmp_path: Path) -> None:
    left = ["The left column starts the article", "and goes on for a few lines of", "text before it ends here."]
    right = ["The right column follows it and", "ends the article with its own", "lines of text at the end."]
    # Given line by line across the page, as some writers do: the left line, then the right one.
    page = [span for pair in zip(flow(left, 72, 100), flow(right, 320, 100), strict=True) for span in pair]
    page.insert(0, Span("The Article", 72, 70, 18))  # a title across both columns
    pdf = styled_pdf(tmp_path / "columns.pdf", [page])
    with Daemon(tmp_path, engine="auto") as daemon:
        drop(daemon.inbox, pdf, "columns.pdf")
        job = daemon.wait_for_job("columns.pdf", {"completed"})
    markdown = (daemon.job_dir(job) / "pages" / "0001.md").read_text()
    assert markdown.strip().split("\n\n") == ["## The Article", " ".join(left), " ".join(right)]


def test_a_table_in_the_text_layer_becomes_a_markdown_table(tmp_path: Path) -> None:
    rows = [("Region", "Revenue", "Cost"), ("North", "1,204", "310"), ("South", "987", "1,020"), ("West", "55", "7")]
    page = [*flow(["The figures of the quarter by region:"], 72, 90)]
    for n, row in enumerate(rows):
        y = 120 + 16 * n
        page.append(Span(row[0], 72, y, bold=n == 0))
        for column, cell in enumerate(row[1:]):  # numbers set flush right, as tables have them
            right = 300 + 120 * column
            page.append(Span(cell, right - 6.1 * len(cell), y, bold=n == 0))
    page.extend(flow(["The West region opened in the last month of the quarter."], 72, 200))
    pdf = styled_pdf(tmp_path / "table.pdf", [page])
    with Daemon(tmp_path, engine="auto") as daemon:
        drop(daemon.inbox, pdf, "table.pdf")
        job = daemon.wait_for_job("table.pdf", {"completed"})
    blocks = (daemon.job_dir(job) / "pages" / "0001.md").read_text().strip().split("\n\n")
    table = "\n".join(
        [
            "| Region | Revenue | Cost |",
            "| --- | --- | --- |",
            "| North | 1,204 | 310 |",
            "| South | 987 | 1,020 |",
            "| West | 55 | 7 |",
        ]
    )
    assert blocks == [
        "The figures of the quarter by region:",
        table,
        "The West region opened in the last month of the quarter.",
    ]


# -- scans the wrong way up -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "turns"),
    [
        (Reading(80, 95.0, False), ()),  # upright: nothing more to do
        (Reading(2, 10.0, False), ()),  # a blank page or a photo
        (Reading(80, 24.0, False), (180,)),  # upside down
        (Reading(80, 90.0, True), (90, 270)),  # on its side
    ],
)
def test_which_pages_are_read_again_turned(first: Reading, turns: tuple[int, ...]) -> None:
    assert turns_to_try(first) == turns


def test_the_turned_reading_is_kept_only_when_clearly_better() -> None:
    assert best_turn({0: Reading(80, 24.0, False), 180: Reading(80, 95.0, False)}) == 180
    assert best_turn({0: Reading(80, 50.0, False), 180: Reading(80, 55.0, False)}) == 0  # a poor scan either way
    assert best_turn({0: Reading(80, 90.0, True), 90: Reading(80, 30.0, False), 270: Reading(80, 94.0, False)}) == 270


def test_scans_sideways_and_upside_down_are_turned_and_read(tmp_path: Path) -> None:
    texts = [sample_lines(8, seed=60 + n, max_chars=44) for n in range(4)]
    # Page n is the scan turned clockwise by 90 * n degrees, as a feeder puts pages in.
    pages = [
        draw_page(lines, dpi=150, size_in=(8.5, 11.0)).rotate(-90 * n, expand=True) for n, lines in enumerate(texts)
    ]
    pdf = tmp_path / "turned.pdf"
    pages[0].save(pdf, "PDF", save_all=True, append_images=pages[1:], resolution=150)
    with Daemon(tmp_path, engine="auto") as daemon:
        drop(daemon.inbox, pdf, "turned.pdf")
        job = daemon.wait_for_job("turned.pdf", {"completed"}, timeout=180)
    for n, lines in enumerate(texts, start=1):
        info, markdown = _page(daemon, job, n)
        assert info["rotation"] == (360 - 90 * (n - 1)) % 360, f"page {n}"  # turned back upright
        assert cer(" ".join(lines), markdown) < 0.1, f"page {n}: {markdown!r}"


def test_a_scanned_table_becomes_a_markdown_table(tmp_path: Path) -> None:
    rows = [("Region", "Revenue", "Cost"), ("North", "1,204", "310"), ("South", "987", "1,020"), ("West", "55", "70")]
    page = [*flow(["The figures of the quarter by region:"], 72, 90)]
    for n, row in enumerate(rows):
        page.extend(Span(cell, 72 + 150 * column, 130 + 20 * n) for column, cell in enumerate(row))
    page.extend(flow(["The West region opened in the last month of the quarter."], 72, 230))
    digital = styled_pdf(tmp_path / "table.pdf", [page])
    image = pdfium.PdfDocument(str(digital))[0].render(scale=200 / 72, grayscale=True).to_pil()
    scan = tmp_path / "scanned-table.pdf"
    image.save(scan, "PDF", resolution=200)
    with Daemon(tmp_path, engine="auto") as daemon:
        drop(daemon.inbox, scan, "scanned-table.pdf")
        job = daemon.wait_for_job("scanned-table.pdf", {"completed"})
    info, markdown = _page(daemon, job)
    assert info["source"] == "ocr"
    table = [block for block in markdown.strip().split("\n\n") if block.startswith("|")]
    assert len(table) == 1, markdown
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[0].splitlines()]
    assert cells[0] == list(rows[0]) and cells[1] == ["---"] * 3
    assert cells[2:] == [list(row) for row in rows[1:]]
