"""The delivery worker: a process of its own, started by the daemon (daemon_hooks.py), that sends the
webhooks and runs the commands the daemon records. A process, not threads of the daemon, so that the
work of telling receivers (HTTP, JSON, the records) never takes the daemon's interpreter lock from
OCR; and at a lower CPU priority, so that on a busy machine OCR comes first.

    python -m ocr_watcher.deliveries.worker OUTBOX WORKER_ID LEASE_SECONDS FSYNC LOG_LEVEL

Its pipes, one JSON document a line: stdin from the daemon ({"settings": ...} first and after each
reload, {"owe": <pending file name>, "confirmed": bool}); stdout to the daemon ({"kind",
"outcome"} per try, for the metrics). Its end of stdin closing (the daemon stopped or died) ends it;
what it had not done stays on disk for the next one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ..log_setup import setup_logging
from ..observe import DeliveryEnded
from ..spool.store import JobStore
from ..spool.workers import Heartbeats
from .deliverer import Deliverer
from .settings import Settings

log = logging.getLogger("ocr_watcher.deliveries")
NICENESS = 10
RECOVER_SECONDS = 30.0  # how often the pending folder is looked at for a gone daemon's deliveries


class Worker:
    def __init__(self, outbox: Path, worker_id: str, lease: float, fsync: bool, out: Any) -> None:
        self.settings = Settings()
        self._out, self._out_lock = out, threading.Lock()
        store = JobStore(outbox, fsync=fsync)
        beats = Heartbeats(store.layout, worker_id, socket.gethostname(), lease)
        self.deliverer = Deliverer(store, worker_id, lambda: self.settings, self.report, beats.is_gone)
        self._stop = threading.Event()
        self._configured = threading.Event()  # nothing is sent before the settings are here

    def report(self, ended: DeliveryEnded) -> None:
        with self._out_lock:
            self._out.write(json.dumps({"kind": ended.kind, "outcome": ended.outcome}) + "\n")
            self._out.flush()

    def handle(self, message: dict[str, Any]) -> None:
        if "settings" in message:
            self.settings = Settings(message["settings"])
            self._configured.set()
        elif "owe" in message:
            name, confirmed = str(message["owe"]), bool(message.get("confirmed"))
            if not (confirmed and self.deliverer.confirm(name)):  # held already: confirmed, or a new one
                pending = self.deliverer.folder.read(name)
                if pending is not None:
                    self.deliverer.take(pending, confirmed)

    def read(self, lines: Any) -> None:
        """The daemon's messages, until its end of the pipe closes."""
        for line in lines:
            try:
                self.handle(json.loads(line))
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("delivery worker: a message it cannot read: %s", exc)
        self._stop.set()
        self._configured.set()

    def run(self, lines: Any) -> None:
        reader = threading.Thread(target=self.read, args=(lines,), name="delivery-pipe", daemon=True)
        reader.start()
        self._configured.wait()
        self.deliverer.start()
        while not self._stop.is_set():
            taken = self.deliverer.recover()
            if taken:
                log.info("%d deliveries owed from before (or by a daemon that is gone); sending them", taken)
            self._stop.wait(RECOVER_SECONDS)
        self.deliverer.stop()


def main(argv: list[str]) -> int:
    outbox, worker_id, lease, fsync, level = argv
    setup_logging(level)
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    worker = Worker(Path(outbox), worker_id, float(lease), fsync == "1", sys.stdout)
    worker.run(sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
