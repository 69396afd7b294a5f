"""Structure from Tesseract's TSV (its word and line boxes): headings from the size of the type, and
bulleted and numbered lists from their markers. Pure functions, no I/O.

Tesseract's fast LSTM data gives no font weight, so a heading is a short paragraph whose lines are
clearly taller than the page's body text (line boxes: the type's size with its ascenders and
descenders). List markers are read as Tesseract reads them: a bullet is often recognised as `¢`, `©`,
`«` or `&` rather than `•`; the ambiguous ones (a `©` may start a copyright line) make a list only where
two items or more follow each other. (Tesseract also reads bullets as `e` or `o`; those are words in
too many languages to be taken for markers.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from statistics import median

# Markers that can only be bullets, and ones Tesseract also reads from bullets that could be text.
_BULLETS = frozenset("•●○◦▪■□▫‣⁃∙►▸➢➤✓✔")
_MISREAD_BULLETS = frozenset({"-", "–", "—", "*", "·", "¢", "©", "«", "»", "&"})
_NUMBER = re.compile(r"^(\d{1,3})[.)]$")
_SENTENCE_END = re.compile(r"[.!?;,]$")  # a bold run-in ("Note.") or a bold sentence is not a heading

HEADING_RATIO = 1.25  # a line this much taller than the body's is larger type: a heading (##)
TITLE_RATIO = 1.8  # and this much: a title (#)
HEADING_MAX_WORDS = 12
HEADING_MAX_LINES = 2
MIN_BODY_WORDS = 15  # fewer words of body text: no reliable body size, so no headings


@dataclass
class Line:
    words: list[str] = field(default_factory=list)
    height: float = 0  # its box (the TSV's level-4 row) in pixels, or a text layer's type size
    bold: bool = False  # known from a text layer's font only
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # its words' (left, top, width, height)


@dataclass
class Paragraph:
    lines: list[Line] = field(default_factory=list)
    table: list[list[str]] | None = None  # a table's rows of cells instead of lines (text_layout.py)

    @property
    def words(self) -> int:
        return sum(len(line.words) for line in self.lines)


def parse_tsv(tsv: str) -> list[Paragraph]:
    """Paragraphs of lines in the order Tesseract emits them (its reading order); structural rows give
    the line heights, word rows (conf >= 0) the words; blank words and empty lines are skipped.
    Columns: level page_num block_num par_num line_num word_num left top width height conf text."""
    paragraphs: dict[tuple[str, str, str], Paragraph] = {}
    lines: dict[tuple[str, str, str, str], Line] = {}
    for row in tsv.splitlines():
        cols = row.split("\t", 11)
        if len(cols) != 12 or cols[0] not in ("4", "5"):
            continue
        key = (cols[1], cols[2], cols[3], cols[4])
        if key not in lines:
            line = lines[key] = Line()
            paragraphs.setdefault(key[:3], Paragraph()).lines.append(line)
        if cols[0] == "4":
            lines[key].height = int(cols[9]) if cols[9].isdigit() else 0
            continue
        word = cols[11].strip()
        if word and cols[10].strip() != "-1":
            lines[key].words.append(word)
            lines[key].boxes.append(_box(cols))
    found = []
    for paragraph in paragraphs.values():
        paragraph.lines = [line for line in paragraph.lines if line.words]
        if paragraph.lines:
            found.append(paragraph)
    return found


def _box(cols: list[str]) -> tuple[int, int, int, int]:
    try:
        return int(cols[6]), int(cols[7]), int(cols[8]), int(cols[9])
    except ValueError:
        return 0, 0, 0, 0


def body_height(paragraphs: list[Paragraph]) -> float | None:
    """The height of the page's body lines: the median line height over words (so a large title of
    three words weighs three words); None where the page has too few words to tell."""
    heights = [line.height for paragraph in paragraphs for line in paragraph.lines for _ in line.words if line.height]
    if len(heights) < MIN_BODY_WORDS:
        return None
    return float(median(heights))


def segments(paragraph: Paragraph, body: float | None) -> list[Paragraph]:
    """Tesseract's paragraph cut where its lines change between heading and body size, and before each
    line that starts with a list marker: it often joins a heading, or a list, to the text next to it."""
    if paragraph.table is not None:
        return [paragraph]
    pieces: list[Paragraph] = []
    previous: bool | None = None
    for line in paragraph.lines:
        large = body is not None and line.height >= HEADING_RATIO * body
        if not pieces or large != previous or (len(line.words) > 1 and _marker(line.words[0]) is not None):
            pieces.append(Paragraph())
        pieces[-1].lines.append(line)
        previous = large
    return pieces


def heading_level(paragraph: Paragraph, body: float | None, bold_marks: bool = False) -> int | None:
    """1 or 2 for a short paragraph set in clearly larger type than the body; 3 for one in bold at
    the body's size where bold marks headings (`bold_marks`: most of the page is not bold); else None."""
    if body is None or len(paragraph.lines) > HEADING_MAX_LINES or paragraph.words > HEADING_MAX_WORDS:
        return None
    ratio = min(line.height for line in paragraph.lines) / body
    if ratio >= TITLE_RATIO:
        return 1
    if ratio >= HEADING_RATIO:
        return 2
    bold = bold_marks and all(line.bold for line in paragraph.lines)
    return 3 if bold and not _SENTENCE_END.search(paragraph.lines[-1].words[-1]) else None


@dataclass
class Item:
    marker: str  # "-" for a bullet, else the number ("3")
    lines: list[str]
    certain: bool  # the marker can only be a list's


def list_items(paragraph: Paragraph) -> list[Item] | None:
    """The paragraph as list items when its first line starts with a marker: each line that starts
    with a marker of the same kind begins an item, the others go on with the one before. None otherwise."""
    kind = _marker(paragraph.lines[0].words[0])
    if kind is None or len(paragraph.lines[0].words) < 2:
        return None
    items: list[Item] = []
    for line in paragraph.lines:
        marker = _marker(line.words[0]) if len(line.words) > 1 else None
        if marker is not None and (marker[0] == "-") == (kind[0] == "-"):
            items.append(Item(marker[0], [" ".join(line.words[1:])], marker[1]))
        else:
            items[-1].lines.append(" ".join(line.words))
    return items


def _marker(word: str) -> tuple[str, bool] | None:
    """("-", certain) for a bullet, (number, True) for "3." or "3)", None for a word."""
    if word in _BULLETS:
        return "-", True
    if word in _MISREAD_BULLETS:
        return "-", False
    number = _NUMBER.match(word)
    return (number.group(1), True) if number else None


def is_list(run: list[Item]) -> bool:
    """Items of consecutive paragraphs make a list when there are two or more, or one whose marker
    can only be a bullet; numbered items must count up by one."""
    if not run or not (len(run) >= 2 or (run[0].certain and run[0].marker == "-")):
        return False
    numbers = [int(item.marker) for item in run if item.marker != "-"]
    return all(later == earlier + 1 for earlier, later in zip(numbers, numbers[1:], strict=False))
