"""result.pdf: the input's own pages, untouched, with invisible text where the words are, so that
search, select and copy work in ordinary PDF viewers.

The words come from the page JSON (engines/geometry.py: `box_pt` on the page as it is shown). Each
is drawn in text render mode 3 (invisible) in a font that needs no glyphs: a Type0 font whose
2-byte codes are the characters' Unicode values, with a ToUnicode map saying so, stretched (Tz) to
the word's box. The page's own content stays as it was, wrapped in q/Q so that nothing it leaves
set changes where the words land; pages read from their own text layer get nothing added, and a
page whose text layer was garbage and was OCRed loses that layer first (no doubled text). Written
with pypdf (BSD); what is drawn is decided by pure functions of the boxes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, ImageSequence
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    ContentStream,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    TextStringObject,
)

from ..spool.model import JobMeta
from ..spool.store import JobStore
from .render_sizes import upright

FONT = "/OCRWatcherText"
_SHOW_TEXT = {b"Tj", b"TJ", b"'", b'"'}
_WIDTH = 500  # every glyph's advance, in thousandths of the type size (the font's /DW)
_DESCENT = 0.2  # share of a word's box below its baseline

Box = list[float]


@dataclass
class PageText:
    """What goes onto one page: its words (text, box_pt); `strip`: remove its own invisible text
    first (an earlier OCR layer), which never changes how the page looks."""

    words: list[tuple[str, Box]] = field(default_factory=list)
    strip: bool = False
    degrees: float = 0.0  # how the page was turned to be read (rotation + skew): the words' direction


def pdf_pages(infos: Iterable[dict[str, Any]]) -> dict[int, PageText]:
    """From the page files: which pages get words, and which. A page read from its own text layer
    keeps it and gets none; a page OCRed gets its words (where the engine gives lines only, as
    DeepSeek-OCR's blocks, each line's text stretched across its box), over its own invisible text
    removed; a page that failed, or whose engine gives no boxes, stays as it is."""
    pages: dict[int, PageText] = {}
    for info in infos:
        if info.get("status") != "done" or info.get("source") == "text_layer":
            continue
        words = [
            (word["text"], word["box_pt"])
            for block in info.get("blocks") or []
            for line in block.get("lines", [])
            for word in line.get("words") or [line]  # an engine with no word boxes: the line's text
            if "box_pt" in word and word.get("text")
        ]
        if words:
            degrees = float(info.get("rotation") or 0) + float(info.get("skew") or 0)
            pages[int(info["page"])] = PageText(words, strip=True, degrees=degrees)
    return pages


Point = Callable[[float, float], tuple[float, float]]


def shown_to_user(rotate: int, crop: tuple[float, float, float, float]) -> Point:
    """A point on the page as shown (its /Rotate applied, y down from the crop box's top left) → the
    same point in the page's own user space (y up), for /Rotate 0, 90, 180 or 270."""
    x0, y0, x1, y1 = crop
    if rotate == 90:
        return lambda x, y: (x0 + y, y0 + x)
    if rotate == 180:
        return lambda x, y: (x1 - x, y0 + y)
    if rotate == 270:
        return lambda x, y: (x1 - y, y1 - x)
    return lambda x, y: (x0 + x, y1 - y)


def words_stream(words: Iterable[tuple[str, Box]], to_user: Point, degrees: float = 0.0) -> bytes:
    """The content stream that draws `words` invisibly, each along its box on the shown page. The
    words were read with the page turned clockwise by `degrees` (rotation + skew), so on the shown
    page they run that much anticlockwise of left to right: a page read turned 270 has its words
    running down."""
    turn = math.radians(-degrees)
    along = (math.cos(turn), math.sin(turn))  # reading direction on the shown page (y down)
    up = (math.sin(turn), -math.cos(turn))
    upright = abs(along[0]) >= abs(along[1])  # the word's length lies along the box's width
    ops = ["BT", "3 Tr"]
    for text, (left, top, right, bottom) in words:
        codes = _codes(text)
        length, height = (right - left, bottom - top) if upright else (bottom - top, right - left)
        if not codes or height <= 0 or length <= 0:
            continue
        cx, cy = (left + right) / 2, (top + bottom) / 2
        lift = (0.5 - _DESCENT) * height  # from the centre down to the baseline
        sx, sy = cx - along[0] * length / 2 - up[0] * lift, cy - along[1] * length / 2 - up[1] * lift
        ox, oy = to_user(sx, sy)
        ex, ey = to_user(sx + along[0], sy + along[1])
        ux, uy = to_user(sx + up[0], sy + up[1])
        stretch = 100 * length / (len(codes) // 4 * height * _WIDTH / 1000)
        ops.append(f"{FONT} {height:.2f} Tf {stretch:.2f} Tz")
        # A space after each word, past its box: extracted text has its words apart.
        ops.append(f"{ex - ox:.4g} {ey - oy:.4g} {ux - ox:.4g} {uy - oy:.4g} {ox:.2f} {oy:.2f} Tm <{codes}0020> Tj")
    ops.append("ET")
    return ("\n".join(ops) + "\n").encode("ascii")


def _codes(text: str) -> str:
    """The word as 2-byte codes in hex: its characters' Unicode values (outside the basic plane: U+FFFD)."""
    return "".join(f"{ord(c) if ord(c) <= 0xFFFF else 0xFFFD:04X}" for c in text if c.isprintable())


def job_pdf(store: JobStore, meta: JobMeta) -> bytes:
    """A job's result.pdf from its input and its page files: a PDF's own pages, or an image's
    frames made into pages of the size its page files give (ValueError for other inputs)."""
    total = meta.progress.pages_total or 0
    infos = [store.read_page_info(meta.job_id, page) or {} for page in range(1, total + 1)]
    source = store.paths(meta.job_id).input(meta.input_file)
    if meta.kind == "image":
        sizes = [info.get("size_pt") for info in infos]
        return searchable_pdf(io.BytesIO(frames_pdf(source, sizes)), pdf_pages(infos))
    if meta.kind != "pdf":
        raise ValueError(f"result.pdf is made from PDF and image inputs, not {meta.kind or 'this kind of file'}")
    return searchable_pdf(source, pdf_pages(infos))


def frames_pdf(image_path: Path, sizes_pt: list[list[float] | None]) -> bytes:
    """An image's frames (a multi-page TIFF's every page) as a PDF, each page `sizes_pt` points as
    the render worker measured it (the image's stated resolution), turned upright as it was read.
    A bilevel frame (a fax, a scanner's black and white) stays bilevel: CCITT G4 in the PDF, its
    pixels as they were; a gray or colour frame is stored as JPEG at quality 92."""
    with Image.open(image_path) as image:
        pages = []
        for frame in ImageSequence.Iterator(image):
            if frame.mode == "1":
                pages.append(ImageOps.exif_transpose(frame))  # a copy: the iterator reuses `frame`
            else:
                pages.append(upright(frame, grayscale=frame.mode in ("L", "I;16")))
    size = next((s for s in sizes_pt if s), None)
    resolution = 72.0 * pages[0].width / size[0] if size else 72.0
    writer = PdfWriter()
    for page in pages:  # one save each: Pillow hands every page the first one's options, and a
        one = io.BytesIO()  # quality for JPEG is refused by the bilevel (TIFF G4) encoder
        page.save(one, "PDF", resolution=resolution, **({} if page.mode == "1" else {"quality": 92}))
        writer.append(PdfReader(one))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def searchable_pdf(source: Path | io.BytesIO, pages: dict[int, PageText]) -> bytes:
    """`source` with the words of `pages` (page number → PageText; other pages unchanged)."""
    reader = PdfReader(source)
    writer = PdfWriter(clone_from=reader)
    font = writer._add_object(_font())  # pypdf's way to add an indirect object
    for number, text in pages.items():
        page = writer.pages[number - 1]
        if text.strip:
            _remove_invisible_text(page, writer)
        if not text.words:
            continue
        crop = tuple(float(v) for v in page.cropbox)
        stream = DecodedStreamObject()
        stream.set_data(words_stream(text.words, shown_to_user(page.rotation % 360, crop), text.degrees))  # type: ignore[arg-type]
        _append_content(page, writer, stream)
        resources = page.setdefault(NameObject("/Resources"), DictionaryObject()).get_object()
        fonts = resources.setdefault(NameObject("/Font"), DictionaryObject()).get_object()
        fonts[NameObject(FONT)] = font
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _append_content(page: Any, writer: PdfWriter, stream: DecodedStreamObject) -> None:
    """The page's own content between q and Q, then `stream`."""
    before, after = DecodedStreamObject(), DecodedStreamObject()
    before.set_data(b"q\n")
    after.set_data(b"\nQ\n")
    raw = page.raw_get("/Contents") if "/Contents" in page else None  # the reference, not the stream
    existing = raw.get_object() if raw is not None else None
    own = list(existing) if isinstance(existing, ArrayObject) else ([raw] if raw is not None else [])
    parts = [writer._add_object(before), *own, writer._add_object(after), writer._add_object(stream)]
    page[NameObject("/Contents")] = ArrayObject(parts)


def _remove_invisible_text(page: Any, writer: PdfWriter) -> None:
    """The page's text drawn invisibly (render mode 3: an earlier OCR layer) taken out: only its
    show-text operators go, so the text state and everything that shows stay as they were."""
    contents = page.get_contents()
    if contents is None:
        return
    stream = ContentStream(contents, writer)
    kept: list[tuple[Any, bytes]] = []
    mode, saved = 0, []
    for operands, operator in stream.operations:
        if operator == b"q":
            saved.append(mode)
        elif operator == b"Q" and saved:
            mode = saved.pop()
        elif operator == b"Tr" and operands:
            mode = int(operands[0])
        elif operator in _SHOW_TEXT and mode == 3:
            continue
        kept.append((operands, operator))
    if len(kept) != len(stream.operations):
        stream.operations = kept
        page.replace_contents(stream)


def _font() -> DictionaryObject:
    """A Type0 font without glyphs: codes are Unicode values (ToUnicode says so); every glyph is half
    an em wide, and nothing is ever drawn with it (render mode 3)."""
    cmap = DecodedStreamObject()
    cmap.set_data(_TO_UNICODE)
    descriptor = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/FontDescriptor"),
            NameObject("/FontName"): NameObject("/GlyphLessFont"),
            NameObject("/Flags"): NumberObject(4),
            NameObject("/FontBBox"): ArrayObject([NumberObject(v) for v in (0, -200, _WIDTH, 800)]),
            NameObject("/ItalicAngle"): NumberObject(0),
            NameObject("/Ascent"): NumberObject(800),
            NameObject("/Descent"): NumberObject(-200),
            NameObject("/CapHeight"): NumberObject(800),
            NameObject("/StemV"): NumberObject(80),
        }
    )
    cid_font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/CIDFontType2"),
            NameObject("/BaseFont"): NameObject("/GlyphLessFont"),
            NameObject("/CIDSystemInfo"): DictionaryObject(
                {
                    NameObject("/Registry"): TextStringObject("Adobe"),
                    NameObject("/Ordering"): TextStringObject("Identity"),
                    NameObject("/Supplement"): NumberObject(0),
                }
            ),
            NameObject("/FontDescriptor"): descriptor,
            NameObject("/DW"): NumberObject(_WIDTH),
            NameObject("/CIDToGIDMap"): NameObject("/Identity"),
        }
    )
    return DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type0"),
            NameObject("/BaseFont"): NameObject("/GlyphLessFont"),
            NameObject("/Encoding"): NameObject("/Identity-H"),
            NameObject("/DescendantFonts"): ArrayObject([cid_font]),
            NameObject("/ToUnicode"): cmap,
        }
    )


_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
/CMapType 2 def
1 begincodespacerange
<0000> <FFFF>
endcodespacerange
1 beginbfrange
<0000> <FFFF> <0000>
endbfrange
endcmap
CMapName currentdict /CMap defineresource pop
end
end
"""
