"""Which hooks a running daemon gets (see hooks.py)."""

from __future__ import annotations

import importlib

from .config import Config
from .hooks import HookList

# Each module offers `make_hooks(config) -> Hooks`. While the operations work lands module by module,
# a module that does not exist yet is skipped; once all exist this becomes plain imports.
HOOK_MODULES = ("ocr_watcher.retention", "ocr_watcher.metrics", "ocr_watcher.notify")


def build_hooks(config: Config) -> HookList:
    hooks = HookList()
    for name in HOOK_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        hooks.add(module.make_hooks(config))
    return hooks
