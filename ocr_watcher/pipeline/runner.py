"""The page pipeline: render stage -> bounded hand-over -> engine stage.

Render threads each drive one isolated render process (renderer.py) and take tasks from the shared
PageScheduler; rendered pages wait in a small priority buffer (rendering ahead, bounded memory);
engine threads recognise them and write each page's files. Outcomes go to the main loop as events:
the main loop alone changes job state.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engines.base import Engine, PageError, PageInput
from ..engines.geometry import with_points
from ..spool.model import iso, utc_now
from ..spool.store import JobStore
from .renderer import DocumentInfo, InputError, RenderCrashed, RenderedPage, RenderTimeout, RenderWorker
from .scheduler import OpenTask, PageScheduler, PageTask, RunningJob

log = logging.getLogger("ocr_watcher.pipeline")


@dataclass
class Opened:
    job: RunningJob
    info: DocumentInfo | None = None
    error: InputError | None = None
    transient: str | None = None  # the render process died or timed out while opening


@dataclass
class PageDone:
    job: RunningJob
    page: int
    info: dict[str, Any] = field(default_factory=dict)  # what pages/NNNN.json holds


@dataclass
class PageFailed:
    job: RunningJob
    page: int
    error: str
    permanent: bool = False  # no point retrying (the input itself is bad)
    stage: str = "render"  # "render", "engine", "write" or "cancelled": where it went wrong
    os_error: OSError | None = None  # what the outbox said, when the write failed


Event = Opened | PageDone | PageFailed


@dataclass(order=True)
class _Rendered:
    order: tuple
    seq: int
    task: PageTask = field(compare=False)
    rendered: RenderedPage = field(compare=False)
    queued_at: float = field(compare=False)
    render_seconds: float = field(compare=False)


@dataclass
class PipelineSettings:
    render_threads: int
    engine_threads: int
    render_ahead: int
    render_timeout: float
    render_memory_mb: int
    work_dir: Path
    worker_id: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def page_geometry(blocks: list[dict] | None, size_px: tuple[int, int], size_pt: list[float] | None) -> dict:
    """The page JSON's `size_pt` and `blocks` (engines/geometry.py), boxes in points added."""
    found: dict[str, Any] = {"size_pt": [round(v, 2) for v in size_pt]} if size_pt else {}
    if blocks:
        if size_pt:
            with_points(blocks, size_px, (size_pt[0], size_pt[1]))
        found["blocks"] = blocks
    return found


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        scheduler: PageScheduler,
        store: JobStore,
        engine_for: Callable[[RunningJob], Engine],
        emit: Callable[[Event], None],
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.store = store
        self.engine_for = engine_for
        self.emit = emit
        self._buffer: queue.PriorityQueue[_Rendered] = queue.PriorityQueue(maxsize=settings.render_ahead)
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[RenderWorker] = []
        self.busy = 0  # pages being rendered or recognised right now (approximate, for status)

    def start(self) -> None:
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.scheduler.set_render_slots(self.settings.render_threads)
        for index in range(self.settings.render_threads):
            worker = RenderWorker(memory_mb=self.settings.render_memory_mb)
            self._workers.append(worker)
            self._spawn(f"render-{index}", self._render_loop, worker)
        for index in range(self.settings.engine_threads):
            self._spawn(f"engine-{index}", self._engine_loop)

    def stop(self, grace: float) -> None:
        """Stop taking tasks, let pages in flight finish for up to `grace` seconds."""
        self._stop.set()
        self.scheduler.close()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            worker.close()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- render stage --------------------------------------------------------------------------
    def _render_loop(self, worker: RenderWorker) -> None:
        while not self._stop.is_set():
            task = self.scheduler.next_task(timeout=0.5)
            if task is None:
                continue
            try:
                if isinstance(task, OpenTask):
                    self._open(worker, task.job)
                else:
                    self._render(worker, task)
            finally:
                self.scheduler.task_finished(task)  # this render slot is free for the next task

    def _open(self, worker: RenderWorker, job: RunningJob) -> None:
        try:
            info = worker.probe(job.input_path, timeout=self.settings.render_timeout)
        except InputError as exc:
            self.emit(Opened(job, error=exc))
        except (RenderTimeout, RenderCrashed) as exc:
            self._suspect(job, exc)
            self.emit(Opened(job, transient=str(exc) or type(exc).__name__))
        except OSError as exc:
            self.emit(Opened(job, error=InputError("unreadable", f"cannot read the input: {exc}")))
        else:
            self.emit(Opened(job, info=info))

    def _render(self, worker: RenderWorker, task: PageTask) -> None:
        job = task.job
        if job.cancelled:
            self.emit(PageFailed(job, task.page, "cancelled", stage="cancelled"))
            return
        spec = self.engine_for(job).render_spec
        suffix = ".png" if spec.image_format == "png" else (".pgm" if spec.grayscale else ".ppm")
        out_path = self.settings.work_dir / f"{job.job_id}-{task.page:05d}-{task.try_number}{suffix}"
        started = time.monotonic()
        self.busy += 1
        try:
            rendered = worker.render(job.input_path, task.page, spec, out_path, timeout=self.settings.render_timeout)
        except InputError as exc:
            self.busy -= 1
            self.emit(PageFailed(job, task.page, f"{exc.type}: {exc}", permanent=True))
            return
        except (RenderTimeout, RenderCrashed, OSError) as exc:
            self.busy -= 1
            if isinstance(exc, (RenderTimeout, RenderCrashed)):
                self._suspect(job, exc)
            self.emit(PageFailed(job, task.page, f"rendering failed: {exc or type(exc).__name__}"))
            return
        now = time.monotonic()
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        item = _Rendered(task.order, seq, task, rendered, now, now - started)
        while not self._stop.is_set():
            try:
                self._buffer.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        _remove(rendered.image_path)
        self.busy -= 1

    def _suspect(self, job: RunningJob, exc: Exception) -> None:
        # Before the event goes out, so that the main loop's retry already sees the job as suspect
        # (and puts the page last in its line).
        if self.scheduler.mark_suspect(job):
            slots = self.settings.render_threads // 2
            share = f"at most {slots} of {self.settings.render_threads}" if slots else "only idle"
            log.warning("%s: a render %s; its pages now get %s render slots", job.job_id, _what(exc), share)

    # -- engine stage --------------------------------------------------------------------------
    def _engine_loop(self) -> None:
        while not (self._stop.is_set() and self._buffer.empty()):
            try:
                item = self._buffer.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._recognize(item)
            finally:
                _remove(item.rendered.image_path)
                self.busy -= 1

    def _recognize(self, item: _Rendered) -> None:
        task, job = item.task, item.task.job
        if job.cancelled:
            self.emit(PageFailed(job, task.page, "cancelled", stage="cancelled"))
            return
        engine = self.engine_for(job)
        started = time.monotonic()
        page_input = PageInput(
            job_id=job.job_id,
            page=task.page,
            image_path=item.rendered.image_path,
            text=item.rendered.text,
            width=item.rendered.width,
            height=item.rendered.height,
            source_reason=item.rendered.source_reason,
            spans=item.rendered.spans,
        )
        try:
            output = engine.recognize(page_input)
        except PageError as exc:
            self.emit(PageFailed(job, task.page, f"{engine.name}: {exc}", stage="engine"))
            return
        except Exception as exc:  # an engine bug must cost one page, never the daemon
            log.exception("%s: page %d: engine %s crashed", job.job_id, task.page, engine.name)
            self.emit(PageFailed(job, task.page, f"{engine.name} crashed: {exc!r}", stage="engine"))
            return
        engine_seconds = time.monotonic() - started
        if job.cancelled or self.store.is_fenced(job.job_id, job.epoch):
            self.emit(PageFailed(job, task.page, "cancelled or taken over", stage="cancelled"))
            return
        warnings = list(output.warnings)
        if item.rendered.scale_note:
            warnings.append(item.rendered.scale_note)
        info = {
            "page": task.page,
            "status": "done",
            "engine": output.engine,
            "model": output.model,
            "worker": self.settings.worker_id,
            "session": self.settings.session,
            "attempt": task.try_number,
            "width": item.rendered.width,
            "height": item.rendered.height,
            "seconds_render": round(item.render_seconds, 4),
            "seconds_queue": round(started - item.queued_at, 4),
            "seconds_engine": round(engine_seconds, 4),
            "finished_at": iso(utc_now()),
            "chars": len(output.markdown),
            "warnings": warnings,
            **({"source": output.source, "source_reason": output.source_reason} if output.source else {}),
            **({"rotation": output.rotation} if output.rotation is not None else {}),
            **({"skew": output.skew} if output.skew is not None else {}),
            **page_geometry(output.blocks, (item.rendered.width, item.rendered.height), item.rendered.size_pt),
            **({"extra": output.extra} if output.extra else {}),
        }
        try:
            figures = output.extra.get("figures") or []
            if figures and item.rendered.image_path is not None:
                save_figures(item.rendered.image_path, figures, self.store.paths(job.job_id).images)
            self.store.write_page(job.job_id, task.page, output.markdown, info)
        except FileNotFoundError:
            self.emit(PageFailed(job, task.page, "job folder removed", stage="cancelled"))
            return
        except OSError as exc:
            self.emit(PageFailed(job, task.page, f"cannot write the page: {exc}", stage="write", os_error=exc))
            return
        self.emit(PageDone(job, task.page, info))


def save_figures(page_image: Path, figures: list[dict[str, Any]], images_dir: Path) -> None:
    """Crop the figures an engine located on the rendered page into the job's images/ folder.

    The page image is one we rendered ourselves, so decoding it here is safe; boxes were clamped to
    it by the engine's post-processing.
    """
    from PIL import Image

    from ..spool.atomic import atomic_write_bytes

    images_dir.mkdir(exist_ok=True)
    with Image.open(page_image) as page:
        for figure in figures:
            crop = page.crop(tuple(figure["box_px"]))
            buffer = io.BytesIO()
            crop.save(buffer, "PNG")
            atomic_write_bytes(images_dir / figure["name"], buffer.getvalue(), fsync=False)


def _what(exc: Exception) -> str:
    return "timed out" if isinstance(exc, RenderTimeout) else "crashed"


def _remove(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
