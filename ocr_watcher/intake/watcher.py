"""inotify through watchdog: only a hint that a path changed; polling stays the source of truth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Hint(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        path = getattr(event, "dest_path", "") or event.src_path
        self.notify(str(path))


def start_observer(root: Path, notify: Callable[[str], None]):
    observer = Observer()
    observer.schedule(_Hint(notify), str(root), recursive=True)
    observer.daemon = True
    observer.start()
    return observer
