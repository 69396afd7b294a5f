"""Running headers, footers and page numbers: found across a document's pages and left out of
result.md (the page files keep them). Pure functions, no I/O.

A block (a Markdown paragraph of plain text) is a running header or footer when it is among the first
or last MARGIN_BLOCKS blocks of its page, short, and the same on at least half of the document's pages (and on
REPEAT_MIN_PAGES at least), where "the same" ignores case, spacing and digits: "Page 3 of 40" and
"Page 4 of 40" are one footer, and so are bare page numbers. A page never loses all its text to this:
a page whose every block repeats (identical pages) keeps them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

MARGIN_BLOCKS = 2  # blocks at the top and at the bottom of a page where headers and footers sit
MAX_WORDS = 12  # longer blocks are text, even when they repeat
REPEAT_MIN_PAGES = 3
REPEAT_SHARE = 0.5

_NOT_TEXT = ("#", "<", "![", "|", "```", "$$", ">")  # headings, HTML (tables), figures, tables, code, maths, quotes
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
# Heading and list marks, emphasis, dashes around page numbers: "## NVIDIA" is "NVIDIA", "- 12 -" is "12".
_MARKUP = re.compile(r"^[#>*\-–—|\s\\]+|[\-–—|\s]+$|[*_`]")


@dataclass(frozen=True)
class Repeat:
    text: str  # as it stood on the first page that had it
    pages: tuple[int, ...]


def blocks_of(markdown: str) -> list[str]:
    return [block.strip() for block in re.split(r"\n\s*\n", markdown.strip()) if block.strip()]


def shape(block: str) -> str:
    """What makes two blocks "the same" running header: no case, digits, spacing or Markdown marks."""
    text = _MARKUP.sub("", block).casefold()
    return _SPACE.sub(" ", _DIGITS.sub("#", text)).strip()


def _margins(blocks: list[str]) -> list[int]:
    """Indexes of the blocks at the top and bottom of a page."""
    count = len(blocks)
    return sorted({*range(min(MARGIN_BLOCKS, count)), *range(max(0, count - MARGIN_BLOCKS), count)})


def find_repeats(pages: dict[int, str]) -> dict[str, Repeat]:
    """Running headers and footers of a document, {shape: Repeat}: pages is {page number: Markdown}
    of the pages that were read."""
    seen: dict[str, list[int]] = defaultdict(list)
    first_text: dict[str, str] = {}
    for page, markdown in sorted(pages.items()):
        blocks = blocks_of(markdown)
        for index in _margins(blocks):
            block = blocks[index]
            key = shape(block)
            # Headers and footers are plain text: a heading that starts every page (a title per invoice, a
            # form's name), a table, a figure or a formula is content, not a margin.
            if not key or block.startswith(_NOT_TEXT) or len(block.split()) > MAX_WORDS or page in seen[key]:
                continue
            seen[key].append(page)
            first_text.setdefault(key, block)
    needed = max(REPEAT_MIN_PAGES, REPEAT_SHARE * len(pages))
    return {key: Repeat(first_text[key], tuple(found)) for key, found in seen.items() if len(found) >= needed}


def without_repeats(markdown: str, repeats: dict[str, Repeat]) -> str:
    """One page's Markdown less its running headers and footers; unchanged if nothing else would be left."""
    blocks = blocks_of(markdown)
    margins = set(_margins(blocks))
    kept = [block for index, block in enumerate(blocks) if index not in margins or shape(block) not in repeats]
    if not kept or len(kept) == len(blocks):
        return markdown
    return "\n\n".join(kept) + "\n"
