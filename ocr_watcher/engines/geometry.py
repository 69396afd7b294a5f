"""Where the words are: the page JSON's `blocks` (blocks, lines, words with their boxes), from
Tesseract's TSV and from a text layer's runs. Pure functions, no I/O.

A box is `[left, top, right, bottom]` with y growing downwards, in pixels of the rendered page
(`box_px`: the bitmap the engine was given, before any turn) and in PDF points on the page as it is
shown (`box_pt`: /Rotate applied, from the crop box's top left corner). Tesseract read the page
perhaps turned (upright, then level: `rotation` and `skew`); its boxes are turned back here, so that
a word's box lies over the word on the rendered page whatever was read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Box = list[float]


@dataclass(frozen=True)
class Frame:
    """The image Tesseract read: `read_size` pixels, the rendered page (`page_size`) turned clockwise
    by `degrees` about its centre and grown to fit (PIL's rotate with expand)."""

    read_size: tuple[int, int]
    page_size: tuple[int, int]
    degrees: float = 0.0

    def to_page(self, box: tuple[float, float, float, float]) -> Box:
        """A box of the read image → the box on the rendered page that holds it (all four corners
        turned back, clipped to the page)."""
        left, top, right, bottom = box
        if not self.degrees:
            return [left, top, right, bottom]
        turn = math.radians(-self.degrees)  # back: anticlockwise
        cos, sin = math.cos(turn), math.sin(turn)
        rcx, rcy = self.read_size[0] / 2, self.read_size[1] / 2
        pcx, pcy = self.page_size[0] / 2, self.page_size[1] / 2
        xs, ys = [], []
        for x, y in ((left, top), (right, top), (left, bottom), (right, bottom)):
            dx, dy = x - rcx, y - rcy
            xs.append(pcx + dx * cos - dy * sin)
            ys.append(pcy + dx * sin + dy * cos)
        width, height = self.page_size
        return [max(0.0, min(xs)), max(0.0, min(ys)), min(float(width), max(xs)), min(float(height), max(ys))]


def tsv_blocks(tsv: str, frame: Frame) -> list[dict[str, Any]]:
    """Tesseract's blocks, lines and words (level 2, 4 and 5 rows of its TSV) with `box_px`; blank
    words and empty lines and blocks are left out. Words carry Tesseract's confidence (0-100)."""
    blocks: dict[tuple[str, str], dict[str, Any]] = {}
    lines: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in tsv.splitlines():
        cols = row.split("\t", 11)
        if len(cols) != 12 or cols[0] not in ("2", "4", "5"):
            continue
        try:
            left, top, width, height = (int(v) for v in cols[6:10])
        except ValueError:
            continue
        box = [round(v, 1) for v in frame.to_page((left, top, left + width, top + height))]
        block_key, line_key = (cols[1], cols[2]), (cols[1], cols[2], cols[3], cols[4])
        if cols[0] == "2":
            blocks[block_key] = {"kind": "text", "box_px": box, "lines": []}
        elif cols[0] == "4" and block_key in blocks:
            lines[line_key] = {"box_px": box, "words": []}
            blocks[block_key]["lines"].append(lines[line_key])
        elif cols[0] == "5" and line_key in lines and cols[11].strip() and cols[10].strip() != "-1":
            word = {"text": cols[11].strip(), "conf": round(float(cols[10]), 1), "box_px": box}
            lines[line_key]["words"].append(word)
    found = []
    for block in blocks.values():
        block["lines"] = [line for line in block["lines"] if line["words"]]
        if block["lines"]:
            found.append(block)
    return found


def span_blocks(spans: list[list]) -> list[dict[str, Any]]:
    """A text layer's runs (pipeline/page_source.text_spans: `[x0, top, x1, bottom, text, ...]` in
    points) as one block of lines with `box_pt`: a text layer has no pixels."""
    lines = [
        {"text": span[4], "box_pt": [round(float(v), 2) for v in span[:4]]} for span in spans if str(span[4]).strip()
    ]
    return [{"kind": "text", "lines": lines}] if lines else []


def with_points(blocks: list[dict[str, Any]], size_px: tuple[int, int], size_pt: tuple[float, float]) -> None:
    """Give every `box_px` in `blocks` its `box_pt` (in place): the rendered page is `size_px`
    pixels for a page of `size_pt` points."""
    sx, sy = size_pt[0] / max(1, size_px[0]), size_pt[1] / max(1, size_px[1])

    def visit(node: dict[str, Any]) -> None:
        if "box_px" in node:
            left, top, right, bottom = node["box_px"]
            node["box_pt"] = [round(left * sx, 2), round(top * sy, 2), round(right * sx, 2), round(bottom * sy, 2)]
        for child in node.get("lines", []) + node.get("words", []):
            visit(child)

    for block in blocks:
        visit(block)
