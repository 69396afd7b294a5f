"""Which hooks a running daemon gets (see hooks.py)."""

from __future__ import annotations

from . import metrics, notify, retention
from .config import Config
from .hooks import HookList


def build_hooks(config: Config) -> HookList:
    """Retention first (it measures the outbox the metrics report), then metrics, then systemd."""
    return HookList([retention.make_hooks(config), metrics.make_hooks(config), notify.make_hooks(config)])
