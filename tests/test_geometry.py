"""Where the words are (engines/geometry.py): boxes of what Tesseract read turned back onto the
rendered page, then a real daemon's page JSON on scans fed sideways and askew, checked against the
ink of the page as rendered: every word's box holds ink, and the boxes hold nearly all of it."""

from __future__ import annotations

import json
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image

from ocr_watcher.engines.geometry import Frame, span_blocks, tsv_blocks, with_points
from ocr_watcher.pipeline.render_sizes import fit_scale

from .daemon import Daemon, drop
from .pdfgen import draw_page, sample_lines


@pytest.mark.parametrize(
    ("degrees", "read_size", "box", "expected"),
    [
        (0, (100, 50), (10, 5, 20, 15), [10, 5, 20, 15]),
        (90, (50, 100), (40, 10, 45, 20), [10, 5, 20, 10]),  # read turned clockwise: (x, y) was (y, H - x)
        (180, (100, 50), (0, 0, 10, 10), [90, 40, 100, 50]),
        (270, (50, 100), (0, 90, 10, 100), [0, 0, 10, 10]),  # anticlockwise: (x, y) was (W - y, x)
    ],
)
def test_boxes_of_a_turned_reading_land_on_the_rendered_page(degrees, read_size, box, expected) -> None:
    back = Frame(read_size, (100, 50), degrees).to_page(box)
    assert back == pytest.approx(expected, abs=1e-6)


def test_tsv_rows_become_blocks_lines_and_words_with_points() -> None:
    rows = [
        "2\t1\t1\t0\t0\t0\t10\t10\t200\t40\t-1\t",
        "4\t1\t1\t1\t1\t0\t10\t10\t200\t40\t-1\t",
        "5\t1\t1\t1\t1\t1\t10\t10\t90\t40\t95.5\tHello",
        "5\t1\t1\t1\t1\t2\t120\t10\t90\t40\t-1\t ",
        "2\t1\t2\t0\t0\t0\t10\t80\t20\t20\t-1\t",  # a block with no words: left out
    ]
    blocks = tsv_blocks(
        "\n".join(["level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop", *rows]),
        Frame((300, 300), (300, 300)),
    )
    assert blocks == [
        {
            "kind": "text",
            "box_px": [10, 10, 210, 50],
            "lines": [
                {"box_px": [10, 10, 210, 50], "words": [{"text": "Hello", "conf": 95.5, "box_px": [10, 10, 100, 50]}]}
            ],
        }
    ]
    with_points(blocks, (300, 300), (72.0, 72.0))  # 300 px for 72 pt: 300 dpi
    assert blocks[0]["lines"][0]["words"][0]["box_pt"] == [2.4, 2.4, 24.0, 12.0]
    assert span_blocks([[72, 90, 200, 102, "A line", 11, False], [0, 0, 1, 1, "  ", 11, False]]) == [
        {"kind": "text", "lines": [{"text": "A line", "box_pt": [72, 90, 200, 102]}]}
    ]


def _ink(image: Image.Image, box: list[float]) -> tuple[int, int]:
    """(dark pixels, all pixels) inside `box` of a grayscale image."""
    crop = image.crop(tuple(round(v) for v in box))
    histogram = crop.histogram()
    return sum(histogram[:128]), max(1, crop.width * crop.height)


def test_word_boxes_lie_over_the_words_on_scans_fed_sideways_and_askew(tmp_path: Path) -> None:
    """Given a scan fed on its side and one set 2 degrees askew, when the daemon (engine auto) reads
    them, then in each page's JSON every word's box_px holds ink on the page as rendered, the words'
    boxes together hold at least 90% of the page's ink, and box_pt is box_px at the page's scale."""
    lines = sample_lines(10, seed=7, max_chars=44)
    upright = draw_page(lines, dpi=150, size_in=(8.5, 11.0))
    pages = [upright.rotate(-90, expand=True), upright.rotate(2.0, Image.Resampling.BICUBIC, fillcolor=255)]
    pdf = tmp_path / "fed.pdf"
    pages[0].save(pdf, "PDF", save_all=True, append_images=pages[1:], resolution=150)
    with Daemon(tmp_path, engine="auto") as daemon:
        drop(daemon.inbox, pdf, "fed.pdf")
        job = daemon.wait_for_job("fed.pdf", {"completed"}, timeout=180)
    document = pdfium.PdfDocument(str(pdf))
    for n in (1, 2):
        info = json.loads((daemon.job_dir(job) / "pages" / f"{n:04d}.json").read_text())
        width_pt, height_pt = document[n - 1].get_size()
        assert info["size_pt"] == pytest.approx([width_pt, height_pt], abs=0.01)
        scale, _ = fit_scale(width_pt, height_pt, 300, 5000)  # as the daemon renders it for Tesseract
        rendered = document[n - 1].render(scale=scale, grayscale=True).to_pil()
        assert rendered.size == (info["width"], info["height"])
        words = [w for block in info["blocks"] for line in block["lines"] for w in line["words"]]
        assert len(words) >= 30, f"page {n}: {len(words)} words"
        inked = [w["text"] for w in words if _ink(rendered, w["box_px"])[0] / _ink(rendered, w["box_px"])[1] > 0.03]
        assert len(inked) >= 0.95 * len(words), f"page {n}: words whose box holds no ink"
        mask = Image.new("1", rendered.size, 0)
        for word in words:
            mask.paste(1, tuple(round(v) for v in word["box_px"]))
        dark = rendered.point(lambda v: 255 if v < 128 else 0).convert("1")
        inside = sum(Image.composite(dark, Image.new("1", rendered.size, 0), mask).histogram()[1:])
        total = sum(dark.histogram()[1:])
        assert inside >= 0.9 * total, f"page {n}: the word boxes hold {inside / total:.0%} of the ink"
        scale = width_pt / info["width"]
        for word in words[:5]:
            assert word["box_pt"] == pytest.approx([v * scale for v in word["box_px"]], abs=0.05)
