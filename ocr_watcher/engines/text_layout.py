"""Structure from a PDF text layer's geometry: its runs of text (pipeline/page_source.py: box, type
size, weight) become lines and paragraphs, which the Markdown of Tesseract's layout is made from
too (markdown.layout_to_markdown): headings from larger or bold type, lists from their markers,
hyphenated words rejoined. Pure functions, no I/O.

Lines: runs in PDFium's order that sit on the same band of the page. Paragraphs end where the gap to
the next line is larger than the lines' own spacing, where the type changes size or weight, where
the text moves back up the page (a new column), and after a short line that ends a sentence (the
last line of a justified or ragged paragraph).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import median

from .tsv_layout import Line, Paragraph

PARAGRAPH_GAP = 0.8  # a gap between lines over this many type sizes (beyond their usual spacing) ends a paragraph
SIZE_CHANGE = 0.15
WORD_GAP = 1.5  # runs further apart than this many type sizes are not one line: a column's gutter
COLUMN_MIN_WIDTH = 100.0  # points: narrower blocks side by side are a table's cells, read row by row
CELL_GAP = 2.0  # words of a Tesseract line further apart than this many line heights: other cells
MAX_CELL_WORDS = 4  # a table's cells hold a few words (median); lines of prose side by side are columns
SHORT_LINE = 0.7  # a line under this share of the page's widest, ending a sentence, ends its paragraph
_SENTENCE_END = re.compile(r"[.!?:][\"'”’)\]]*$")


@dataclass(frozen=True)
class Span:
    x0: float
    top: float
    x1: float
    bottom: float
    text: str
    size: float
    bold: bool


@dataclass
class _Placed:
    line: Line
    x0: float
    top: float
    x1: float
    bottom: float


def parse_spans(raw: list[list]) -> list[Span]:
    """The render worker's `[x0, top, x1, bottom, text, size, bold]` lists as Spans."""
    return [Span(float(a), float(b), float(c), float(d), str(t), float(s), bool(w)) for a, b, c, d, t, s, w in raw]


def lines_of(spans: list[Span]) -> list[_Placed]:
    """Runs on the same band of the page, each after the one before it, make one line."""
    placed: list[_Placed] = []
    for span in spans:
        words = span.text.split()
        if not words:
            continue
        last = placed[-1] if placed else None
        middle = (span.top + span.bottom) / 2
        near = last is not None and last.x1 - 1.0 <= span.x0 <= last.x1 + WORD_GAP * max(span.size, 1.0)
        if last is not None and near and last.top <= middle <= last.bottom:
            last.line.words.extend(words)
            last.line.bold = last.line.bold and span.bold
            last.x1, last.bottom = max(last.x1, span.x1), max(last.bottom, span.bottom)
            continue
        line = Line(words=words, height=span.size, bold=span.bold)
        placed.append(_Placed(line, span.x0, span.top, span.x1, span.bottom))
    return placed


def reading_order(placed: list[_Placed]) -> list[_Placed]:
    """Lines in PDFium's order, unless some stand side by side (columns whose text the PDF does not
    give column by column): then cut the page where the widest empty band runs, across or down,
    and read the parts top to bottom, left to right (an XY cut)."""
    side_by_side = any(
        a.top < b.bottom and b.top < a.bottom and (a.x1 < b.x0 or b.x1 < a.x0)
        for n, a in enumerate(placed)
        for b in placed[n + 1 : n + 8]
    )
    return _cut(placed) if side_by_side else placed


def _cut(lines: list[_Placed]) -> list[_Placed]:
    if len(lines) < 2:
        return lines
    across = _gaps(lines, lambda p: (p.top, p.bottom))
    down = [g for g in _gaps(lines, lambda p: (p.x0, p.x1)) if _columns_at(lines, g[1])]
    best = max([*((g, "y") for g in across), *((g, "x") for g in down)], default=None, key=lambda c: c[0][0])
    if best is None:
        return sorted(lines, key=lambda p: (p.top, p.x0))
    (_, at), axis = best
    first = [p for p in lines if (p.bottom if axis == "y" else p.x1) <= at]
    return _cut(first) + _cut([p for p in lines if (p.bottom if axis == "y" else p.x1) > at])


def _gaps(lines: list[_Placed], extent) -> list[tuple[float, float]]:
    """(width, where) of each empty band between the lines along one axis."""
    found, reach = [], None
    for start, end in sorted(extent(p) for p in lines):
        if reach is not None and start > reach:
            found.append((start - reach, (start + reach) / 2))
        reach = end if reach is None else max(reach, end)
    return found


def _columns_at(lines: list[_Placed], at: float) -> bool:
    """A cut down the page at `at` divides columns of text, not a table's cells."""
    left = [p.x1 - p.x0 for p in lines if p.x1 <= at]
    right = [p.x1 - p.x0 for p in lines if p.x0 > at]
    return min(median(left), median(right)) >= COLUMN_MIN_WIDTH


def paragraphs_of(placed: list[_Placed]) -> list[Paragraph]:
    if not placed:
        return []
    gaps = [b.top - a.bottom for a, b in zip(placed, placed[1:], strict=False) if b.top >= a.bottom - 1.0]
    spacing = max(0.0, median(gaps)) if gaps else 0.0  # the usual space between a paragraph's lines
    widest = max(p.x1 - p.x0 for p in placed)
    paragraphs = [Paragraph([placed[0].line])]
    for before, after in zip(placed, placed[1:], strict=False):
        size = max(before.line.height, after.line.height, 1.0)
        ends = (
            after.top < before.top - 1.0  # back up the page: the next column
            or after.top - before.bottom > spacing + PARAGRAPH_GAP * size
            or abs(before.line.height - after.line.height) > SIZE_CHANGE * size
            or before.line.bold != after.line.bold
            or (_SENTENCE_END.search(before.line.words[-1]) is not None and before.x1 - before.x0 < SHORT_LINE * widest)
        )
        if ends:
            paragraphs.append(Paragraph())
        paragraphs[-1].lines.append(after.line)
    return paragraphs


def bands_of(placed: list[_Placed]) -> list[list[_Placed]]:
    """Lines in reading order grouped where they share a band of the page (a table's row), each
    band left to right."""
    bands: list[list[_Placed]] = []
    for line in placed:
        last = bands[-1] if bands else None
        if last is not None and all(line.top < other.bottom and other.top < line.bottom for other in last):
            last.append(line)
        else:
            bands.append([line])
    return [sorted(band, key=lambda p: p.x0) for band in bands]


def cells_of(line: Line) -> list[_Placed]:
    """A line read by Tesseract, cut where its words stand far apart (a table's columns)."""
    if len(line.boxes) != len(line.words) or not line.boxes:
        return [_Placed(line, 0.0, 0.0, 0.0, 0.0)]
    cells: list[_Placed] = []
    for word, (left, top, width, height) in zip(line.words, line.boxes, strict=True):
        last = cells[-1] if cells else None
        if last is not None and left - last.x1 <= CELL_GAP * max(line.height, 1.0):
            last.line.words.append(word)
            last.x1, last.top, last.bottom = left + width, min(last.top, top), max(last.bottom, top + height)
        else:
            cells.append(_Placed(Line([word], line.height), left, top, left + width, top + height))
    return cells


def with_tables(found: list[Paragraph]) -> list[Paragraph]:
    """Tesseract's paragraphs, where lines whose words stand in aligned columns are made a table."""
    flat = [(n, line) for n, paragraph in enumerate(found) for line in paragraph.lines]
    bands = [cells_of(line) for _, line in flat]
    out: list[Paragraph] = []
    start, owner = 0, -1
    while start < len(flat):
        rows = table_rows(bands, start)
        if rows is not None:
            out.append(Paragraph(table=rows))
            start, owner = start + len(rows), -1
            continue
        number, line = flat[start]
        if number != owner:
            out.append(Paragraph())
            owner = number
        out[-1].lines.append(line)
        start += 1
    return out


def table_rows(bands: list[list[_Placed]], start: int) -> list[list[str]] | None:
    """The table that starts at `bands[start]`: its first band has two cells or more with words,
    and the bands after it have cells that fall in its columns, one a column (numbers set flush
    right included: a cell belongs to the column its middle is in). None under two rows."""
    header = bands[start]
    if len(header) < 2 or any(not any(c.isalnum() for c in " ".join(p.line.words)) for p in header):
        return None
    bounds = [p.x0 for p in header[1:]]

    def row(band: list[_Placed]) -> list[str] | None:
        cells = [""] * len(header)
        for cell in band:
            column = sum(1 for x in bounds if (cell.x0 + cell.x1) / 2 >= x - 1.0)
            if cells[column]:
                return None
            cells[column] = " ".join(cell.line.words)
        return cells

    rows = [row(header)]
    for band in bands[start + 1 :]:
        cells = row(band) if len(band) >= 2 else None
        if cells is None:
            break
        rows.append(cells)
    if len(rows) < 2 or any(r is None for r in rows):
        return None
    sizes = [len(cell.split()) for r in rows for cell in r if cell]  # type: ignore[union-attr]
    return rows if median(sizes) <= MAX_CELL_WORDS else None  # type: ignore[return-value]


def text_layer_paragraphs(raw: list[list]) -> list[Paragraph]:
    """A page's text layer (the render worker's spans) as paragraphs and tables, in reading order."""
    bands = bands_of(reading_order(lines_of(parse_spans(raw))))
    found: list[Paragraph] = []
    text: list[_Placed] = []
    n = 0
    while n < len(bands):
        rows = table_rows(bands, n)
        if rows is None:
            text.extend(bands[n])
            n += 1
            continue
        found.extend(paragraphs_of(text))
        found.append(Paragraph(table=rows))
        text, n = [], n + len(rows)
    return found + paragraphs_of(text)
