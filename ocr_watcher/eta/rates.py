"""What one page costs the daemon's throughput, per engine, measured from the pages it finishes."""

from __future__ import annotations

from collections import deque

WINDOW_PAGES = 50  # the latest pages per engine: recent enough to follow a change of load


class PageCosts:
    """A page's cost is the wall time during which the engine's latest pages were being worked on
    (the union of each page's life, hand-out to done), divided by their count. Pages run side by side,
    so one page's own time would overstate it; quiet spells between pages are not in any page's life,
    so they do not count either. Two pages that ran together from the start cost half their time each."""

    def __init__(self, window: int = WINDOW_PAGES) -> None:
        self.window = window
        self._lives: dict[str, deque[tuple[float, float]]] = {}

    def page_done(self, engine: str, at: float, took: float) -> None:
        """A page of `engine` finished at monotonic time `at`, `took` seconds after it was handed out."""
        lives = self._lives.setdefault(engine, deque(maxlen=self.window))
        lives.append((at - max(0.0, took), at))

    def seconds_per_page(self) -> dict[str, float]:
        return {engine: busy_seconds(lives) / len(lives) for engine, lives in self._lives.items() if lives}

    def page_lives(self) -> dict[str, float]:
        """Mean seconds from a page's hand-out to its end, per engine: when one handed out now is done."""
        return {
            engine: sum(end - start for start, end in lives) / len(lives)
            for engine, lives in self._lives.items()
            if lives
        }


def busy_seconds(spans: deque[tuple[float, float]] | list[tuple[float, float]]) -> float:
    """The length of the union of (start, end) spans."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total
