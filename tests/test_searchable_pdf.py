"""result.pdf (pipeline/searchable_pdf.py): the input's pages untouched with invisible words where
the words are. First the pure rules (where a shown point lies in a page's own space, which pages get
words), then a real daemon on real scans made here: pages upright, with /Rotate 90, askew, a
born-digital page and a scan under a garbage OCR layer. result.pdf is read back with PDFium, not the
library that wrote it: same pages, sizes and images; its text has the Markdown's words, where the
words are on the page; the born-digital page keeps its own text and the garbage layer is gone."""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import ImageChops
from pypdf import PdfReader, PdfWriter
from rapidfuzz.distance import Levenshtein

from ocr_watcher.pipeline.searchable_pdf import PageText, frames_pdf, pdf_pages, shown_to_user, words_stream

from .daemon import Daemon, drop
from .fake_vllm import FakeVllm
from .pdfgen import concat_pdfs, draw_page, flow, image_page_pdf, multipage_tiff, slow_pdf, styled_pdf

CROP = (10.0, 20.0, 610.0, 820.0)  # a crop box 600 x 800 pt, not at the origin


@pytest.mark.parametrize(
    ("rotate", "top_left", "bottom_right"),
    [
        (0, (10, 820), (610, 20)),  # shown as it is: y flips
        (90, (10, 20), (610, 820)),  # turned clockwise for showing: the shown top left is user (x0, y0)
        (180, (610, 20), (10, 820)),
        (270, (610, 820), (10, 20)),
    ],
)
def test_a_shown_point_is_found_in_the_pages_own_space(rotate, top_left, bottom_right) -> None:
    to_user = shown_to_user(rotate, CROP)
    shown = (600, 800) if rotate in (0, 180) else (800, 600)
    assert to_user(0, 0) == pytest.approx(top_left)
    assert to_user(*shown) == pytest.approx(bottom_right)


def test_words_are_drawn_invisibly_along_their_boxes() -> None:
    stream = words_stream([("Hé", [100.0, 50.0, 120.0, 60.0]), ("", [0, 0, 1, 1])], shown_to_user(0, (0, 0, 600, 800)))
    assert stream.startswith(b"BT\n3 Tr\n") and stream.endswith(b"ET\n")
    assert b"1 0 0 1 100.00 742.00 Tm <004800E90020> Tj" in stream  # baseline a fifth of the box up
    assert b"10.00 Tf 200.00 Tz" in stream  # 2 glyphs half an em (5 pt) wide, stretched to 20 pt
    assert stream.count(b"Tj") == 1  # an empty word draws nothing


def test_which_pages_get_words() -> None:
    word = {"text": "Total", "box_pt": [1, 2, 3, 4]}
    blocks = [{"kind": "text", "lines": [{"words": [word, {"text": "px only", "box_px": [1, 2, 3, 4]}]}]}]
    pages = pdf_pages(
        [
            {"page": 1, "status": "done", "blocks": blocks},
            {"page": 2, "status": "done", "source": "text_layer", "blocks": blocks},  # keeps its own text
            {"page": 3, "status": "failed"},
            {"page": 4, "status": "done"},  # an engine without word boxes
        ]
    )
    assert pages == {1: PageText([("Total", [1, 2, 3, 4])], strip=True)}


REPORT = [
    "Harbour traffic grew in every quarter of the year while the",
    "number of ships waiting outside the port fell by a third.",
    "Revenue from container handling reached a new record.",
]
GARBAGE = ["Tbq qnxk brwn fxjs jmps vr th lzy dgs", "wth grt spd nd prcsn rdng"] * 8


def _scan(source: Path, out: Path, turn: float = 0.0, specks: int = 0) -> Path:
    """The first page of `source` as a scanner gives it at 200 dpi: turned `turn` degrees, with
    `specks` dark specks of dust (seeded)."""
    image = pdfium.PdfDocument(str(source))[0].render(scale=200 / 72, grayscale=True).to_pil()
    if turn:
        image = image.rotate(turn, resample=3, fillcolor=255)
    rng = random.Random(specks)
    for _ in range(specks):
        x, y = rng.randrange(image.width - 3), rng.randrange(image.height - 3)
        image.paste(rng.randrange(0, 90), (x, y, x + rng.randint(1, 3), y + rng.randint(1, 3)))
    image.save(out, "PDF", resolution=200)
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]{3,}", text.lower())


def _recall(expected: list[str], found: list[str]) -> float:
    pool = list(found)
    hits = 0
    for word in expected:
        match = next((w for w in pool if Levenshtein.normalized_distance(w, word) <= 0.2), None)
        if match is not None:
            pool.remove(match)
            hits += 1
    return hits / max(1, len(expected))


def _images(pdf: Path) -> list[list[bytes]]:
    """Each page's image XObjects, as the bytes stored in the file."""
    found = []
    for page in PdfReader(pdf).pages:
        xobjects = page["/Resources"].get("/XObject", {})
        found.append(sorted(xobjects[name].get_object().get_data() for name in xobjects))
    return found


def test_result_pdf_is_the_input_made_searchable(tmp_path: Path) -> None:
    """Given a 5-page PDF: a scan, the same scan with /Rotate 90, a dusty scan 1.5 degrees askew, a
    born-digital page and a scan under an invisible garbage OCR layer, when the daemon (engine auto,
    outputs pdf and json) reads it, then result.pdf has the input's pages, sizes, rotations and images; PDFium
    finds in each page the words of its Markdown (recall >= 0.9); on the upright and the turned scan
    each word lies where the word is on the page; the born-digital page's text is its own, not doubled; and
    the garbage layer is gone."""
    digital = styled_pdf(tmp_path / "digital.pdf", [flow(REPORT, 72, 120, size=14, leading=20)])
    upright = _scan(digital, tmp_path / "upright.pdf")
    turned = PdfWriter(clone_from=upright)
    turned.pages[0].rotate(90)
    turned.write(tmp_path / "turned.pdf")
    askew = _scan(digital, tmp_path / "askew.pdf", turn=1.5, specks=3000)
    one = draw_page(REPORT, dpi=100, size_in=(8.5, 11.0)).convert("L")
    garbage = image_page_pdf(
        tmp_path / "garbage.pdf", one.width, one.height, 8, zlib.compress(one.tobytes()), GARBAGE, invisible=True
    )
    parts = [upright, tmp_path / "turned.pdf", askew, digital, garbage]
    source = concat_pdfs(tmp_path / "harbour.pdf", parts)
    with Daemon(tmp_path, engine="auto", profiles={"default": {"outputs": ["pdf", "json"]}}) as daemon:
        drop(daemon.inbox, source)
        job = daemon.wait_for_job("harbour.pdf", {"completed"}, timeout=180)
    job_dir = daemon.job_dir(job)
    result = job_dir / "result.pdf"
    done = json.loads((job_dir / "DONE").read_text())
    assert {"result.pdf", "result.json"} <= {f["name"] for f in done["files"]}
    collected = json.loads((job_dir / "result.json").read_text())  # its schema: checked after every test
    assert collected["pages_total"] == 5
    assert collected["pages"] == [json.loads((job_dir / "pages" / f"{n:04d}.json").read_text()) for n in range(1, 6)]

    before, after = PdfReader(source), PdfReader(result)
    assert len(after.pages) == len(before.pages) == 5
    for old, new in zip(before.pages, after.pages, strict=True):
        assert [float(v) for v in new.mediabox] == [float(v) for v in old.mediabox]
        assert new.rotation == old.rotation
    assert _images(result) == _images(source)

    document = pdfium.PdfDocument(str(result))
    texts = [document[n].get_textpage().get_text_bounded() for n in range(5)]
    for n in range(5):
        markdown = (job_dir / "pages" / f"{n + 1:04d}.md").read_text()
        assert _recall(_words(markdown), _words(texts[n])) >= 0.9, (n + 1, texts[n])
    assert not {"qnxk", "brwn", "fxjs"} & set(_words(texts[4])), "the garbage layer is still there"
    own = pdfium.PdfDocument(str(digital))[0].get_textpage().get_text_bounded()
    assert " ".join(texts[3].split()) == " ".join(own.split()), "the born-digital page got a second text layer"

    # On the upright scan and on the one shown turned (/Rotate 90: the same scan in the page's own
    # space), each word found lies over the same word of the page it was scanned from.
    truth = pdfium.PdfDocument(str(digital))[0].get_textpage()
    for n in (0, 1):
        found = document[n].get_textpage()
        for word in ("Harbour", "traffic", "quarter", "ships", "Revenue", "container", "record"):
            expected, got = _box_of(truth, word), _box_of(found, word)
            assert got is not None, f"page {n + 1}: {word} is not in result.pdf's text"
            assert _overlap(expected, got) > 0.3, (n + 1, word, expected, got)


def _box_of(textpage: pdfium.PdfTextPage, word: str) -> tuple[float, float, float, float] | None:
    searcher = textpage.search(word, match_case=False, match_whole_word=True)
    hit = searcher.get_next()
    if hit is None:
        return None
    start, count = hit
    boxes = [textpage.get_charbox(i) for i in range(start, start + count)]
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / max(smaller, 1e-6)


def test_vllm_blocks_land_in_their_boxes(tmp_path: Path) -> None:
    """Given the vllm engine against the contract double (tests/fake_vllm.py: canned DeepSeek-OCR
    grounding output, no model), when a scanned page is read with outputs pdf, then the page JSON has
    the grounding regions as blocks of their kinds, and in result.pdf each block's text lies inside
    its block's box (PDFium reads it back from there)."""
    with FakeVllm() as server:
        config = {"servers": [server.url], "max_in_flight": 4}
        with Daemon(tmp_path, engine="vllm", vllm=config, profiles={"default": {"outputs": ["pdf"]}}) as daemon:
            drop(daemon.inbox, _scan(styled_pdf(tmp_path / "one.pdf", [flow(REPORT, 72, 120)]), tmp_path / "scan.pdf"))
            job = daemon.wait_for_job("scan.pdf", {"completed"}, timeout=60)
    job_dir = daemon.job_dir(job)
    info = json.loads((job_dir / "pages" / "0001.json").read_text())
    assert [block["kind"] for block in info["blocks"]] == ["title", "text", "figure", "table"]
    page = pdfium.PdfDocument(str(job_dir / "result.pdf"))[0]
    height = page.get_size()[1]
    textpage = page.get_textpage()
    for block in info["blocks"]:
        for line in block["lines"]:
            left, top, right, bottom = line["box_pt"]
            inside = textpage.get_text_bounded(left - 1, height - bottom - 1, right + 1, height - top + 1)
            assert " ".join(inside.split()) == line["text"], (block["kind"], inside)
    assert "Stand-in page" in textpage.get_text_bounded()


def test_an_image_input_becomes_a_searchable_pdf_of_its_frames(tmp_path: Path) -> None:
    """Given a two-page TIFF at 200 dpi, when it is read with outputs pdf, then result.pdf has a page
    per frame, of the frame's size at its resolution, showing the frame, with its Markdown's words."""
    pages = [REPORT[:2], REPORT[1:]]
    tiff = multipage_tiff(tmp_path / "fax.tiff", pages)
    with Daemon(tmp_path, engine="auto", profiles={"default": {"outputs": ["pdf"]}}) as daemon:
        drop(daemon.inbox, tiff)
        job = daemon.wait_for_job("fax.tiff", {"completed"}, timeout=120)
    job_dir = daemon.job_dir(job)
    document = pdfium.PdfDocument(str(job_dir / "result.pdf"))
    assert len(document) == 2
    for n in range(2):
        assert document[n].get_size() == pytest.approx((4.25 * 72, 3.0 * 72), abs=0.5)  # 850 x 600 px at 200 dpi
        (image,) = [o for o in document[n].get_objects() if o.type == pdfium_c.FPDF_PAGEOBJ_IMAGE]
        assert image.get_px_size() == (850, 600)
        markdown = (job_dir / "pages" / f"{n + 1:04d}.md").read_text()
        assert _recall(_words(markdown), _words(document[n].get_textpage().get_text_bounded())) >= 0.9


def test_a_bilevel_tiff_stays_bilevel_and_exact_in_its_pdf(tmp_path: Path) -> None:
    """Given a two-frame black-and-white TIFF (CCITT G4, as fax machines and scanners write it), its
    PDF of frames holds 1-bit images whose pixels are the frames' exactly; a gray frame stays gray."""
    frames = [draw_page(REPORT[n : n + 2], dpi=200).point(lambda v: 255 if v > 128 else 0).convert("1") for n in (0, 1)]
    tiff = tmp_path / "fax.tiff"
    frames[0].save(tiff, "TIFF", save_all=True, append_images=frames[1:], compression="group4", dpi=(200, 200))
    document = pdfium.PdfDocument(frames_pdf(tiff, [[306.0, 216.0]] * 2))
    assert len(document) == 2
    for n, frame in enumerate(frames):
        (image,) = [o for o in document[n].get_objects() if o.type == pdfium_c.FPDF_PAGEOBJ_IMAGE]
        assert image.get_metadata().bits_per_pixel == 1
        assert image.get_filters() == ["CCITTFaxDecode"]
        decoded = image.get_bitmap(render=False).to_pil().convert("L")
        assert ImageChops.difference(decoded, frame.convert("L")).getbbox() is None, f"frame {n + 1} changed"
    gray = tmp_path / "gray.tiff"
    frames[0].convert("L").save(gray, "TIFF", dpi=(200, 200))
    (image,) = list(pdfium.PdfDocument(frames_pdf(gray, [[306.0, 216.0]]))[0].get_objects())
    assert image.get_metadata().bits_per_pixel == 8


def test_a_page_that_failed_stays_as_it_was(tmp_path: Path) -> None:
    """Given a 3-page PDF whose last page takes far longer to render than the render timeout, when it
    is read with outputs pdf and json (half the pages may fail), then the job completes with that
    page failed: result.pdf has all three pages, the failed one exactly as it came (its content, no
    text added), and result.json and result_metadata.json list it as failed."""
    scans = [_scan(styled_pdf(tmp_path / f"d{n}.pdf", [flow(REPORT, 72, 120)]), tmp_path / f"s{n}.pdf") for n in (1, 2)]
    source = concat_pdfs(tmp_path / "partly.pdf", [*scans, slow_pdf(tmp_path / "slow.pdf", shapes=3000)])
    pipeline = {"render_timeout_seconds": 2, "page_retries": 0, "max_page_error_rate": 0.5}
    with Daemon(
        tmp_path, engine="auto", pipeline=pipeline, profiles={"default": {"outputs": ["pdf", "json"]}}
    ) as daemon:
        drop(daemon.inbox, source)
        job = daemon.wait_for_job("partly.pdf", {"completed"}, timeout=120)
    job_dir = daemon.job_dir(job)
    assert job["progress"]["pages_failed"] == 1
    assert json.loads((job_dir / "result.json").read_text())["pages"][2]["status"] == "failed"
    assert json.loads((job_dir / "result_metadata.json").read_text())["pages"][2]["status"] == "failed"
    before, after = PdfReader(source), PdfReader(job_dir / "result.pdf")
    assert len(after.pages) == 3
    assert after.pages[2].get_contents().get_data() == before.pages[2].get_contents().get_data()
    document = pdfium.PdfDocument(str(job_dir / "result.pdf"))
    assert document[2].get_textpage().get_text_bounded().strip() == ""
    assert "Harbour" in document[0].get_textpage().get_text_bounded()
