"""A scanned page's own pixels stand in for its render only where they are the same bitmap.

Real PDFs made the ways scanners make them (gray and colour JPEG pages, Flate pages, /Rotate set),
read back with PDFium: where the render worker takes the image's own pixels, they match the page
rendered at the same scale pixel for pixel (JPEG and resampling noise aside); where they would not
(another resolution, something drawn over the scan, the image not filling the page) it renders.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image, ImageChops, ImageStat
from pypdf import PdfReader, PdfWriter

from ocr_watcher.pipeline import render_worker
from ocr_watcher.pipeline.render_sizes import fit_scale
from ocr_watcher.pipeline.scan_pixels import ScanFacts, own_pixels, takes_own_pixels
from tests.pdfgen import draw_page, image_page_pdf, jpeg_page_pdf, sample_lines, scanned_pdf

DPI = 300
LETTER_IN = (8.5, 11.0)


def letter_scan(path: Path, *, dpi: int = DPI, colour: bool = False) -> Path:
    page = draw_page(sample_lines(30, seed=3, max_chars=60), dpi=dpi, size_in=LETTER_IN)
    if colour:  # a colour scan of the same paper: a faint yellow ground, blue ink
        page = Image.merge("RGB", (page, page, page.point(lambda v: 200 + v * 55 // 255)))
    page.save(path, "PDF", resolution=dpi)
    return path


def rotated(src: Path, dst: Path, turn: int) -> Path:
    writer = PdfWriter(clone_from=PdfReader(src))
    writer.pages[0].rotate(turn)
    with dst.open("wb") as fh:
        writer.write(fh)
    return dst


def scale_for(page: pdfium.PdfPage, dpi: int = DPI) -> float:
    return fit_scale(*page.get_size(), dpi, 10_000)[0]


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / len(a.getbands())


def taken_and_rendered(path: Path, *, grayscale: bool = True) -> tuple[Image.Image | None, Image.Image]:
    doc = pdfium.PdfDocument(path)
    try:
        page = doc[0]
        scale = scale_for(page)
        taken = own_pixels(page, scale, grayscale=grayscale)
        rendered = page.render(scale=scale, grayscale=grayscale, rev_byteorder=True).to_pil().copy()
        page.close()
        return taken, rendered.convert("L" if grayscale else "RGB")
    finally:
        doc.close()


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_a_gray_scan_at_the_render_resolution_is_taken_as_it_is_whichever_way_it_is_shown(tmp_path, turn):
    path = letter_scan(tmp_path / "scan.pdf")
    if turn:
        path = rotated(path, tmp_path / f"turned{turn}.pdf", turn)
    taken, rendered = taken_and_rendered(path)
    assert taken is not None, "a page that is one full-page 300 dpi scan was rendered"
    assert taken.mode == "L" and taken.size == rendered.size
    assert (taken.width > taken.height) == (turn in (90, 270))
    assert mean_difference(taken, rendered) < 1.0  # of 255: the same pixels


def test_taking_a_scans_pixels_says_nothing_in_the_log(tmp_path, caplog):
    """The render worker's log is the daemon's: a warning a page would be one line per page."""
    with caplog.at_level(logging.DEBUG):
        taken, _ = taken_and_rendered(letter_scan(tmp_path / "scan.pdf"))
    assert taken is not None
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_a_colour_scan_is_taken_in_colour_or_in_gray_as_the_engine_asks(tmp_path):
    path = letter_scan(tmp_path / "colour.pdf", colour=True)
    for grayscale in (False, True):
        taken, rendered = taken_and_rendered(path, grayscale=grayscale)
        assert taken is not None and taken.mode == rendered.mode and taken.size == rendered.size
        assert mean_difference(taken, rendered) < 1.5  # PDFium's gray and Pillow's differ in rounding


def test_a_flate_page_image_is_taken_too(tmp_path):
    page = draw_page(sample_lines(20, seed=5), dpi=DPI, size_in=LETTER_IN)
    path = image_page_pdf(tmp_path / "flate.pdf", page.width, page.height, 8, zlib.compress(page.tobytes()))
    taken, rendered = taken_and_rendered(path)
    assert taken is not None and mean_difference(taken, rendered) < 1.0


def test_pages_whose_render_differs_from_the_image_are_rendered(tmp_path):
    at_200 = scanned_pdf(tmp_path / "200dpi.pdf", [sample_lines(10)], dpi=200, size_in=LETTER_IN)
    page = draw_page(sample_lines(10), dpi=DPI, size_in=LETTER_IN)
    samples = zlib.compress(page.tobytes())
    with_text = image_page_pdf(tmp_path / "sandwich.pdf", page.width, page.height, 8, samples, "hidden words")
    for path, why in ((at_200, "a 200 dpi scan is resampled to 300 dpi"), (with_text, "text is drawn over it")):
        taken, _ = taken_and_rendered(path)
        assert taken is None, why


def test_a_jpeg_whose_dictionary_states_another_size_is_rendered(tmp_path):
    """A 150 dpi JPEG stated to be 2550 x 3300: PDFium decodes 1275 x 1650 and the render scales it
    to the page; its own pixels would be half the size the page's geometry is measured in."""
    page = draw_page(sample_lines(10), dpi=150, size_in=LETTER_IN)
    path = jpeg_page_pdf(tmp_path / "lying.pdf", page, (2550, 3300))
    taken, rendered = taken_and_rendered(path)
    assert taken is None
    assert rendered.size == (2550, 3300)


def test_the_render_worker_writes_the_scans_own_pixels_for_ocr(tmp_path):
    path = rotated(letter_scan(tmp_path / "scan.pdf"), tmp_path / "turned.pdf", 90)
    spec = {"kind": "image", "dpi": DPI, "max_side_px": 10_000, "grayscale": True}
    found = render_worker.render(render_worker.Documents(), path, 1, spec, tmp_path / "page.pgm")
    written = Image.open(found["image_path"])
    taken, rendered = taken_and_rendered(path)
    assert taken is not None and (found["width"], found["height"]) == written.size == taken.size
    assert ImageChops.difference(written, taken).getbbox() is None  # exactly the pixels taken
    assert found["size_pt"] == [792.0, 612.0]


FULL_PAGE = ScanFacts(
    objects=1,
    annotations=0,
    image=True,
    matrix=(612.0, 0.0, 0.0, 792.0, 0.0, 0.0),
    box=(0.0, 0.0, 612.0, 792.0),
    pixels=(2550, 3300),
    bits_per_pixel=8,
    colour_space=pdfium_c.FPDF_COLORSPACE_DEVICEGRAY,
    rotation=0,
)
SCALE = fit_scale(612, 792, DPI, 10_000)[0]


@pytest.mark.parametrize(
    ("change", "taken"),
    [
        ({}, True),
        ({"rotation": 90, "pixels": (2550, 3300)}, True),  # the box is turned, the pixels with it
        ({"colour_space": pdfium_c.FPDF_COLORSPACE_DEVICERGB, "bits_per_pixel": 24}, True),
        ({"matrix": (612.0, 0.0, 0.0, 792.0, 0.1, -0.1)}, True),  # under half a pixel off
        ({"objects": 2}, False),
        ({"annotations": 1}, False),  # a form field or a note drawn over it
        ({"image": False}, False),
        ({"pixels": (1700, 2200)}, False),  # 200 dpi: the render resamples
        ({"pixels": (5100, 6600)}, False),  # 600 dpi: the render shrinks it
        ({"matrix": (612.0, 0.0, 0.0, -792.0, 0.0, 792.0)}, False),  # drawn upside down
        ({"matrix": (612.0, 5.0, 0.0, 792.0, 0.0, 0.0)}, False),  # skewed
        ({"matrix": (600.0, 0.0, 0.0, 780.0, 6.0, 6.0)}, False),  # a margin round the scan
        ({"box": (0.0, 0.0, 612.0, 700.0)}, False),  # cropped: part of the image is shown
        ({"colour_space": pdfium_c.FPDF_COLORSPACE_DEVICECMYK, "bits_per_pixel": 32}, False),
        ({"colour_space": pdfium_c.FPDF_COLORSPACE_INDEXED}, False),
        ({"bits_per_pixel": 1}, False),
        ({"rotation": 45}, False),
    ],
)
def test_the_scans_pixels_are_taken_only_where_the_render_would_give_them(change, taken):
    facts = ScanFacts(**{**FULL_PAGE.__dict__, **change})
    assert takes_own_pixels(facts, SCALE) is taken
