"""Parent side of page rendering: a client for one isolated render worker process.

PDFium is not thread-safe, and a hostile PDF can hang it or eat memory. So every PDF or image
operation runs in a long-lived child process (`render_worker`), one per pipeline thread. The child
has a memory limit; the parent enforces a time limit by killing it. Either way the next call simply
starts a fresh child, and the daemon itself never runs PDFium.

The two talk over the child's stdin/stdout in frames: a 4-byte big-endian length, then UTF-8 JSON.
This module holds that framing too, so the child imports it (it only needs the standard library).
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

from ocr_watcher.engines.base import RenderSpec

EXIT_OUT_OF_MEMORY = 86  # the child's exit status after a MemoryError under its RLIMIT_AS
_HEADER = struct.Struct(">I")
_MAX_FRAME = 256 << 20  # a page's text layer is the largest payload; anything bigger is garbage
_START_TIMEOUT_S = 60.0  # interpreter start + imports, not counted against a call's timeout
_CLOSE_GRACE_S = 5.0
_DEATH_GRACE_S = 2.0


class InputError(Exception):
    """The input itself is bad (encrypted, corrupt, not a document ...); the job fails with this."""

    def __init__(self, type: str, message: str):
        super().__init__(message)
        self.type = type
        self.message = message


class RenderTimeout(Exception):
    """The child exceeded the time limit and was killed."""


class RenderCrashed(Exception):
    """The child died: memory limit, a signal such as SIGSEGV, or an unexpected exit."""


@dataclass
class DocumentInfo:
    kind: Literal["pdf", "image"]
    pages: int
    encrypted: bool = False  # a PDF with an owner password only: it opens, but is encrypted
    format: str = ""  # "PDF", "PNG", "JPEG", "TIFF"


@dataclass
class RenderedPage:
    image_path: Path | None
    text: str | None
    width: int
    height: int
    scale_note: str | None = None  # e.g. "scaled down from 60000x60000 px to 5000x5000 px"


# --- framing ----------------------------------------------------------------------------------


class FrameError(Exception):
    """The other side closed the pipe or sent something that is not a frame."""


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    return _HEADER.pack(len(body)) + body


def decode_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > _MAX_FRAME:
        raise FrameError(f"frame of {length} bytes is over the {_MAX_FRAME} byte limit")
    return length


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """Blocking read of one frame (the child's side); None on a clean end of input."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise FrameError("input ended inside a frame header")
    length = decode_length(header)
    body = stream.read(length)
    if len(body) < length:
        raise FrameError("input ended inside a frame")
    return json.loads(body)


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    """Read `size` bytes from a pipe, giving up at `deadline` (time.monotonic)."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, missing)
        if not chunk:
            raise FrameError("the render worker closed its output")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_frame_until(fd: int, deadline: float) -> dict[str, Any]:
    """One frame from the child, or TimeoutError / FrameError."""
    length = decode_length(_read_exact(fd, _HEADER.size, deadline))
    return json.loads(_read_exact(fd, length, deadline))


# --- exit status ------------------------------------------------------------------------------


def describe_exit(returncode: int | None, memory_mb: int) -> str:
    """Why the child died, in words an operator can act on."""
    if returncode == EXIT_OUT_OF_MEMORY:
        return f"the render worker ran out of memory (limit {memory_mb} MB)"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the render worker was killed by {name} (memory limit {memory_mb} MB)"
    return f"the render worker exited unexpectedly with status {returncode}"


# --- the client -------------------------------------------------------------------------------


class RenderWorker:
    """One render child process and the calls to it.

    Thread-compatible, not thread-safe: one thread uses a RenderWorker at a time; run several
    RenderWorkers for parallel rendering. The child starts on the first call and is replaced after
    a timeout, a crash, or `max_tasks` calls (to shed whatever a long run of PDFs left behind).
    """

    def __init__(self, *, memory_mb: int = 2048, max_tasks: int = 500, env: dict[str, str] | None = None):
        self.memory_mb = memory_mb
        self.max_tasks = max_tasks
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._tasks = 0

    def __enter__(self) -> RenderWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The current child's pid, None when none is running."""
        return self._proc.pid if self._proc else None

    def probe(self, path: Path, *, timeout: float) -> DocumentInfo:
        result = self._call({"op": "probe", "path": str(path)}, timeout, f"reading {path}")
        return DocumentInfo(**result)

    def render(self, path: Path, page: int, spec: RenderSpec, out_path: Path, *, timeout: float) -> RenderedPage:
        """Render page `page` (1-based) as `spec` asks; an image goes to `out_path` (its suffix picks
        the format: .pgm/.ppm/.pnm uncompressed, .png for engines that want PNG)."""
        request = {
            "op": "render",
            "path": str(path),
            "page": page,
            "spec": asdict(spec),
            "out_path": str(out_path),
        }
        try:
            result = self._call(request, timeout, f"rendering page {page} of {path}")
        except (RenderTimeout, RenderCrashed):
            out_path.unlink(missing_ok=True)  # never leave a half-written bitmap behind
            raise
        image_path = result.pop("image_path")
        return RenderedPage(image_path=Path(image_path) if image_path else None, **result)

    def close(self) -> None:
        """End the child: EOF on its input lets it exit; kill it if it does not."""
        proc, self._proc = self._proc, None
        self._tasks = 0
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=_CLOSE_GRACE_S)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout:
                proc.stdout.close()

    # -- internals

    def _call(self, request: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
        if self._tasks >= self.max_tasks:
            self.close()
        proc = self._ensure_started()
        self._tasks += 1
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(encode_frame(request))
            proc.stdin.flush()
            response = read_frame_until(proc.stdout.fileno(), time.monotonic() + timeout)
        except TimeoutError:
            self._stop()
            raise RenderTimeout(f"{what} took longer than {timeout:g} s; the render worker was stopped") from None
        except (OSError, FrameError, ValueError) as exc:  # ValueError: a frame that is not JSON
            returncode = self._stop(grace=_DEATH_GRACE_S)
            raise RenderCrashed(f"{describe_exit(returncode, self.memory_mb)} while {what}") from exc
        except BaseException:  # e.g. KeyboardInterrupt: a late answer must not reach the next call
            self._stop()
            raise
        return _unpack(response)

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is not None:
            self._stop()  # died while idle (OOM killer, an operator): not this call's fault
        if self._proc is not None:
            return self._proc
        proc = subprocess.Popen(
            [sys.executable, "-m", "ocr_watcher.pipeline.render_worker", "--memory-mb", str(self.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,  # we read the raw pipe with select(); no buffering layer may hide bytes
            env=self.env,
            close_fds=True,
        )
        self._proc = proc
        assert proc.stdout is not None
        try:
            ready = read_frame_until(proc.stdout.fileno(), time.monotonic() + _START_TIMEOUT_S)
        except (TimeoutError, FrameError, ValueError) as exc:
            returncode = self._stop(grace=_DEATH_GRACE_S)
            raise RenderCrashed(
                f"the render worker did not start: {describe_exit(returncode, self.memory_mb)}"
            ) from exc
        if not ready.get("ready"):
            self._stop()
            raise RenderCrashed(f"the render worker sent {ready!r} instead of its ready message")
        return proc

    def _stop(self, grace: float = 0.0) -> int | None:
        """Reap the child, with SIGKILL unless it exits within `grace` s; its exit status.

        A child that closed its output is usually exiting already: the grace lets us see its own
        status (out of memory, a signal) instead of our SIGKILL.
        """
        proc, self._proc = self._proc, None
        self._tasks = 0
        if proc is None:
            return None
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
        returncode = proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass  # closing stdin flushes; the pipe is broken when the child is dead
        return returncode


def _unpack(response: dict[str, Any]) -> dict[str, Any]:
    if response.get("ok"):
        return response["result"]
    error = response.get("error", {})
    if error.get("kind") == "input":
        raise InputError(error["type"], error["message"])
    if error.get("kind") == "output":
        raise OSError(error["message"])
    raise ValueError(error.get("message", f"the render worker rejected the request: {response!r}"))
