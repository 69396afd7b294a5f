"""What one page costs the daemon's throughput, per engine, measured from the pages it finishes."""

from __future__ import annotations

from collections import deque

WINDOW_PAGES = 50  # the latest pages per engine: recent enough to follow a change of load


class PageCosts:
    """A page's cost is the time since the engine's previous page finished, as long as that is not
    longer than the page itself took (hand-out to done): under load that gap is the throughput's
    share of each page (pages run side by side), and after a quiet spell the page's own time stands."""

    def __init__(self, window: int = WINDOW_PAGES) -> None:
        self.window = window
        self._costs: dict[str, deque[float]] = {}
        self._sums: dict[str, float] = {}
        self._last_done: dict[str, float] = {}

    def page_done(self, engine: str, at: float, took: float) -> None:
        """A page of `engine` finished at monotonic time `at`, `took` seconds after it was handed out."""
        previous = self._last_done.get(engine)
        self._last_done[engine] = at
        cost = max(0.0, took if previous is None else min(at - previous, took))
        costs = self._costs.setdefault(engine, deque())
        costs.append(cost)
        self._sums[engine] = self._sums.get(engine, 0.0) + cost
        if len(costs) > self.window:
            self._sums[engine] -= costs.popleft()

    def seconds_per_page(self) -> dict[str, float]:
        return {engine: max(0.0, self._sums[engine]) / len(costs) for engine, costs in self._costs.items() if costs}
