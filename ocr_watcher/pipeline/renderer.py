"""Parent side of page rendering: a client for one isolated render worker process.

PDFium is not thread-safe, and a hostile PDF can hang it or eat memory. So every PDF or image
operation runs in a long-lived child process (`render_worker`), one per pipeline thread, driven
through `child.FramedChild`. The child has a memory limit; the parent enforces a time limit by
killing it. Either way the next call simply starts a fresh child, and the daemon itself never runs
PDFium.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ocr_watcher import child
from ocr_watcher.child import EXIT_OUT_OF_MEMORY  # noqa: F401 (named with the render worker's exits)
from ocr_watcher.engines.base import RenderSpec

_WHO = "the render worker"


class InputError(Exception):
    """The input itself is bad (encrypted, corrupt, not a document ...); the job fails with this."""

    def __init__(self, type: str, message: str):
        super().__init__(message)
        self.type = type
        self.message = message


class RenderTimeout(child.ChildTimeout):
    """The child exceeded the time limit and was killed."""


class RenderCrashed(child.ChildCrashed):
    """The child died: memory limit, a signal such as SIGSEGV, or an unexpected exit."""


@dataclass
class DocumentInfo:
    kind: Literal["pdf", "image"]
    pages: int
    encrypted: bool = False  # a PDF with an owner password only: it opens, but is encrypted
    format: str = ""  # "PDF", "PNG", "JPEG", "TIFF"


@dataclass
class RenderedPage:
    image_path: Path | None
    text: str | None
    width: int
    height: int
    scale_note: str | None = None  # e.g. "scaled down from 60000x60000 px to 5000x5000 px"
    source_reason: str | None = None  # RenderSpec "best": why the text layer is used, or not
    spans: list[list] | None = None  # ...and where it is: its runs of text (pipeline/page_source.py)
    size_pt: list[float] | None = None  # the page as shown, in points (an image's from its resolution)


# --- exit status ------------------------------------------------------------------------------


def describe_exit(returncode: int | None, memory_mb: int) -> str:
    """Why the render worker died, in words an operator can act on."""
    return child.describe_exit(returncode, _WHO, memory_mb)


# --- the client -------------------------------------------------------------------------------


class RenderWorker(child.FramedChild):
    """One render child process and the calls to it.

    Thread-compatible, not thread-safe: one thread uses a RenderWorker at a time; run several
    RenderWorkers for parallel rendering. The child starts on the first call and is replaced after
    a timeout, a crash, or `max_tasks` calls (to shed whatever a long run of PDFs left behind).
    """

    who = _WHO
    timeout_error = RenderTimeout
    crash_error = RenderCrashed

    def __init__(self, *, memory_mb: int = 2048, max_tasks: int = 500, env: dict[str, str] | None = None):
        argv = [sys.executable, "-m", "ocr_watcher.pipeline.render_worker", "--memory-mb", str(memory_mb)]
        super().__init__(argv, max_tasks=max_tasks, env=env, memory_mb=memory_mb)

    def __enter__(self) -> RenderWorker:
        return self

    def probe(self, path: Path, *, timeout: float) -> DocumentInfo:
        result = self._call({"op": "probe", "path": str(path)}, timeout, f"reading {path}")
        return DocumentInfo(**result)

    def render(self, path: Path, page: int, spec: RenderSpec, out_path: Path, *, timeout: float) -> RenderedPage:
        """Render page `page` (1-based) as `spec` asks; an image goes to `out_path` (its suffix picks
        the format: .pgm/.ppm/.pnm uncompressed, .png for engines that want PNG)."""
        request = {
            "op": "render",
            "path": str(path),
            "page": page,
            "spec": asdict(spec),
            "out_path": str(out_path),
        }
        try:
            result = self._call(request, timeout, f"rendering page {page} of {path}")
        except (RenderTimeout, RenderCrashed):
            out_path.unlink(missing_ok=True)  # never leave a half-written bitmap behind
            raise
        image_path = result.pop("image_path")
        return RenderedPage(image_path=Path(image_path) if image_path else None, **result)

    def _call(self, request: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
        return _unpack(self.call(request, timeout, what))


def _unpack(response: dict[str, Any]) -> dict[str, Any]:
    if response.get("ok"):
        return response["result"]
    error = response.get("error", {})
    if error.get("kind") == "input":
        raise InputError(error["type"], error["message"])
    if error.get("kind") == "output":
        raise OSError(error["message"])
    raise ValueError(error.get("message", f"the render worker rejected the request: {response!r}"))
