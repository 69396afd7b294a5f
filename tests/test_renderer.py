"""The render worker, through its parent-side client, on real generated PDFs and images."""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path

import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image, ImageOps

from ocr_watcher.engines.base import RenderSpec
from ocr_watcher.pipeline.render_sizes import bitmap_size, fit_scale
from ocr_watcher.pipeline.render_worker import pdf_load_problem, sniff
from ocr_watcher.pipeline.renderer import (
    EXIT_OUT_OF_MEMORY,
    InputError,
    RenderCrashed,
    RenderTimeout,
    RenderWorker,
    describe_exit,
)

from . import pdfgen

IMAGE = RenderSpec("image", dpi=300, max_side_px=5000)
TEXT = RenderSpec("text")
T = 30.0  # generous time limit for calls that are expected to finish


@pytest.fixture(scope="module")
def worker():
    with RenderWorker(memory_mb=1024) as w:
        yield w


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


def ink_box(path: Path) -> tuple[int, int, int, int]:
    """Bounding box of the dark pixels of a rendered page."""
    with Image.open(path) as image:
        box = ImageOps.invert(image.convert("L")).point(lambda v: 255 if v > 128 else 0).getbbox()
    assert box is not None, "the page rendered blank"
    return box


# --- probe ------------------------------------------------------------------------------------


def test_probe_counts_pages_of_a_born_digital_pdf(worker, files):
    pdf = pdfgen.text_pdf(files / "three.pdf", [["one"], ["two"], ["three"]])
    info = worker.probe(pdf, timeout=T)
    assert (info.kind, info.pages, info.encrypted, info.format) == ("pdf", 3, False, "PDF")


def test_probe_detects_images_by_content_not_name(worker, files):
    png = pdfgen.scanned_image(files / "scan.jpg", ["named jpg, really png"], "PNG")
    jpeg = pdfgen.scanned_image(files / "photo", ["no suffix at all"], "JPEG")
    tiff = pdfgen.multipage_tiff(files / "fax.tif", [["one"], ["two"], ["three"]])
    assert (worker.probe(png, timeout=T).format, worker.probe(png, timeout=T).pages) == ("PNG", 1)
    assert worker.probe(jpeg, timeout=T).format == "JPEG"
    info = worker.probe(tiff, timeout=T)
    assert (info.kind, info.pages, info.format) == ("image", 3, "TIFF")


def test_a_replaced_file_is_reopened_not_served_from_the_cache(worker, files):
    path = pdfgen.text_pdf(files / "replaced.pdf", [["a"], ["b"]])
    assert worker.probe(path, timeout=T).pages == 2
    pdfgen.text_pdf(path, [["a"], ["b"], ["c"]])
    assert worker.probe(path, timeout=T).pages == 3


# --- bad inputs -------------------------------------------------------------------------------


def input_error(worker: RenderWorker, path: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        worker.probe(path, timeout=T)
    return caught.value


def probe_outcome(worker: RenderWorker, path: Path) -> int | str:
    """The page count, or the error type the probe failed with."""
    try:
        return worker.probe(path, timeout=T).pages
    except InputError as exc:
        return exc.type


def test_encrypted_pdf_asks_for_the_password_to_be_removed(worker, files):
    plain = pdfgen.text_pdf(files / "plain.pdf", [["secret text"]])
    error = input_error(worker, pdfgen.encrypted_pdf(plain, files / "locked.pdf"))
    assert error.type == "password_required"
    assert "remove the password" in str(error)


def test_truncated_pdf_is_corrupt(worker, files):
    whole = pdfgen.text_pdf(files / "whole.pdf", [pdfgen.sample_lines(20, 1)] * 3)
    error = input_error(worker, pdfgen.truncated(whole, files / "half.pdf", 0.5))
    assert error.type == "corrupt_pdf"
    assert "Data format error" in str(error)  # PDFium's own reason is kept


def test_a_load_failure_is_named_from_its_own_file_not_from_the_one_before(files):
    """PDFium keeps one process-wide last-error code that only a failed load writes: a file without pages that
    comes after an encrypted one, in the same long-lived worker, is not blamed on a password."""
    plain = pdfgen.text_pdf(files / "plain-again.pdf", [["secret text"]])
    locked = pdfgen.encrypted_pdf(plain, files / "locked-first.pdf")
    pageless = pdfgen.pageless_pdf(files / "pageless.pdf")
    dangling = pdfgen.dangling_pages_pdf(files / "dangling.pdf")
    whole = pdfgen.text_pdf(files / "whole-again.pdf", [pdfgen.sample_lines(20, 1)] * 3)
    damaged = pdfgen.truncated(whole, files / "damaged.pdf", 0.5)
    sequence = [locked, pageless, dangling, locked, damaged, pageless, plain, pageless]
    with RenderWorker(memory_mb=1024) as w:
        seen, pids = [], set()
        for path in sequence:
            seen.append(probe_outcome(w, path))
            pids.add(w.pid)
    assert len(pids) == 1, "one worker process for the whole sequence"
    assert seen == [
        "password_required",
        "no_pages",
        "no_pages",
        "password_required",
        "corrupt_pdf",
        "no_pages",
        1,
        "no_pages",
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("noise.bin", os.urandom(4096), "unsupported_type"),
        ("noise.pdf", b"\x00garbage" + os.urandom(4096), "not_a_pdf"),
        ("empty.pdf", b"", "empty_file"),
        ("notes.txt", b"just some text\n", "unsupported_type"),
    ],
)
def test_files_that_are_not_documents_are_named_as_such(worker, files, name, content, expected):
    path = files / name
    path.write_bytes(content)
    assert input_error(worker, path).type == expected


def test_missing_file_is_unreadable(worker, files):
    assert input_error(worker, files / "gone.pdf").type == "unreadable"


def test_decompression_bomb_is_refused_before_decoding(worker, files):
    error = input_error(worker, pdfgen.png_bomb(files / "bomb.png"))
    assert error.type == "image_too_large"


def test_truncated_image_fails_when_its_pixels_are_decoded(worker, files):
    whole = pdfgen.scanned_image(files / "whole.png", pdfgen.sample_lines(5, 1))
    cut = pdfgen.truncated(whole, files / "cut.png", 0.5)
    assert worker.probe(cut, timeout=T).pages == 1  # the header is intact
    with pytest.raises(InputError) as caught:
        worker.render(cut, 1, IMAGE, files / "cut.pgm", timeout=T)
    assert caught.value.type == "corrupt_image"
    assert "truncated" in str(caught.value)


def test_page_out_of_range_is_a_caller_error(worker, files):
    pdf = pdfgen.text_pdf(files / "one.pdf", [["only page"]])
    with pytest.raises(ValueError, match="out of range"):
        worker.render(pdf, 2, IMAGE, files / "p2.pgm", timeout=T)
    assert worker.probe(pdf, timeout=T).pages == 1  # and the worker carries on


def test_unwritable_output_is_not_blamed_on_the_input(worker, files):
    pdf = pdfgen.text_pdf(files / "fine.pdf", [["fine"]])
    with pytest.raises(OSError, match="cannot write the rendered page"):
        worker.render(pdf, 1, IMAGE, files / "no-such-folder" / "p1.pgm", timeout=T)


# --- rendering --------------------------------------------------------------------------------


def test_text_layer_comes_back_verbatim(worker, files):
    lines = ["Hello (world) with a back\\slash", "second line here."]
    pdf = pdfgen.text_pdf(files / "text.pdf", [lines, ["page two"]])
    page = worker.render(pdf, 1, TEXT, files / "unused.pgm", timeout=T)
    assert page.image_path is None
    assert page.text == "\r\n".join(lines)
    assert worker.render(pdf, 2, TEXT, files / "unused.pgm", timeout=T).text == "page two"


@pytest.mark.parametrize(
    ("suffix", "grayscale", "mode"), [(".pgm", True, "L"), (".ppm", False, "RGB"), (".png", True, "L")]
)
def test_page_renders_at_the_requested_dpi_in_the_requested_format(worker, files, suffix, grayscale, mode):
    pdf = pdfgen.text_pdf(files / "letter.pdf", [pdfgen.sample_lines(10, 2)])
    out = files / f"letter{suffix}"
    page = worker.render(pdf, 1, RenderSpec("image", dpi=300, grayscale=grayscale), out, timeout=T)
    assert (page.image_path, page.width, page.height, page.scale_note) == (out, 2550, 3300, None)
    with Image.open(out) as image:
        assert (image.mode, image.size) == (mode, (2550, 3300))


def test_rotate_90_page_comes_out_landscape_with_horizontal_text(worker, files):
    # Given a portrait MediaBox with /Rotate 90, its text laid out to read upright once rotated
    pdf = pdfgen.text_pdf(files / "rot.pdf", [pdfgen.sample_lines(3, 3)], rotate=90)
    page = worker.render(pdf, 1, IMAGE, files / "rot.pgm", timeout=T)
    assert (page.width, page.height) == (3300, 2550)
    left, top, right, bottom = ink_box(files / "rot.pgm")
    assert right - left > 2 * (bottom - top)  # three lines of text: a wide, flat block
    assert top < page.height / 4  # at the top of the landscape page


def test_huge_page_is_rendered_small_not_shrunk_afterwards(worker, files):
    pdf = pdfgen.text_pdf(files / "huge.pdf", [["a 200 x 200 inch page"]], page_size=(14400, 14400))
    page = worker.render(pdf, 1, RenderSpec("image", dpi=300, max_side_px=5000), files / "huge.pgm", timeout=T)
    assert (page.width, page.height) == (5000, 5000)
    assert page.scale_note == "scaled down from 60000x60000 px to 5000x5000 px"


def test_image_page_applies_exif_orientation_and_size_cap(worker, files):
    jpeg = pdfgen.scanned_image(files / "phone.jpg", ["taken sideways"], "JPEG", exif_orientation=6)
    with Image.open(jpeg) as stored:
        assert stored.size == (600, 850)  # pixels stored portrait, EXIF says turn them
    page = worker.render(jpeg, 1, RenderSpec("image", max_side_px=425), files / "phone.pgm", timeout=T)
    assert (page.width, page.height) == (425, 300)
    assert page.scale_note == "scaled down from 850x600 px to 425x300 px"


def test_tiff_frame_is_selected_by_page_number(worker, files):
    tiff = pdfgen.multipage_tiff(files / "pages.tif", [["one"], [], ["three", "lines", "here"]])
    page2 = worker.render(tiff, 2, IMAGE, files / "t2.pgm", timeout=T)
    with Image.open(page2.image_path) as image:
        assert image.getextrema() == (255, 255)  # the blank frame
    worker.render(tiff, 3, IMAGE, files / "t3.pgm", timeout=T)
    _, top, _, bottom = ink_box(files / "t3.pgm")
    assert bottom - top > 80  # three lines of 28 px type


# --- limits: time, memory, crashes --------------------------------------------------------------


def test_slow_render_times_out_and_the_next_call_gets_a_fresh_worker(files):
    slow = pdfgen.slow_pdf(files / "slow.pdf")  # seconds of rasterising per page
    with RenderWorker() as w:
        first_pid = w.probe(slow, timeout=T) and w.pid
        with pytest.raises(RenderTimeout, match="longer than 1 s"):
            w.render(slow, 1, IMAGE, files / "slow.pgm", timeout=1.0)
        assert w.pid is None  # killed and reaped
        assert not (files / "slow.pgm").exists()
        assert w.probe(slow, timeout=T).pages == 1
        assert w.pid != first_pid


def test_render_over_the_memory_limit_crashes_the_worker_not_the_caller(files):
    pdf = pdfgen.text_pdf(files / "big.pdf", [["big"]], page_size=(14400, 14400))
    needs_400_mb = RenderSpec("image", dpi=100, max_side_px=20000)  # 20000 x 20000 gray
    with RenderWorker(memory_mb=256) as w:
        with pytest.raises(RenderCrashed, match=r"ran out of memory \(limit 256 MB\)"):
            w.render(pdf, 1, needs_400_mb, files / "big.pgm", timeout=T)
        page = w.render(pdf, 1, RenderSpec("image", dpi=10), files / "small.pgm", timeout=T)
        assert page.width == 2000


def test_worker_killed_by_a_signal_mid_render_is_reported_and_replaced(files):
    slow = pdfgen.slow_pdf(files / "slow-segv.pdf")
    with RenderWorker() as w:
        w.probe(slow, timeout=T)
        pid = w.pid
        assert pid is not None
        threading.Timer(0.5, os.kill, (pid, signal.SIGSEGV)).start()
        with pytest.raises(RenderCrashed, match="killed by SIGSEGV"):
            w.render(slow, 1, IMAGE, files / "segv.pgm", timeout=T)
        assert w.probe(slow, timeout=T).pages == 1


def test_worker_that_died_while_idle_is_replaced_silently(files):
    pdf = pdfgen.text_pdf(files / "idle.pdf", [["x"]])
    with RenderWorker() as w:
        w.probe(pdf, timeout=T)
        os.kill(w.pid, signal.SIGKILL)
        os.waitpid(w.pid, 0)
        assert w.probe(pdf, timeout=T).pages == 1


def test_worker_is_recycled_after_max_tasks(files):
    pdf = pdfgen.text_pdf(files / "recycle.pdf", [["x"]])
    with RenderWorker(max_tasks=2) as w:
        w.probe(pdf, timeout=T)
        first = w.pid
        w.probe(pdf, timeout=T)
        assert w.pid == first
        w.probe(pdf, timeout=T)
        assert w.pid != first


# --- pure parts -------------------------------------------------------------------------------


def test_fit_scale_gives_exact_sizes_and_caps_the_longest_side():
    scale, reduced = fit_scale(612, 792, 300, 5000)
    assert not reduced and (bitmap_size(612, scale), bitmap_size(792, scale)) == (2550, 3300)
    assert math.ceil(792 * scale) == 3300  # what PDFium itself computes
    scale, reduced = fit_scale(14400, 7200, 300, 5000)
    assert reduced and (math.ceil(14400 * scale), math.ceil(7200 * scale)) == (5000, 2500)
    assert fit_scale(612, 792, 300, 3300)[1] is False  # exactly at the cap is not "scaled down"


@pytest.mark.parametrize(
    ("opened", "err_code", "pages", "expected"),
    [
        (True, pdfium_c.FPDF_ERR_SUCCESS, 3, None),
        # Opened: the last-error code is an earlier file's, whatever it says.
        (True, pdfium_c.FPDF_ERR_PASSWORD, 3, None),
        (True, pdfium_c.FPDF_ERR_SUCCESS, 0, "no_pages"),
        (True, pdfium_c.FPDF_ERR_PASSWORD, 0, "no_pages"),
        (True, pdfium_c.FPDF_ERR_SECURITY, 0, "no_pages"),
        (True, pdfium_c.FPDF_ERR_FILE, 0, "no_pages"),
        (True, pdfium_c.FPDF_ERR_FORMAT, 0, "no_pages"),
        # Not opened: PDFium set the code for this file.
        (False, pdfium_c.FPDF_ERR_PASSWORD, 0, "password_required"),
        (False, pdfium_c.FPDF_ERR_SECURITY, 0, "unsupported_encryption"),
        (False, pdfium_c.FPDF_ERR_FILE, 0, "unreadable"),
        (False, pdfium_c.FPDF_ERR_FORMAT, 0, "corrupt_pdf"),
        (False, pdfium_c.FPDF_ERR_UNKNOWN, 0, "corrupt_pdf"),
        (False, pdfium_c.FPDF_ERR_SUCCESS, 0, "corrupt_pdf"),
        (False, 99, 0, "corrupt_pdf"),
    ],
)
def test_pdf_load_problem_trusts_the_error_code_only_when_the_load_failed(opened, err_code, pages, expected):
    problem = pdf_load_problem(opened=opened, err_code=err_code, pages=pages)
    assert (problem.type if problem else None) == expected


def test_pdf_load_problem_keeps_pdfiums_reason():
    assert "(PDFium: Data format error)" in pdf_load_problem(opened=False, err_code=3, pages=0).message
    assert "(PDFium: error 99)" in pdf_load_problem(opened=False, err_code=99, pages=0).message


def test_sniff_reads_magic_bytes():
    assert sniff(b"junk before %PDF-1.7") == "pdf"
    assert sniff(b"\x89PNG\r\n\x1a\n....") == "png"
    assert sniff(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff(b"II*\x00") == sniff(b"MM\x00*") == "tiff"
    assert sniff(b"GIF89a") is None


def test_exit_descriptions():
    assert describe_exit(EXIT_OUT_OF_MEMORY, 512) == "the render worker ran out of memory (limit 512 MB)"
    assert "SIGSEGV" in describe_exit(-signal.SIGSEGV, 512)
    assert "status 3" in describe_exit(3, 512)
