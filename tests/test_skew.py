"""Slightly turned scans (engines/skew.py): the slope measured from Tesseract's word boxes, the
geometry levelled before the layout rules judge it, and pages askew enough read again turned level.
First the pure rules on word boxes made here, then a real daemon on scans turned by a few degrees
each way: the turn is recorded, the heading is still a heading and the table keeps its cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image

from ocr_watcher.engines.orientation import Reading
from ocr_watcher.engines.skew import MIN_SKEW, keep_levelled, levelled, reread_levelled, skew_of
from ocr_watcher.engines.tsv_layout import Line, Paragraph

from .daemon import Daemon, drop
from .pdfgen import Span, flow, styled_pdf


def _page_turned(degrees: float, lines: int = 6, words: int = 8) -> list[Paragraph]:
    """Lines of words 30 px high, 120 px wide, as Tesseract boxes them on a page turned `degrees`
    anticlockwise: each word's centre turned about (0, 0), its upright bounding box grown to fit."""
    turn = math.radians(degrees)
    cos, sin = math.cos(turn), math.sin(turn)
    grow_w, grow_h = 120 * cos + 30 * abs(sin), 120 * abs(sin) + 30 * cos
    paragraphs = []
    for n in range(lines):
        line = Line(height=0)
        for k in range(words):
            x, y = 100 + 150 * k, 100 + 60 * n
            cx, cy = x * cos + y * sin, -x * sin + y * cos  # anticlockwise on a y-down page
            line.words.append(f"w{n}{k}")
            line.boxes.append((round(cx - grow_w / 2), round(cy - grow_h / 2), round(grow_w), round(grow_h)))
        line.height = max(b[1] + b[3] for b in line.boxes) - min(b[1] for b in line.boxes)
        paragraphs.append(Paragraph([line]))
    return paragraphs


@pytest.mark.parametrize("degrees", [0.0, 0.5, 2.0, -3.0, 7.0])
def test_the_slope_is_measured_from_the_words_and_levelled(degrees: float) -> None:
    page = _page_turned(degrees)
    measured = skew_of(page)
    assert measured == pytest.approx(degrees, abs=0.05)  # clockwise to level what was turned anticlockwise
    flat = levelled(page, measured)
    for paragraph in flat:
        line = paragraph.lines[0]
        assert line.height == pytest.approx(30, abs=3)  # the type's height again, not the slope's
        tops = [top for _, top, _, _ in line.boxes]
        assert max(tops) - min(tops) <= 2  # the words stand on one level line
    if abs(measured) < MIN_SKEW:
        assert flat is page  # a level page is left exactly as it is


def test_no_slope_is_claimed_from_too_little_or_from_chaos() -> None:
    assert skew_of(_page_turned(2.0, lines=2)) == 0.0  # two lines say too little
    assert skew_of(_page_turned(2.0, words=2)) == 0.0  # lines of two words too
    assert skew_of(_page_turned(25.0)) == 0.0  # a page this turned is not a skewed sheet
    assert skew_of([]) == 0.0


def test_which_pages_are_read_again_level_and_which_reading_is_kept() -> None:
    assert not reread_levelled(0.0) and not reread_levelled(0.2) and not reread_levelled(-0.29)
    assert reread_levelled(0.3) and reread_levelled(-2.5)
    first = Reading(200, 88.0, False)
    assert keep_levelled(first, Reading(200, 91.0, False))
    assert keep_levelled(first, Reading(190, 87.5, False))  # a few words fewer, about as sure: specks gone
    assert not keep_levelled(first, Reading(200, 85.0, False))  # read clearly worse: the first stands
    assert not keep_levelled(first, Reading(150, 95.0, False))  # words lost


ROWS = [("Region", "Revenue", "Cost"), ("North", "1,204", "310"), ("South", "987", "1,020"), ("West", "55", "70")]
BODY = [
    "The figures of the quarter by region are given in the table below, and",
    "the notes after it explain where the growth of the quarter came from.",
]


def _report(tmp_path: Path) -> Path:
    page = [Span("Results of the Quarter", 72, 70, 22), *flow(BODY, 72, 120)]
    for n, row in enumerate(ROWS):
        page.extend(Span(cell, 72 + 150 * column, 170 + 20 * n) for column, cell in enumerate(row))
    page.extend(flow(["The West region opened in the last month of the quarter."], 72, 270))
    return styled_pdf(tmp_path / "report.pdf", [page, page])


def test_skewed_scans_keep_their_heading_and_table(tmp_path: Path) -> None:
    """Given the same report page scanned turned 2 degrees anticlockwise and 1.5 clockwise, when the
    daemon (engine auto) reads them, then each page's JSON records the turn that levelled it, the
    title is a heading and the table has its cells, as on the level page."""
    document = pdfium.PdfDocument(str(_report(tmp_path)))
    turns = [2.0, -1.5]  # PIL's angle: anticlockwise
    scans = [
        document[n].render(scale=200 / 72, grayscale=True).to_pil().rotate(t, Image.Resampling.BICUBIC, fillcolor=255)
        for n, t in enumerate(turns)
    ]
    pdf = tmp_path / "skewed.pdf"
    scans[0].save(pdf, "PDF", save_all=True, append_images=scans[1:], resolution=200)
    with Daemon(tmp_path, engine="auto") as daemon:
        drop(daemon.inbox, pdf, "skewed.pdf")
        job = daemon.wait_for_job("skewed.pdf", {"completed"}, timeout=180)
    pages = daemon.job_dir(job) / "pages"
    for n, turn in enumerate(turns, start=1):
        info = json.loads((pages / f"{n:04d}.json").read_text())
        markdown = (pages / f"{n:04d}.md").read_text()
        assert info["source"] == "ocr" and info["rotation"] == 0
        assert info["skew"] == pytest.approx(turn, abs=0.3), f"page {n}"
        assert "## Results of the Quarter" in markdown, markdown
        table = [block for block in markdown.strip().split("\n\n") if block.startswith("|")]
        assert len(table) == 1, markdown
        cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[0].splitlines()]
        assert cells[0] == list(ROWS[0]) and cells[2:] == [list(row) for row in ROWS[1:]], markdown
