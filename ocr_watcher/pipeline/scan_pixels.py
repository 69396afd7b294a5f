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


def only_image(pdf_page: pdfium.PdfPage) -> pdfium.PdfImage | None:
    """The page's one object where that is an image; None for any other page (cheaply)."""
    if pdfium_c.FPDFPage_CountObjects(pdf_page.raw) != 1:
        return None
    first = pdfium.PdfObject(pdfium_c.FPDFPage_GetObject(pdf_page.raw, 0), page=pdf_page, pdf=pdf_page.pdf)
    return first if isinstance(first, pdfium.PdfImage) else None


def scan_facts(pdf_page: pdfium.PdfPage, image: pdfium.PdfImage) -> ScanFacts:
    meta = image.get_metadata()
    return ScanFacts(
        objects=pdfium_c.FPDFPage_CountObjects(pdf_page.raw),
        annotations=pdfium_c.FPDFPage_GetAnnotCount(pdf_page.raw),
        image=True,
        matrix=tuple(image.get_matrix().get()),
        box=tuple(pdf_page.get_bbox()),
        pixels=(meta.width, meta.height),
        bits_per_pixel=meta.bits_per_pixel,
        colour_space=meta.colorspace,
        rotation=pdf_page.get_rotation(),
    )


def own_pixels(pdf_page: pdfium.PdfPage, scale: float, *, grayscale: bool) -> Image.Image | None:
    """The page's scan as the render at `scale` would give it (L or RGB), or None: render it."""
    try:
        image = only_image(pdf_page)
        facts = None if image is None else scan_facts(pdf_page, image)
        if image is None or facts is None or not takes_own_pixels(facts, scale):
            return None
        decoded = image.get_bitmap(render=False)
    except pdfium.PdfiumError:  # what PDFium cannot tell or decode this way, the render reports
        return None
    try:
        pixels = decoded.to_pil()  # shares the bitmap's buffer: made into an image of its own here
        mode = "L" if grayscale else "RGB"
        pixels = pixels.convert(mode) if pixels.mode != mode else pixels.copy()
    finally:
        # PDFium owns this bitmap's buffer, so closing frees it; nothing refers to it any more (the
        # image above is a copy), which pypdfium2 cannot know and would warn of on every page.
        decoded.warn_on_close = False
        decoded.close()
    turn = _TURNS.get(facts.rotation)
    pixels = pixels.transpose(turn) if turn is not None else pixels
    # A stream that decodes to another size than its dictionary says: the render scales it to fit.
    return pixels if pixels.size == render_size(facts, scale) else None
