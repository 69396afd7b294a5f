"""Which hooks a running daemon gets (see hooks.py)."""

from __future__ import annotations

from . import metrics, notify
from .config import Config
from .deliveries import daemon_hooks as deliveries
from .eta import daemon_hooks as eta
from .hooks import HookList
from .http import HttpHooks
from .retention import daemon_hooks as retention


def build_hooks(config: Config) -> HookList:
    """Retention first (it measures the outbox the metrics report), then metrics and the HTTP server
    that serves them (with the job API), then systemd, then the deliveries (webhooks, commands),
    then the estimates of the jobs in the queue."""
    measure = metrics.make_hooks(config)
    hooks = HookList([retention.make_hooks(config), measure])
    if isinstance(measure, metrics.MetricsHooks):
        hooks.add(HttpHooks(config, measure))
    hooks.add(notify.make_hooks(config))
    hooks.add(deliveries.make_hooks(config))
    hooks.add(eta.make_hooks(config))
    return hooks
