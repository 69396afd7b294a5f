"""How many tokens DeepSeek-OCR's prompt takes for a page, and so how many the answer may have.

vLLM refuses (0.12-0.16: HTTP 400) or clamps (later releases) a request whose prompt tokens plus
`max_tokens` exceed the server's `max_model_len`. Releases differ in what they count as the prompt
(the text alone, or the image tokens too), so the engine reserves room for both: the image tokens
as vLLM's DeepSeek-OCR processor lays them out ("Gundam" mode: a 1024 px global view, and 640 px
tiles where the page is larger than one tile), plus a margin for the text prompt and the chat
template. Computed from the page's size alone: no round trip per page.
"""

from __future__ import annotations

import math

PATCH = 16
DOWNSAMPLE = 4
BASE_SIZE = 1024  # the global view
TILE_SIZE = 640  # the local tiles
MIN_TILES, MAX_TILES = 2, 6  # what vLLM's processor uses (DeepSeek's recipe allows 9)
TEXT_MARGIN = 64  # the prompt's words, BOS, the chat template: a few dozen tokens, with room to spare
# Any page, whatever its shape: the most tiles' tokens (1 x 6), for models this module does not know.
UNKNOWN_RESERVE = 2048


def _queries(size: int) -> int:
    return math.ceil((size // PATCH) / DOWNSAMPLE)


def tile_grid(width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of 640 px tiles vLLM cuts the page into; (1, 1) means none (the page fits one)."""
    if width <= TILE_SIZE and height <= TILE_SIZE:
        return 1, 1
    aspect = width / height
    grids = sorted(
        {(i, j) for i in range(1, MAX_TILES + 1) for j in range(1, MAX_TILES + 1) if MIN_TILES <= i * j <= MAX_TILES},
        key=lambda grid: grid[0] * grid[1],
    )
    best, best_diff = (1, 1), math.inf
    for grid in grids:  # the closest aspect ratio; on a tie the larger grid where the page is large
        diff = abs(aspect - grid[0] / grid[1])
        if diff < best_diff:
            best, best_diff = grid, diff
        elif diff == best_diff and width * height > 0.5 * TILE_SIZE * TILE_SIZE * grid[0] * grid[1]:
            best = grid
    return best


def image_tokens(width: int, height: int) -> int:
    """The image tokens of one page (each row of a view ends in a newline token; one separator)."""
    base = _queries(BASE_SIZE)
    tokens = base * (base + 1) + 1
    columns, rows = tile_grid(width, height)
    if columns > 1 or rows > 1:
        tile = _queries(TILE_SIZE)
        tokens += (tile * columns + 1) * (tile * rows)
    return tokens


def answer_budget(max_model_len: int, width: int, height: int, *, known_model: bool = True) -> int:
    """The most `max_tokens` a request for this page may ask: what is left of the context after the
    prompt, counted as the releases that count the most do. At least 1."""
    reserve = image_tokens(width, height) + TEXT_MARGIN if known_model else UNKNOWN_RESERVE
    return max(1, max_model_len - reserve)
