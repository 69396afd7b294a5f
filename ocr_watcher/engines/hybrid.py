"""Engine `hybrid`, what `auto` is without a GPU: each PDF page's own text layer where it can be
trusted (engines/text_trust.py, judged by the render worker before it renders anything), Tesseract
where it cannot. Born-digital pages come out exact and at the cost of reading their text; scans,
pages with a broken or garbage text layer and image files are OCRed. Each page's JSON records its
`source` ("text_layer" or "ocr") and `source_reason`."""

from __future__ import annotations

from dataclasses import replace

from ocr_watcher.engines.base import PageInput, PageOutput
from ocr_watcher.engines.geometry import span_blocks
from ocr_watcher.engines.markdown import layout_to_markdown, text_layer_to_markdown
from ocr_watcher.engines.tesseract import TesseractEngine
from ocr_watcher.engines.text_layout import text_layer_paragraphs


class HybridEngine:
    name = "hybrid"
    concurrency = 0

    def __init__(self, ocr: TesseractEngine) -> None:
        self.ocr = ocr
        self.model = ocr.model
        self.render_spec = replace(ocr.render_spec, kind="best")

    def recognize(self, page: PageInput) -> PageOutput:
        if page.image_path is None:  # the render worker trusted the text layer and rendered nothing
            blocks = None
            if page.spans is not None:  # its geometry: headings, lists, paragraphs from it
                markdown = layout_to_markdown(text_layer_paragraphs(page.spans))
                blocks = span_blocks(page.spans)
            else:
                markdown = text_layer_to_markdown(page.text or "")
            reason = page.source_reason
            return PageOutput(
                markdown=markdown, engine="text", source="text_layer", source_reason=reason, blocks=blocks
            )
        output = self.ocr.recognize(page)
        output.source, output.source_reason = "ocr", page.source_reason
        return output

    def health(self) -> str | None:
        return self.ocr.health()

    def close(self) -> None:
        self.ocr.close()
