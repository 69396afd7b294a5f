"""The engine protocol: what the pipeline asks of an OCR engine, and what it gets back.

An engine turns one rendered page into Markdown. The pipeline owns rendering (in isolated
processes), scheduling, retries and writing files; an engine only recognises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class RenderSpec:
    """What an engine wants from the renderer for each page."""

    # "best": the PDF page's own text layer where it can be trusted (engines/text_trust.py), else a
    # bitmap as for "image"; PageInput.image_path says which it is.
    kind: Literal["image", "text", "best"]
    dpi: int = 300
    max_side_px: int = 5000
    grayscale: bool = True
    image_format: Literal["pnm", "png"] = "pnm"  # pnm: fastest to write and read; png: for HTTP engines
    text_layer: bool = False  # also extract the PDF's text with the image (an engine's fallback)


@dataclass
class PageInput:
    """One page, rendered as the engine's RenderSpec asked."""

    job_id: str
    page: int  # 1-based
    image_path: Path | None = None  # the rendered bitmap when RenderSpec.kind == "image"
    text: str | None = None  # the PDF's text layer when RenderSpec.kind == "text"
    width: int = 0
    height: int = 0
    source_reason: str | None = None  # RenderSpec "best": why the text layer is used, or not
    spans: list[list] | None = None  # ...and where it is used, its runs of text with their geometry


@dataclass
class PageOutput:
    markdown: str
    engine: str
    model: str | None = None
    source: str | None = None  # "text_layer" or "ocr", where an engine chooses per page
    source_reason: str | None = None
    rotation: int | None = None  # degrees the page was turned clockwise before it was read (tesseract)
    skew: float | None = None  # and degrees it was then turned clockwise to level its lines
    # Where the words are (engines/geometry.py): blocks of lines of words with their boxes in pixels of
    # the rendered page (`box_px`), or in points (`box_pt`) where there is no rendered page.
    blocks: list[dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific figures (tokens, server, ...)


class PageError(Exception):
    """Recognising one page failed; the pipeline may retry it."""


class EngineUnavailable(Exception):
    """The engine cannot run on this machine (missing binary, server down at start-up, ...)."""


class Engine(Protocol):
    name: str
    model: str | None
    render_spec: RenderSpec
    # Pages this engine wants in flight at once; 0 = one per pipeline worker (CPU engines). A GPU
    # server wants hundreds (continuous batching). The pipeline runs as many engine threads as the
    # hungriest engine asks for.
    concurrency: int

    def recognize(self, page: PageInput) -> PageOutput:
        """Blocking and thread-safe: the pipeline calls it from several threads at once."""
        ...

    def health(self) -> str | None:
        """None when the engine can take pages now, else why not (for /readyz)."""
        ...

    def close(self) -> None: ...
