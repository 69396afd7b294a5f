"""result.md as a standalone HTML document, for the web page to show.

OCR output may hold HTML (DeepSeek-OCR writes tables as HTML) and whatever text the scanned paper
had, so the HTML is passed through as Markdown allows and made harmless where it is shown: served
with a Content-Security-Policy that allows no script, and put in an iframe without `allow-scripts`.
Figures are inlined as data: URLs, so the document needs no further (authenticated) requests.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

# No scripts, no fetches; inline styles and inlined images only.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_MAX_INLINE_BYTES = 8 << 20  # a figure larger than this is left as a (broken) link
_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 1rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #bbb; padding: .2em .5em; }
img { max-width: 100%; } pre { background: #f4f4f4; padding: .5em; overflow-x: auto; }
"""


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")


_renderer = _markdown()


def inline_images(markdown: str, job_dir: Path) -> str:
    """Replace `](images/x.png)` links with data: URLs of the files in the job folder."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        path = job_dir / "images" / name
        kind = _IMAGE_TYPES.get(Path(name).suffix.lower())
        if kind is None or "/" in name or name.startswith("."):
            return match.group(0)
        try:
            if path.stat().st_size > _MAX_INLINE_BYTES:
                return match.group(0)
            data = base64.b64encode(path.read_bytes()).decode("ascii")
        except OSError:
            return match.group(0)
        return f"{match.group(1)}(data:{kind};base64,{data})"

    return re.sub(r"(!\[[^\]]*\])\(images/([^)\s]+)\)", replace, markdown)


def result_html(markdown: str, job_dir: Path, title: str) -> str:
    body = _renderer.render(inline_images(markdown, job_dir))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
