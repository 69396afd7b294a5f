"""inotify through watchdog: only a hint that a path changed; polling stays the source of truth.

One non-recursive watch per inbox folder that the scan visits, kept in step with the scan. A
recursive watch would also follow the hidden claim area, where folders come and go many times a
second, for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch


class _Hint(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str], None], rescan: Callable[[], None]) -> None:
        self.notify = notify
        self.rescan = rescan

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.rescan()  # a folder arrived, maybe full of files: scan it (and watch it) now
            return
        path = getattr(event, "dest_path", "") or event.src_path
        self.notify(str(path))


# Only what can make a file appear or change. Opens and reads are left out: the daemon's own reads
# of each inbox file (sniffing) would otherwise come back as events about that file.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class FolderWatcher:
    def __init__(self, notify: Callable[[str], None], rescan: Callable[[], None]) -> None:
        self._handler = _Hint(notify, rescan)
        self._observer = Observer()
        self._observer.daemon = True
        self._watches: dict[Path, ObservedWatch] = {}

    def start(self, root: Path) -> None:
        self._observer.start()
        self.sync([root])

    def sync(self, folders: Iterable[Path]) -> None:
        """Watch exactly these folders (the inbox and the subfolders the last scan saw)."""
        wanted = set(folders)
        for folder in [f for f in self._watches if f not in wanted]:
            try:
                self._observer.unschedule(self._watches.pop(folder))
            except (KeyError, OSError):
                pass
        for folder in wanted - self._watches.keys():
            try:
                self._watches[folder] = self._observer.schedule(
                    self._handler, str(folder), recursive=False, event_filter=WATCHED_EVENTS
                )
            except OSError:
                pass  # vanished meanwhile, or out of inotify watches: polling covers it

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
