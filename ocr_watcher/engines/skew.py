"""Slightly turned scans: how far a page's lines slope, and its word geometry levelled. Pure functions.

A sheet fed a little askew (half a degree to a few) is still read word for word by Tesseract, but
the geometry the layout rules judge by is not: a line's box grows by its width times the slope (a
2,000 px line at one degree gains 35 px, as much as the type is high), so the body's lines look as
large as the headings, and a table's columns drift sideways from row to row. The slope is measured
from the words' own boxes (their centres along each line), and the boxes are turned back about it
before the layout rules see them. From `REREAD_SKEW` on, the page is also read again turned level
(the engine's choice, `reread_levelled` and `keep_levelled`): small marks such as bullets are
misread on a sloping line. Pages read level (under `MIN_SKEW`) are left exactly as they are.
"""

from __future__ import annotations

import math
from statistics import median

from .orientation import Reading
from .tsv_layout import Line, Paragraph

Box = tuple[int, int, int, int]  # left, top, width, height in pixels

MIN_SKEW = 0.1  # degrees; a level page (its measurement's noise is a few hundredths)
MAX_SKEW = 10.0  # beyond this the words are not one line of a turned page: measure nothing
MIN_LINE_WORDS = 3
MIN_LINES = 3
CONFIDENCE_SLACK = 2.0  # points of mean word confidence the levelled reading may lose and be kept
REREAD_SKEW = 0.3  # degrees; from here Tesseract starts to misread small marks (a bullet as "e")


def skew_of(paragraphs: list[Paragraph]) -> float:
    """Degrees to turn the page clockwise to level its lines (negative: anticlockwise); 0.0 where
    fewer than `MIN_LINES` lines of `MIN_LINE_WORDS` words say, or they disagree beyond `MAX_SKEW`.
    The median over lines of each line's least-squares slope of its words' centres."""
    slopes = [slope for p in paragraphs for line in p.lines if (slope := _line_slope(line)) is not None]
    if len(slopes) < MIN_LINES:
        return 0.0
    degrees = -math.degrees(math.atan(median(slopes)))  # image y grows downwards
    return round(degrees, 2) if abs(degrees) <= MAX_SKEW else 0.0


def reread_levelled(degrees: float) -> bool:
    """Whether a page this far askew is read again, turned level: from `REREAD_SKEW` on."""
    return abs(degrees) >= REREAD_SKEW


def keep_levelled(first: Reading, again: Reading) -> bool:
    """Whether the reading of the levelled page replaces the first: about as many words, read about
    as confidently. On clean print both read at 96% whichever way, and the levelled one's geometry
    is the right one; a turn that made the reading clearly worse (a page that only looked askew) is
    not kept."""
    return again.words >= 0.9 * first.words and again.confidence >= first.confidence - CONFIDENCE_SLACK


def _line_slope(line: Line) -> float | None:
    boxes = [box for box in line.boxes if box[2] > 0 and box[3] > 0]
    if len(boxes) < MIN_LINE_WORDS or len(boxes) != len(line.words):
        return None
    xs = [left + width / 2 for left, _, width, _ in boxes]
    ys = [top + height / 2 for _, top, _, height in boxes]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def levelled(paragraphs: list[Paragraph], degrees: float) -> list[Paragraph]:
    """The paragraphs with every word box turned `degrees` clockwise about the page's centre and
    shrunk back to the word's own size, and each line's height the span of its levelled words.
    The same paragraphs, untouched, where `degrees` is under `MIN_SKEW`."""
    if abs(degrees) < MIN_SKEW:
        return paragraphs
    boxes = [box for p in paragraphs for line in p.lines for box in line.boxes]
    if not boxes:
        return paragraphs
    centre = (
        (min(b[0] for b in boxes) + max(b[0] + b[2] for b in boxes)) / 2,
        (min(b[1] for b in boxes) + max(b[1] + b[3] for b in boxes)) / 2,
    )
    turn = math.radians(degrees)
    out = []
    for paragraph in paragraphs:
        lines = [_levelled_line(line, turn, centre) for line in paragraph.lines]
        out.append(Paragraph(lines=lines, table=paragraph.table))
    return out


def _levelled_line(line: Line, turn: float, centre: tuple[float, float]) -> Line:
    boxes = [_levelled_box(box, turn, centre) for box in line.boxes]
    height = max(top + h for _, top, _, h in boxes) - min(top for _, top, _, _ in boxes) if boxes else line.height
    return Line(words=list(line.words), height=height, bold=line.bold, boxes=boxes)


def _levelled_box(box: Box, turn: float, centre: tuple[float, float]) -> Box:
    """A word's upright box on the turned page → its box on the levelled page. The turned word's
    bounding box is w·cos + h·sin wide and w·sin + h·cos high; solved for the word's own w and h."""
    left, top, width, height = box
    cos, sin = math.cos(turn), abs(math.sin(turn))
    det = cos * cos - sin * sin
    own_w = max(1.0, (width * cos - height * sin) / det)
    own_h = max(1.0, (height * cos - width * sin) / det, height * 0.3)
    cx, cy = left + width / 2 - centre[0], top + height / 2 - centre[1]
    # Clockwise on a page whose y axis points down is the ordinary rotation matrix.
    x = cx * math.cos(turn) - cy * math.sin(turn) + centre[0]
    y = cx * math.sin(turn) + cy * math.cos(turn) + centre[1]
    return round(x - own_w / 2), round(y - own_h / 2), round(own_w), round(own_h)
