"""Recognised text structure → readable Markdown. Pure functions, no I/O.

Engines that only know lines and paragraphs (Tesseract, a PDF's text layer) share this: each
paragraph becomes one Markdown line, paragraphs are separated by a blank line, and text that
Markdown would read as syntax (a heading, a list, a quote) is escaped so it stays text.
"""

from __future__ import annotations

import re

from .skew import levelled, skew_of
from .text_layout import with_tables
from .tsv_layout import Item, Paragraph, body_height, heading_level, is_list, list_items, parse_tsv, segments

# A line start that Markdown would turn into structure: ATX heading, block quote, bullet list,
# thematic break, code fence, HTML block. (Ordered lists are handled apart: the escape goes after
# the number.)
_BLOCK_START = re.compile(
    r"""^(?:
        \#{1,6}(?:\s|$)         # heading
      | >                       # block quote
      | [-+*](?:\s|$)           # bullet list item
      | [-*_](?:\s*[-*_]){2,}\s*$  # thematic break: --- *** ___
      | `{3,} | ~{3,}           # code fence
      | <[A-Za-z/!?]            # HTML block
    )""",
    re.VERBOSE,
)
_ORDERED_ITEM = re.compile(r"^(\d{1,9})([.)])(\s|$)")

# Characters PDFium puts where a word was hyphenated across a line break (it has already joined the
# halves): U+0002 from FPDFText_GetBoundedText, U+FFFE from FPDFText_GetText.
_PDFIUM_LINE_HYPHENS = str.maketrans("", "", "\x02\ufffe")

_SENTENCE_END = re.compile(r"[.!?:][\"'”’)\]]*$")
_SHORT_LINE_RATIO = 0.7


def escape_line_start(text: str) -> str:
    """Backslash-escape a leading character that would make Markdown read `text` as structure."""
    ordered = _ORDERED_ITEM.match(text)
    if ordered:
        return f"{ordered.group(1)}\\{text[len(ordered.group(1)) :]}"
    if _BLOCK_START.match(text):
        return "\\" + text
    return text


def join_lines(lines: list[str]) -> str:
    """One paragraph's lines as one line. A word hyphenated at a line end is rejoined: without the
    hyphen when the next line goes on in lower case ("exam-" + "ple" → "example"), with it otherwise
    ("Jean-" + "Paul" → "Jean-Paul")."""
    text = ""
    for raw in lines:
        line = " ".join(raw.split())
        if not line:
            continue
        if not text:
            text = line
        elif len(text) > 1 and text.endswith("-") and text[-2].isalpha():
            text = text[:-1] + line if line[0].islower() else text + line
        else:
            text = f"{text} {line}"
    return text


def paragraphs_to_markdown(paragraphs: list[list[str]]) -> str:
    """Paragraphs (each a list of lines) → Markdown; an empty page gives ""."""
    blocks = [escape_line_start(text) for text in map(join_lines, paragraphs) if text]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def tesseract_tsv_to_markdown(tsv: str) -> str:
    """Tesseract's `tsv` output → Markdown: its paragraphs in its reading order (layout_to_markdown)."""
    return layout_to_markdown(tesseract_layout(tsv)[0])


def tesseract_layout(tsv: str) -> tuple[list[Paragraph], float]:
    """Tesseract's paragraphs with their geometry levelled and its tables found, and the skew
    (degrees turned clockwise to level the lines, skew.py) that was taken out."""
    found = parse_tsv(tsv)
    skew = skew_of(found)
    return with_tables(levelled(found, skew)), skew


def layout_to_markdown(found: list[Paragraph]) -> str:
    """Paragraphs of lines with their heights → Markdown: headings where the type is clearly larger
    than the body's (or bold, where the lines say so and the body is not), lists where lines start
    with bullets or numbers that count up (tsv_layout.py); everything else paragraphs whose
    Markdown-looking starts are escaped."""
    body = body_height(found)
    words = [line.bold for paragraph in found for line in paragraph.lines for _ in line.words]
    bold_marks = 0 < sum(words) < 0.5 * len(words)
    paragraphs = [piece for paragraph in found for piece in segments(paragraph, body)]
    blocks: list[str] = []
    run: list[Item] = []  # list items of consecutive paragraphs, and those paragraphs
    held: list[Paragraph] = []

    def flush() -> None:
        if is_list(run):
            blocks.append("\n".join(f"{_list_marker(item)} {join_lines(item.lines)}" for item in run))
        else:
            blocks.extend(escape_line_start(join_lines(_texts(paragraph))) for paragraph in held)
        run.clear()
        held.clear()

    for paragraph in paragraphs:
        if paragraph.table is not None:
            flush()
            blocks.append(markdown_table(paragraph.table))
            continue
        items = list_items(paragraph)
        if items is not None and (not run or (items[0].marker == "-") == (run[0].marker == "-")):
            run.extend(items)
            held.append(paragraph)
            continue
        flush()
        if items is not None:
            run.extend(items)
            held.append(paragraph)
            continue
        level = heading_level(paragraph, body, bold_marks)
        text = join_lines(_texts(paragraph))
        blocks.append(f"{'#' * level} {text}" if level else escape_line_start(text))
    flush()
    return "\n\n".join(block for block in blocks if block) + "\n" if any(blocks) else ""


def markdown_table(rows: list[list[str]]) -> str:
    """Rows of cells (the first the header) as a Markdown table, every row as wide as the widest."""
    width = max(len(row) for row in rows)

    def line(cells: list[str]) -> str:
        padded = [" ".join(cell.split()).replace("|", "\\|") for cell in cells] + [""] * (width - len(cells))
        return "| " + " | ".join(padded) + " |"

    return "\n".join([line(rows[0]), "| " + " | ".join(["---"] * width) + " |", *map(line, rows[1:])])


def _list_marker(item: Item) -> str:
    return "-" if item.marker == "-" else f"{item.marker}."


def _texts(paragraph: Paragraph) -> list[str]:
    return [" ".join(line.words) for line in paragraph.lines]


def split_text_layer(text: str) -> list[list[str]]:
    """A PDF text layer (lines separated by \\r\\n) → paragraphs of lines.

    A blank line ends a paragraph. So does a line that ends a sentence (. ! ? :) and is clearly
    shorter than the page's longest line (< 70 %): in a justified or ragged column, that is the
    last line of a paragraph. PDFium gives no blank lines for vertical gaps, so the second rule
    does most of the work; headings without a full stop stay glued to the next paragraph.
    """
    lines = [" ".join(line.split()) for line in re.split(r"\r\n|\r|\n", text.translate(_PDFIUM_LINE_HYPHENS))]
    longest = max((len(line) for line in lines), default=0)
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        ends_paragraph = not line or (
            _SENTENCE_END.search(line) is not None and len(line) < _SHORT_LINE_RATIO * longest
        )
        if ends_paragraph and current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def text_layer_to_markdown(text: str) -> str:
    return paragraphs_to_markdown(split_text_layer(text))
