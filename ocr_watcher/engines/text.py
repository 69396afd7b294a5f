"""The text engine: a PDF's own text layer, no OCR. Instant, and exact for born-digital files."""

from __future__ import annotations

from ocr_watcher.engines.base import PageInput, PageOutput, RenderSpec
from ocr_watcher.engines.markdown import text_layer_to_markdown


class TextLayerEngine:
    name = "text"
    model: str | None = None
    render_spec = RenderSpec("text")
    concurrency = 0

    def recognize(self, page: PageInput) -> PageOutput:
        markdown = text_layer_to_markdown(page.text or "")
        warnings = [] if markdown else ["page has no text layer"]
        return PageOutput(markdown=markdown, engine=self.name, warnings=warnings)

    def health(self) -> str | None:
        return None  # needs nothing but the render workers

    def close(self) -> None:
        """Nothing to release."""
