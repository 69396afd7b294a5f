"""How large a rendered page is, and which way up: the scale for a resolution within a size limit,
an image's own resolution and orientation, an image frame turned upright and flattened. For the
render worker, result.pdf's pages of image frames, and the benchmarks."""

from __future__ import annotations

import math
from typing import Any

from PIL import Image, ImageOps

_FLOAT_SLACK = 1 - 1e-9  # far below a pixel even at 10^6 px, far above float error


def bitmap_size(points: float, scale: float) -> int:
    """Pixels PDFium gives `points` at `scale` (it rounds up), minus float noise: 792 pt at 300 dpi
    is 3300 px, not the 3301 that 792 * (300 / 72) = 3300.0000000000005 would round up to."""
    return math.ceil(points * scale * _FLOAT_SLACK)


def fit_scale(width_pt: float, height_pt: float, dpi: float, max_side_px: int) -> tuple[float, bool]:
    """PDFium scale (pixels per point) for `dpi`, reduced so the longest side fits `max_side_px`.

    Decided from the page size before rendering: a 200-inch page is rendered small, never rendered
    huge and shrunk. Returns (scale, reduced); the scale carries the float slack for PDFium's ceil().
    """
    scale = dpi / 72
    longest = max(width_pt, height_pt)
    reduced = bitmap_size(longest, scale) > max_side_px
    if reduced:
        scale = max_side_px / longest
    return scale * _FLOAT_SLACK, reduced


def image_dpi(stated: Any, fallback: float) -> float:
    """An image's resolution as its file states it (sizes in points follow from it), else `fallback`."""
    try:
        value = float(stated[0])
    except (TypeError, ValueError, IndexError):
        return fallback
    return value if 30 <= value <= 5000 else fallback


def upright_size(size: tuple[int, int], exif_orientation: int | None) -> tuple[int, int]:
    """Width and height once EXIF orientation is applied: 5-8 turn the image by 90 degrees."""
    return (size[1], size[0]) if exif_orientation in (5, 6, 7, 8) else size


def scale_note(full: tuple[int, int], actual: tuple[int, int]) -> str:
    return f"scaled down from {full[0]}x{full[1]} px to {actual[0]}x{actual[1]} px"


def upright(image: Image.Image, *, grayscale: bool) -> Image.Image:
    """EXIF orientation applied, alpha flattened onto white, in L or RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    return image.convert("L" if grayscale else "RGB")
