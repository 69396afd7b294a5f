"""result.txt: the words of result.md without Markdown's marks, for systems that index text. Pure.

Each block (heading, paragraph, list item, quote) is one line, blocks are separated by a blank line,
a table is one line per row with its cells separated by tabs (HTML tables, as DeepSeek-OCR writes
those whose cells span, the same), figures keep their alt text, and pages are separated by a form
feed, as pdftotext does, so that page N of the text is page N of the document.
"""

from __future__ import annotations

from html.parser import HTMLParser

from markdown_it import MarkdownIt
from markdown_it.token import Token

PAGE_BREAK = "\f"
_MARKDOWN = MarkdownIt("commonmark").enable("table")


def pages_to_text(pages: list[str | None]) -> str:
    """Each page's Markdown (None: a page that failed, left empty) → result.txt."""
    return PAGE_BREAK.join(markdown_to_text(page or "") for page in pages)


def markdown_to_text(markdown: str) -> str:
    blocks: list[str] = []
    row: list[str] | None = None
    rows: list[str] = []
    for token in _MARKDOWN.parse(markdown):
        if token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            rows.append("\t".join(row))
            row = None
        elif token.type == "table_close":
            blocks.append("\n".join(rows))
            rows = []
        elif token.type == "inline":
            text = _inline_text(token)
            if row is not None:
                row.append(text)
            else:
                blocks.append(text)
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
        elif token.type == "html_block":
            blocks.append(html_to_text(token.content))
    kept = [block.strip() for block in blocks if block.strip()]
    return "\n\n".join(kept) + "\n" if kept else ""


def _inline_text(token: Token) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "image":
            parts.append(child.content)  # its alt text
        elif child.type == "html_inline" and child.content.lower().startswith("<br"):
            parts.append("\n")
    return "".join(parts)


class _HtmlText(HTMLParser):
    """Text of an HTML block: table rows as lines of tab-separated cells, comments dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.cells: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._flush()
            self.cells = []
        elif tag in ("td", "th") and self.cells is not None:
            self.text = []
        elif tag in ("br", "p", "div"):
            self.text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cells is not None:
            self.cells.append(" ".join("".join(self.text).split()))
            self.text = []
        elif tag == "tr" and self.cells is not None:
            self.lines.append("\t".join(self.cells))
            self.cells = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def _flush(self) -> None:
        words = " ".join("".join(self.text).split())
        if words:
            self.lines.append(words)
        self.text = []


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    if parser.cells is None:
        parser._flush()
    return "\n".join(parser.lines)
