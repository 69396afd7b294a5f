"""ocr-watcher: a watch-folder OCR service (inbox -> job folders -> Markdown)."""

__version__ = "0.1.0"
