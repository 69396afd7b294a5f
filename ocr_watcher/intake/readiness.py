"""Is an inbox file completely written? Pure decisions over what was observed, no I/O.

A file is ready when its size, mtime and inode have not changed for `settle` seconds and its bytes
say it is complete (see sniff.py). One that settles but never becomes valid is claimed after
`invalid_timeout` more seconds and fails with the reason, so nothing is silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .sniff import Sniff, Verdict


@dataclass(frozen=True)
class Observation:
    size: int
    mtime_ns: int
    ino: int


@dataclass
class Tracked:
    observation: Observation
    stable_since: float  # monotonic seconds when this observation was first made
    sniff: Sniff | None = None  # cached for this observation


class Action(str, Enum):
    WAIT = "wait"
    SNIFF = "sniff"  # settled: look at the bytes
    CLAIM = "claim"  # a complete PDF or image
    CLAIM_FAILED = "claim_failed"  # claim it as a failed job with the sniff's error


def observe(tracked: Tracked | None, observation: Observation, now: float) -> Tracked:
    """Record a stat; any change restarts the settle clock and forgets the sniff."""
    if tracked is None or tracked.observation != observation:
        return Tracked(observation, now)
    return tracked


def decide(tracked: Tracked, now: float, settle: float, invalid_timeout: float) -> Action:
    settled_for = now - tracked.stable_since
    if settled_for < settle:
        return Action.WAIT
    if tracked.sniff is None:
        return Action.SNIFF
    verdict = tracked.sniff.verdict
    if verdict is Verdict.JOB:
        return Action.CLAIM
    if verdict is Verdict.REJECT or settled_for >= settle + invalid_timeout:
        return Action.CLAIM_FAILED
    return Action.WAIT


def next_check_in(tracked: Tracked, now: float, settle: float, invalid_timeout: float) -> float:
    """Seconds until `decide` could answer differently without a new observation."""
    settled_for = now - tracked.stable_since
    if settled_for < settle:
        return settle - settled_for
    return max(0.0, settle + invalid_timeout - settled_for)
