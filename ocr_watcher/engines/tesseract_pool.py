"""Parent side of in-process Tesseract: long-lived OCR worker processes, one page at a time each.

Each `TesseractWorker` is one `tesseract_worker` child holding a loaded model (`child.FramedChild`:
a call past its time limit kills the child, a crash is reported with its signal, and the next call
starts a fresh child). A `WorkerPool` hands each concurrent page its own worker, starting one when
none is idle, so the pool grows to the pipeline's engine threads and no further.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ocr_watcher import child

log = logging.getLogger("ocr_watcher.engines.tesseract")

_MAX_PAGES_PER_WORKER = 1000  # then a fresh process: sheds whatever libtesseract kept (a restart is ~0.3 s)


@dataclass(frozen=True)
class WorkerSettings:
    tessdata: str
    language: str
    psm: int
    dpi: int


class TesseractWorker(child.FramedChild):
    who = "the tesseract worker"

    def __init__(self, settings: WorkerSettings):
        argv = [sys.executable, "-m", "ocr_watcher.engines.tesseract_worker", "--tessdata", settings.tessdata]
        argv += ["--language", settings.language, "--psm", str(settings.psm), "--dpi", str(settings.dpi)]
        # One thread per process, read by the library when it loads: pages run in parallel processes.
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        super().__init__(argv, max_tasks=_MAX_PAGES_PER_WORKER, env=env)

    def tsv(self, image_path: str, timeout: float) -> str:
        """Tesseract's TSV for one rendered page; ChildTimeout, ChildCrashed or ValueError (unreadable)."""
        response = self.call({"op": "ocr", "path": image_path}, timeout, "reading the page")
        if not response.get("ok"):
            raise ValueError(response.get("error", {}).get("message", f"the tesseract worker answered {response!r}"))
        return response["result"]["tsv"]


class WorkerPool:
    """The OCR workers of one engine. Thread-safe: each caller gets a worker of its own."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self._idle: list[TesseractWorker] = []
        self._busy: set[TesseractWorker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self, count: int) -> dict[str, Any]:
        """Start one worker now (ChildCrashed says why it cannot run), the rest of `count` in the
        background so the first pages do not wait for them; the first one's ready message."""
        first = TesseractWorker(self.settings)
        ready = first.start()
        self._give_back(first)
        if count > 1:
            threading.Thread(target=self._warm, args=(count - 1,), name="tesseract-warm", daemon=True).start()
        return ready

    def tsv(self, image_path: str, timeout: float) -> str:
        worker = self._take()
        try:
            return worker.tsv(image_path, timeout)
        finally:
            self._give_back(worker)

    def busy_pids(self) -> list[int]:
        """Pids of the workers reading a page right now."""
        with self._lock:
            return [pid for worker in self._busy if (pid := worker.pid) is not None]

    def idle_pids(self) -> list[int]:
        """Pids of the workers waiting for a page (a worker whose child died shows none)."""
        with self._lock:
            return [pid for worker in self._idle if (pid := worker.pid) is not None]

    def close(self) -> None:
        """End the idle workers now; a busy one ends when its page is done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()

    def _warm(self, count: int) -> None:
        for _ in range(count):
            worker = TesseractWorker(self.settings)
            try:
                worker.start()
            except child.ChildCrashed as exc:  # the first one started: a page will start it again
                log.warning("a tesseract worker did not start ahead of the pages: %s", exc)
            self._give_back(worker)

    def _take(self) -> TesseractWorker:
        with self._lock:
            worker = self._idle.pop() if self._idle else TesseractWorker(self.settings)
            self._busy.add(worker)
            return worker

    def _give_back(self, worker: TesseractWorker) -> None:
        with self._lock:
            self._busy.discard(worker)
            closed = self._closed
            if not closed:
                self._idle.append(worker)
        if closed:
            worker.close()
