"""What the render worker measures of a PDF page to choose its source (engines/text_trust.py):
how much of the page images cover; and, where its text layer is used, that text with its geometry.
Runs in the render child, with the page already loaded."""

from __future__ import annotations

import ctypes

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c


def image_cover(pdf_page: pdfium.PdfPage, most: int = 500) -> float:
    """The share of the page's area under images (overlaps counted twice, so at most 1.0); the
    first `most` images are enough to tell a scan."""
    left, bottom, right, top = pdf_page.get_bbox()
    area = max(1e-6, (right - left) * (top - bottom))
    covered = 0.0
    images = pdf_page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3)
    for n, image in enumerate(images):
        if n >= most:
            break
        x0, y0, x1, y1 = image.get_bounds()
        covered += max(0.0, min(x1, right) - max(x0, left)) * max(0.0, min(y1, top) - max(y0, bottom))
    return min(1.0, covered / area)


BOLD_WEIGHT = 600  # FPDFText_GetFontWeight; 0 or -1 where the font says nothing (base-14 fonts)


def text_spans(pdf_page: pdfium.PdfPage, textpage: pdfium.PdfTextPage) -> list[list]:
    """The text layer as runs of text in PDFium's order, each `[x0, top, x1, bottom, text, size,
    bold]`: its box in points on the page as it is shown (/Rotate applied, y from the top), its
    type size, and whether its font is bold. What engines/text_layout.py makes Markdown of."""
    width, height = pdf_page.get_size()  # as shown
    turn = pdf_page.get_rotation()
    spans = []
    for n in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(n)
        text = textpage.get_text_bounded(left, bottom, right, top).replace("\x02", "-")  # a line-end hyphen
        if not text.strip():
            continue
        index = textpage.get_index(left + min(1.0, (right - left) / 2), (bottom + top) / 2, 2.0, 2.0)
        size = pdfium_c.FPDFText_GetFontSize(textpage.raw, index) if index >= 0 else 0.0
        corners = [_shown(x, y, turn, width, height) for x, y in ((left, bottom), (right, top))]
        (x0, x1), (y0, y1) = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
        spans.append([x0, y0, x1, y1, text, round(size or (y1 - y0), 2), index >= 0 and _bold(textpage, index)])
    return spans


def _shown(x: float, y: float, turn: int, width: float, height: float) -> tuple[float, float]:
    """A point of the page's own space where it is on the page as shown, y from the top."""
    if turn == 90:
        return y, x
    if turn == 180:
        return width - x, y
    if turn == 270:
        return width - y, height - x
    return x, height - y


def _bold(textpage: pdfium.PdfTextPage, index: int) -> bool:
    if pdfium_c.FPDFText_GetFontWeight(textpage.raw, index) >= BOLD_WEIGHT:
        return True
    size = pdfium_c.FPDFText_GetFontInfo(textpage.raw, index, None, 0, None)
    if size <= 0:
        return False
    name = ctypes.create_string_buffer(size)
    pdfium_c.FPDFText_GetFontInfo(textpage.raw, index, name, size, None)
    return any(word in name.value.lower() for word in (b"bold", b"black", b"heavy"))
