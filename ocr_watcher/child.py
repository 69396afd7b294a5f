"""Long-lived child processes spoken to in frames: how the daemon runs C libraries it cannot trust.

PDFium (rendering) and libtesseract (OCR) run in child processes, never in the daemon: a crash,
a hang or a memory blow-up in them must cost one call, not the daemon. A `FramedChild` starts its
process on the first call, enforces each call's time limit by killing it, reports a death in words
an operator can act on, and simply starts a fresh process on the next call.

Parent and child talk over the child's stdin/stdout in frames: a 4-byte big-endian length, then
UTF-8 JSON. The child side (`claim_stdout`, `serve_frames`) is here too; it needs only the
standard library.
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
from collections.abc import Callable
from typing import IO, Any

EXIT_OUT_OF_MEMORY = 86  # a child's exit status after a MemoryError under its RLIMIT_AS
_HEADER = struct.Struct(">I")
_MAX_FRAME = 256 << 20  # a page's text layer is the largest payload; anything bigger is garbage
_START_TIMEOUT_S = 60.0  # interpreter start + imports, not counted against a call's timeout
_CLOSE_GRACE_S = 5.0
_DEATH_GRACE_S = 2.0


class ChildTimeout(Exception):
    """The child exceeded a call's time limit and was killed."""


class ChildCrashed(Exception):
    """The child died: memory limit, a signal such as SIGSEGV, or an unexpected exit."""


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
            raise FrameError("the child process closed its output")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_frame_until(fd: int, deadline: float) -> dict[str, Any]:
    """One frame from the child, or TimeoutError / FrameError."""
    length = decode_length(_read_exact(fd, _HEADER.size, deadline))
    return json.loads(_read_exact(fd, length, deadline))


# --- the child's side -------------------------------------------------------------------------


def claim_stdout() -> IO[bytes]:
    """Keep the real stdout for frames only; anything else written to fd 1 (a print, a C library)
    goes to stderr instead of corrupting the protocol."""
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def serve_frames(protocol_out: IO[bytes], ready: dict[str, Any], handle: Callable[[dict], dict]) -> None:
    """Say `ready`, then answer each request frame on stdin with `handle`'s frame until EOF."""
    protocol_in = sys.stdin.buffer
    protocol_out.write(encode_frame(ready))
    protocol_out.flush()
    while (request := read_frame(protocol_in)) is not None:
        protocol_out.write(encode_frame(handle(request)))
        protocol_out.flush()


# --- exit status ------------------------------------------------------------------------------


def describe_exit(returncode: int | None, who: str, memory_mb: int | None = None) -> str:
    """Why the child died, in words an operator can act on; `who` names it ("the render worker")."""
    limit = f" (memory limit {memory_mb} MB)" if memory_mb else ""
    if returncode == EXIT_OUT_OF_MEMORY:
        return f"{who} ran out of memory (limit {memory_mb} MB)"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{who} was killed by {name}{limit}"
    return f"{who} exited unexpectedly with status {returncode}"


# --- the parent's side ------------------------------------------------------------------------


class FramedChild:
    """One child process and the calls to it.

    Thread-compatible, not thread-safe: one thread uses a FramedChild at a time; run several for
    parallel work. The child starts on the first call and is replaced after a timeout, a crash, or
    `max_tasks` calls (to shed whatever a long run of inputs left behind in a C library).
    Subclasses name the child (`who`) and the exceptions their callers expect.
    """

    who = "the child process"
    timeout_error: type[Exception] = ChildTimeout
    crash_error: type[Exception] = ChildCrashed

    def __init__(
        self, argv: list[str], *, max_tasks: int, env: dict[str, str] | None = None, memory_mb: int | None = None
    ):
        self.argv = argv
        self.max_tasks = max_tasks
        self.env = env
        self.memory_mb = memory_mb  # the child's own limit, named when it dies of it
        self.ready: dict[str, Any] = {}  # the current child's ready message
        self._proc: subprocess.Popen[bytes] | None = None
        self._tasks = 0

    def __enter__(self) -> FramedChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The current child's pid, None when none is running."""
        return self._proc.pid if self._proc else None

    def start(self) -> dict[str, Any]:
        """Start the child now (it starts on the first call otherwise); its ready message."""
        self._ensure_started()
        return self.ready

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

    def call(self, request: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
        """Send one request, wait up to `timeout` s for its answer; `what` names it in errors."""
        if self._tasks >= self.max_tasks:
            self.close()
        proc = self._ensure_started()
        self._tasks += 1
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(encode_frame(request))
            proc.stdin.flush()
            return read_frame_until(proc.stdout.fileno(), time.monotonic() + timeout)
        except TimeoutError:
            self._stop()
            raise self.timeout_error(f"{what} took longer than {timeout:g} s; {self.who} was stopped") from None
        except (OSError, FrameError, ValueError) as exc:  # ValueError: a frame that is not JSON
            returncode = self._stop(grace=_DEATH_GRACE_S)
            raise self.crash_error(f"{self._describe(returncode)} while {what}") from exc
        except BaseException:  # e.g. KeyboardInterrupt: a late answer must not reach the next call
            self._stop()
            raise

    # -- internals

    def _describe(self, returncode: int | None) -> str:
        return describe_exit(returncode, self.who, self.memory_mb)

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is not None:
            self._stop()  # died while idle (OOM killer, an operator): not this call's fault
        if self._proc is not None:
            return self._proc
        proc = subprocess.Popen(
            self.argv,
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
            raise self.crash_error(f"{self.who} did not start: {self._describe(returncode)}") from exc
        if not ready.get("ready"):
            self._stop(grace=_DEATH_GRACE_S)
            if ready.get("error"):  # the child's own reason (a missing language, ...)
                raise self.crash_error(f"{self.who} did not start: {ready['error']}")
            raise self.crash_error(f"{self.who} sent {ready!r} instead of its ready message")
        self.ready = ready
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
