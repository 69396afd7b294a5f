"""DeepSeek-OCR grounding output → Markdown and figure crop boxes. Pure functions, no I/O.

DeepSeek-OCR and DeepSeek-OCR-2, asked `<|grounding|>Convert the document to markdown.`, answer
with Markdown in which every layout region is announced by a grounding tag:

    <|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>
    the region's content (Markdown text, an HTML <table>, LaTeX \\[ ... \\])

Coordinates are on a 0–999 scale over the image (x over its width, y over its height). This module
turns that into the page's Markdown: `image` regions become links to cropped figure files, every
other tag is removed and the content after it kept as the model wrote it (titles keep their `#`,
tables stay HTML, equations stay LaTeX), and the tokenizer's special tokens
(`<｜end▁of▁sentence｜>`, sent when `skip_special_tokens` is false) are stripped.

Model output is untrusted text: a tag cut off by `max_tokens`, an unclosed tag or garbage inside
`<|det|>` is dropped with a warning, never an exception. Coordinates are read as JSON (never `eval`;
not `ast.literal_eval` either: CPython 3.11's AST constructor keeps its recursion depth per
interpreter, and the engine's threads parsing at once fail with "AST constructor recursion depth
mismatch", cpython#106905), checked to be boxes of four finite numbers, clamped to 0..999 and put in
order (x1 <= x2, y1 <= y2).

Scaling convention: the scale's 0 is the image's left/top edge and 999 its right/bottom edge, so a
coordinate c maps to c * size / 999 pixels (999 → the full width/height). A figure's pixel box is
rounded outwards (left/top down, right/bottom up) and clamped to the image, as PIL's `crop` wants it:
right/bottom exclusive, so 999 includes the last pixel row/column. An `image` box with no area is
dropped with a warning. The engine crops with `image.crop(figure.box_px).save(images / figure.name)`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from .plain_text import markdown_to_text

IMAGE_LABEL = "image"
SCALE_MAX = 999
_MAX_DET_CHARS = 10_000  # far above any real box list; bounds the work the parser can be made to do
_MAX_WARNING_SNIPPET = 80

Box = tuple[int, int, int, int]

# The DeepSeek tokenizer's special tokens use full-width bars: <｜end▁of▁sentence｜>, <｜begin▁of▁sentence｜>.
_SPECIAL_TOKEN = re.compile(r"<｜[^｜<>\n]{1,64}｜>")
_CUT_SPECIAL_TOKEN = re.compile(r"<｜[^｜<>\n]{0,64}｜?\Z")
_MARKERS = ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>")
_COORD_CHARS = r"[\[\]\d\s,.+\-eE]"

_TOKEN = re.compile(
    rf"""
      (?P<tag><\|ref\|>(?P<label>[^<>\n]{{0,200}}?)<\|/ref\|>[ \t]*<\|det\|>(?P<det>[^<>\n]*?)<\|/det\|>)
    | (?P<cut><\|ref\|>[^<>\n]{{0,200}}(?:<\|/ref\|>[ \t]*(?:<\|det\|>{_COORD_CHARS}*)?)?\Z)
    | (?P<ref_only><\|ref\|>[^<>\n]{{0,200}}?<\|/ref\|>)
    | (?P<det_only><\|det\|>[^<>\n]*?<\|/det\|>)
    | (?P<open_det><\|det\|>{_COORD_CHARS}*)
    | (?P<marker><\|/?(?:ref|det)\|>)
    """,
    re.VERBOSE,
)
_BLANK_RUN = re.compile(r"\n(?:[ \t]*\n){2,}")


@dataclass(frozen=True)
class Region:
    """One grounding tag: its label and its boxes on the 0–999 scale (invalid boxes already dropped)."""

    label: str
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class Parsed:
    """The output as text and regions in reading order, plus what was dropped or repaired."""

    items: list[Region | str]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    """An `image` box to crop from the rendered page: file name and pixel box (left, top, right, bottom)."""

    name: str
    box_px: Box


@dataclass(frozen=True)
class Converted:
    markdown: str
    figures: list[Figure]
    warnings: list[str]


def _snippet(text: str) -> str:
    return repr(text if len(text) <= _MAX_WARNING_SNIPPET else text[:_MAX_WARNING_SNIPPET] + "…")


def strip_special_tokens(output: str) -> str:
    """Remove tokenizer special tokens such as `<｜end▁of▁sentence｜>`."""
    return _SPECIAL_TOKEN.sub("", output)


def _strip_cut_marker(output: str) -> tuple[str, str | None]:
    """A marker or special token cut off at the very end (`<|re`, `<｜end▁of`) → output without it, and the cut part."""
    special = _CUT_SPECIAL_TOKEN.search(output)
    if special:
        return output[: special.start()], special[0]
    for marker in _MARKERS:
        for length in range(len(marker) - 1, 1, -1):
            if output.endswith(marker[:length]):
                return output[:-length], marker[:length]
    return output, None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clamp(value: float) -> int:
    if value >= SCALE_MAX:  # compare before converting: 10**400 as a float would overflow
        return SCALE_MAX
    return max(0, round(value))


def _box(raw: object, warnings: list[str]) -> Box | None:
    """One candidate box → a valid, clamped, ordered box, or None with a warning."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        warnings.append(f"grounding box {_snippet(str(raw))} dropped: not a list of 4 numbers")
        return None
    numbers = [_number(value) for value in raw]
    if any(value is None for value in numbers):
        warnings.append(f"grounding box {_snippet(str(raw))} dropped: not 4 finite numbers")
        return None
    x1, y1, x2, y2 = (_clamp(value) for value in numbers)
    if [x1, y1, x2, y2] != list(numbers):
        warnings.append(f"grounding box {_snippet(str(raw))} clamped to whole numbers in 0..{SCALE_MAX}")
    if x1 > x2 or y1 > y2:
        warnings.append(f"grounding box {_snippet(str(raw))} had its corners swapped")
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
    return (x1, y1, x2, y2)


def parse_boxes(det: str) -> tuple[tuple[Box, ...], list[str]]:
    """The text inside `<|det|>...<|/det|>` → valid boxes on the 0–999 scale, and warnings.

    Accepts a list of boxes (`[[x1, y1, x2, y2], ...]`, as the model writes it) or one bare box.
    """
    warnings: list[str] = []
    if len(det) > _MAX_DET_CHARS:
        return (), [f"grounding coordinates dropped: {len(det)} characters is not a box list"]
    try:
        value = json.loads(det)
    except (ValueError, RecursionError):  # not JSON (JSONDecodeError is a ValueError), or nested too deep
        return (), [f"grounding coordinates {_snippet(det)} dropped: not a list of boxes"]
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(_number(v) is not None for v in value):
        value = [value]  # one bare box
    if not isinstance(value, (list, tuple)) or not value:
        return (), [f"grounding coordinates {_snippet(det)} dropped: not a list of boxes"]
    boxes = tuple(box for box in (_box(raw, warnings) for raw in value) if box is not None)
    return boxes, warnings


def parse(output: str) -> Parsed:
    """Raw model output → text pieces and `Region`s in reading order. Never raises on any input."""
    warnings: list[str] = []
    text, cut = _strip_cut_marker(strip_special_tokens(output))
    if cut is not None:
        warnings.append(f"grounding marker {cut!r} cut off at the end of the output dropped")
    items: list[Region | str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() > position:
            items.append(text[position : match.start()])
        position = match.end()
        kind = match.lastgroup
        if kind == "tag":
            boxes, box_warnings = parse_boxes(match["det"])
            warnings.extend(box_warnings)
            items.append(Region(label=match["label"].strip(), boxes=boxes))
        elif kind == "cut":
            warnings.append(f"grounding tag cut off at the end of the output dropped: {_snippet(match[0])}")
        else:
            warnings.append(f"malformed grounding tag dropped: {_snippet(match[0])}")
    if position < len(text):
        items.append(text[position:])
    return Parsed(items=items, warnings=warnings)


def box_to_pixels(box: Box, width: int, height: int) -> Box:
    """A 0–999 box → a pixel box (left, top, right, bottom) in a width × height image, rounded
    outwards and clamped to the image; right/bottom are exclusive (999 → width/height)."""
    x1, y1, x2, y2 = box
    left = min(width, x1 * width // SCALE_MAX)
    top = min(height, y1 * height // SCALE_MAX)
    right = min(width, -(-x2 * width // SCALE_MAX))
    bottom = min(height, -(-y2 * height // SCALE_MAX))
    return (left, top, right, bottom)


# DeepSeek-OCR's region labels → the page JSON's block kinds (engines/geometry.py); others are text.
_KINDS = {"title": "title", "sub_title": "title", "table": "table", "image": "figure"}


def grounded_blocks(output: str, width: int, height: int) -> list[dict]:
    """The page JSON's blocks from the grounding output: one per region, its kind from its label, its
    box (all its boxes together) in pixels of the width × height page, and its content as plain text
    (one line across the block: the model gives no finer geometry). Never raises."""
    blocks: list[dict] = []
    region, content = None, []
    for item in [*parse(output).items, None]:
        if isinstance(item, str):
            content.append(item)
            continue
        if region is not None and region.boxes:
            boxes = [box_to_pixels(box, width, height) for box in region.boxes]
            box = [
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            ]
            text = " ".join(markdown_to_text("".join(content)).split())
            lines = [{"text": text, "box_px": box}] if text and region.label.lower() != IMAGE_LABEL else []
            blocks.append({"kind": _KINDS.get(region.label.lower(), "text"), "box_px": box, "lines": lines})
        region, content = item, []
    return blocks


def figure_name(page: int, number: int) -> str:
    """`p0003_fig01.png`: the page (1-based) and the figure's number on that page (1-based)."""
    return f"p{page:04d}_fig{number:02d}.png"


def collapse_blank_lines(text: str) -> str:
    """Runs of two or more blank lines → one blank line."""
    return _BLANK_RUN.sub("\n\n", text)


def to_markdown(output: str, width: int, height: int, *, page: int, link_prefix: str = "images/") -> Converted:
    """Raw model output for one page rendered at width × height pixels → Markdown, figures, warnings.

    Each box of an `image` region is one figure, numbered in reading order with one counter per
    page, and linked as `![](<link_prefix><name>)`: "images/" suits result.md in the job folder,
    "../images/" the per-page files one level down. Never raises on any model output.
    """
    if width < 1 or height < 1:
        raise ValueError(f"page image size must be positive, got {width}x{height}")
    parsed = parse(output)
    warnings = list(parsed.warnings)
    figures: list[Figure] = []
    parts: list[str] = []
    for item in parsed.items:
        if isinstance(item, str):
            parts.append(item)
            continue
        if item.label.lower() != IMAGE_LABEL:
            continue
        links = []
        for box in item.boxes:
            box_px = box_to_pixels(box, width, height)
            if box[2] == box[0] or box[3] == box[1] or box_px[2] <= box_px[0] or box_px[3] <= box_px[1]:
                warnings.append(f"image box {list(box)} has no area on the {width}x{height} page: dropped")
                continue
            figure = Figure(name=figure_name(page, len(figures) + 1), box_px=box_px)
            figures.append(figure)
            links.append(f"![]({link_prefix}{figure.name})")
        if links:
            parts.append("\n\n" + "\n\n".join(links) + "\n\n")
    markdown = collapse_blank_lines("".join(parts)).strip()
    return Converted(markdown=markdown + "\n" if markdown else "", figures=figures, warnings=warnings)
