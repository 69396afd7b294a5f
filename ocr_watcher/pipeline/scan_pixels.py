"""A scanned page's own pixels, taken instead of rendering the page where they are the same bitmap.

A scanner's PDF page is one image drawn over the whole page. Rendering it at the scan's own
resolution decodes the image and then resamples it 1:1 through its matrix (~60 ms for a letter page
at 300 dpi); the decoded image as it is costs ~6 ms. It is taken only where it is what the render
would give: the page holds that image and nothing else (no text, paths or annotations, so no forms),
drawn upright (not skewed, not mirrored) over the page's visible box, at exactly the pixel size of
the render, in DeviceGray or DeviceRGB at 8 bits a component. The page's /Rotate is applied by
turning the pixels. Any other page is rendered. A soft mask on such an image is not applied (PDFium
reports none without rendering); scanners do not write one on a page-sized photo of paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from ocr_watcher.pipeline.render_sizes import bitmap_size

_COLOUR_SPACES = {pdfium_c.FPDF_COLORSPACE_DEVICEGRAY: 8, pdfium_c.FPDF_COLORSPACE_DEVICERGB: 24}
# /Rotate turns the page clockwise; Pillow's transposes turn counter-clockwise.
_TURNS = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class ScanFacts:
    """What PDFium says of a page, without rendering it."""

    objects: int  # top-level page objects
    annotations: int
    image: bool  # the first object is an image
    matrix: tuple[float, float, float, float, float, float]  # the image's a b c d e f
    box: tuple[float, float, float, float]  # the visible box (left, bottom, right, top), page space
    pixels: tuple[int, int]  # the image's own width and height
    bits_per_pixel: int
    colour_space: int
    rotation: int  # /Rotate, degrees clockwise


def render_size(facts: ScanFacts, scale: float) -> tuple[int, int]:
    """The bitmap PDFium renders at `scale`, as the page is shown (/Rotate applied)."""
    left, bottom, right, top = facts.box
    width, height = bitmap_size(right - left, scale), bitmap_size(top - bottom, scale)
    return (height, width) if facts.rotation in (90, 270) else (width, height)


def takes_own_pixels(facts: ScanFacts, scale: float) -> bool:
    """Whether the image's own pixels, turned by /Rotate, are the page rendered at `scale`."""
    if facts.objects != 1 or facts.annotations or not facts.image:
        return False
    if _COLOUR_SPACES.get(facts.colour_space) != facts.bits_per_pixel or facts.rotation not in (0, 90, 180, 270):
        return False
    a, b, c, d, e, f = facts.matrix
    if b or c or a <= 0 or d <= 0:  # skewed, turned or mirrored: the render resamples
        return False
    slack = 0.5 / scale  # half a rendered pixel, in points
    left, bottom, right, top = facts.box
    edges = ((e, left), (f, bottom), (e + a, right), (f + d, top))
    if any(abs(drawn - visible) > slack for drawn, visible in edges):
        return False
    width, height = facts.pixels
    shown = (height, width) if facts.rotation in (90, 270) else (width, height)
    return shown == render_size(facts, scale)


def scan_facts(pdf_page: pdfium.PdfPage) -> tuple[ScanFacts, pdfium.PdfImage | None]:
    """What PDFium says of the page, and its first object where that is an image. A page of more
    than one object is told from its count alone (the image's details are left empty)."""
    raw = pdf_page.raw
    objects = pdfium_c.FPDFPage_CountObjects(raw)
    first = pdfium.PdfObject(pdfium_c.FPDFPage_GetObject(raw, 0), page=pdf_page, pdf=pdf_page.pdf) if objects else None
    image = first if objects == 1 and isinstance(first, pdfium.PdfImage) else None
    meta = image.get_metadata() if image is not None else None
    facts = ScanFacts(
        objects=objects,
        annotations=pdfium_c.FPDFPage_GetAnnotCount(raw),
        image=image is not None,
        matrix=tuple(image.get_matrix().get()) if image is not None else (0.0,) * 6,
        box=tuple(pdf_page.get_bbox()),
        pixels=(meta.width, meta.height) if meta is not None else (0, 0),
        bits_per_pixel=meta.bits_per_pixel if meta is not None else 0,
        colour_space=meta.colorspace if meta is not None else 0,
        rotation=pdf_page.get_rotation(),
    )
    return facts, image


def own_pixels(pdf_page: pdfium.PdfPage, scale: float, *, grayscale: bool) -> Image.Image | None:
    """The page's scan as the render at `scale` would give it (L or RGB), or None: render it."""
    try:
        facts, image = scan_facts(pdf_page)
        if image is None or not takes_own_pixels(facts, scale):
            return None
        decoded = image.get_bitmap(render=False)
    except pdfium.PdfiumError:  # what PDFium cannot tell or decode this way, the render reports
        return None
    try:
        # A stream that decodes to another size than its dictionary says: the render scales it to fit.
        if (decoded.width, decoded.height) != facts.pixels:
            return None
        pixels = decoded.to_pil()  # shares the bitmap's buffer: made into an image of its own here
        mode = "L" if grayscale else "RGB"
        pixels = pixels.convert(mode) if pixels.mode != mode else pixels.copy()
    finally:
        # PDFium owns this bitmap's buffer, so closing frees it; nothing refers to it any more (the
        # image above is a copy), which pypdfium2 cannot know and would warn of on every page.
        decoded.warn_on_close = False
        decoded.close()
    turn = _TURNS.get(facts.rotation)
    return pixels.transpose(turn) if turn is not None else pixels
