"""A `vllm serve` for DeepSeek-OCR that the daemon starts and supervises itself (vllm.managed).

The child is started with the flags DeepSeek-OCR needs (DESIGN section 4), in its own process
group, with its output forwarded line by line to the logger `ocr_watcher.vllm`. The supervisor
thread waits for it to answer (/health, then /v1/models), restarts it with exponential back-off when
it dies, and keeps a cheap `health()` answer for /readyz. It never imports vllm or torch: the
server is a separate program, found on PATH or named by `vllm.managed.command`.

Facts this relies on (vllm==0.12.0, the version pinned in pyproject's `gpu` extra; see docs/gpu.md):
- the n-gram processor is loaded with `--logits_processors
  vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor`; a processor that cannot be
  loaded makes the server fail at start-up and exit;
- later releases default to "Model Runner V2", whose loader rejects this (V1-interface) processor;
  `VLLM_USE_V2_MODEL_RUNNER=0` keeps the V1 runner, so it is always set in the child's environment;
- at start-up vLLM logs its arguments in one line, `... non-default args: {..., 'logits_processors':
  ['vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor'], ...}`. Seeing the
  processor there, and no error naming it, is the start-up check: a server that came up without it
  (a wrapper that dropped the flag, a different `command`) is reported by health() as not ready.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..sd_notify import NOTIFY_ENV, Notifier
from .vllm_server_status import (
    LOGITS_PROCESSOR,
    Phase,
    ProcessorSignal,
    State,
    backoff_delay,
    health_text,
    line_level,
    processor_signal,
)

log = logging.getLogger("ocr_watcher.vllm")
supervisor_log = logging.getLogger("ocr_watcher.engines.vllm_server")

# The pinned vLLM needs none of these, but they keep an upgraded one on the V1 model runner (which
# accepts this processor) and stop it phoning home.
CHILD_ENV = {"VLLM_USE_V2_MODEL_RUNNER": "0", "VLLM_NO_USAGE_STATS": "1", "PYTHONUNBUFFERED": "1"}
PROBE_TIMEOUT_SECONDS = 2.0
EXTEND_EVERY_SECONDS = 10.0  # EXTEND_TIMEOUT_USEC= while starting; each asks for 3x this much
STABLE_AFTER_SECONDS = 600.0  # up this long: the next failure starts the back-off from the beginning


# -- settings and the command line ----------------------------------------------------------------
@dataclass(frozen=True)
class ServerSettings:
    """What `vllm.model` and `vllm.managed` in the configuration say."""

    model: str = "deepseek-ai/DeepSeek-OCR"
    command: tuple[str, ...] = ("vllm",)
    host: str = "127.0.0.1"
    port: int = 8000
    gpu_memory_utilization: float | None = 0.9
    extra_args: tuple[str, ...] = ()
    startup_timeout_seconds: float = 1800.0
    logits_processor: str = LOGITS_PROCESSOR
    backoff_initial_seconds: float = 5.0
    backoff_max_seconds: float = 300.0
    poll_interval_seconds: float = 1.0
    stop_timeout_seconds: float = 30.0


def command_words(command: str | Sequence[str]) -> tuple[str, ...]:
    """`command` from YAML, a string ("vllm", "/opt/vllm/.venv/bin/vllm") or a list, as argv words."""
    words = tuple(shlex.split(command)) if isinstance(command, str) else tuple(command)
    if not words:
        raise ValueError("vllm.managed.command is empty: name the vllm program, e.g. 'vllm'")
    return words


def build_command(settings: ServerSettings) -> list[str]:
    """The full argv of the child: `vllm serve MODEL` with DeepSeek-OCR's flags, ours, then extra_args."""
    argv = [*settings.command, "serve", settings.model, "--host", settings.host, "--port", str(settings.port)]
    argv += ["--logits_processors", settings.logits_processor]
    argv += ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
    if settings.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", f"{settings.gpu_memory_utilization:g}"]
    return argv + list(settings.extra_args)


def build_env(base: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: ours, less systemd's notify variables, plus CHILD_ENV."""
    env = {name: value for name, value in base.items() if name not in NOTIFY_ENV}
    env.update(CHILD_ENV)
    return env


def server_root(host: str, port: int) -> str:
    """http://host:port (IPv6 literals in brackets; a wildcard bind is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# -- HTTP probes ----------------------------------------------------------------------------------
def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own URL)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return 0, b""


def probe(root: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> tuple[bool, list[str]]:
    """(answers, model ids): /health is 200 and /v1/models lists at least one model."""
    status, _ = _get(f"{root}/health", timeout)
    if status != 200:
        return False, []
    status, body = _get(f"{root}/v1/models", timeout)
    if status != 200:
        return False, []
    try:
        models = [str(entry.get("id")) for entry in json.loads(body).get("data", [])]
    except (ValueError, AttributeError):
        return False, []
    return bool(models), models


# -- the supervisor -------------------------------------------------------------------------------
class ManagedServer:
    """A supervised `vllm serve` child. start() launches it, health() says whether it can take pages,
    stop() ends it (SIGTERM to its process group, then SIGKILL). Thread-safe."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        extend_every: float = EXTEND_EVERY_SECONDS,
        stable_after: float = STABLE_AFTER_SECONDS,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.environ = dict(os.environ if environ is None else environ)
        self.clock = clock
        self.extend_every = extend_every
        self.stable_after = stable_after
        self.root = server_root(settings.host, settings.port)
        self.models: list[str] = []
        self.restart_delays: list[float] = []  # the back-off waited before each restart
        self.last_lines: deque[str] = deque(maxlen=20)
        self._lock = threading.Lock()
        self._state = State()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._readers: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """http://host:port, as `vllm.servers` entries are written (requests go to {url}/v1/...)."""
        return self.root

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def health(self) -> str | None:
        with self._lock:
            return health_text(self._state, self.clock(), self.settings.logits_processor)

    @property
    def starting(self) -> bool:
        """Started and not answering yet (loading the model); bounded by startup_timeout_seconds."""
        with self._lock:
            return self._state.phase is Phase.STARTING

    def start(self, wait: bool = False) -> bool:
        """Launch the supervisor; with wait, block until healthy or the start-up timeout (-> bool)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._supervise, name="vllm-supervisor", daemon=True)
            self._thread.start()
        return self.wait_ready(self.settings.startup_timeout_seconds) if wait else self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the server answers with the processor loaded; False on timeout or stop."""
        deadline = None if timeout is None else self.clock() + timeout
        while not self._stop.is_set():
            if self._ready.wait(0.2) and self.health() is None:
                return True
            if deadline is not None and self.clock() >= deadline:
                return False
        return False

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.settings.stop_timeout_seconds + 10)
        self._terminate()  # in case the supervisor thread was stuck
        self._set(Phase.STOPPED)

    # -- internals --------------------------------------------------------------------------------
    def _set(self, phase: Phase, **fields: object) -> None:
        with self._lock:
            self._state.phase = phase
            self._state.since = self.clock()
            for name, value in fields.items():
                setattr(self._state, name, value)
        if phase is Phase.UP:
            self._ready.set()
        else:
            self._ready.clear()

    def _supervise(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = self.clock()
            reason = self._run_once()
            if self._stop.is_set():
                break
            failures = 1 if self.clock() - started >= self.stable_after else failures + 1
            delay = backoff_delay(failures, self.settings.backoff_initial_seconds, self.settings.backoff_max_seconds)
            self.restart_delays.append(delay)
            supervisor_log.error("%s; restarting vLLM in %.0f s (failure %d)", reason, delay, failures)
            self._set(Phase.WAITING, reason=reason, retry_at=self.clock() + delay)
            self._stop.wait(delay)

    def _run_once(self) -> str:
        """Start the child and watch it until it ends or fails to start; returns why it ended."""
        argv = build_command(self.settings)
        with self._lock:
            self._state.processor, self._state.processor_line = None, ""
        self._set(Phase.STARTING)
        supervisor_log.info("starting vLLM: %s", shlex.join(argv))
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=build_env(self.environ),
                start_new_session=True,  # its own process group: stop() reaches the engine workers too
            )
        except OSError as exc:
            hint = "install it (pip install 'ocr-watcher[gpu]') or set vllm.managed.command"
            return f"cannot start vLLM ({argv[0]}): {exc}; {hint}"
        reader = threading.Thread(target=self._forward, args=(self._proc,), name="vllm-output", daemon=True)
        reader.start()
        self._readers = [reader]
        reason = self._wait_started(self._proc)
        if reason is None:
            reason = self._watch(self._proc)
        self._terminate()
        return reason

    def _wait_started(self, proc: subprocess.Popen[bytes]) -> str | None:
        started = last_extend = self.clock()
        self._extend()
        timeout = self.settings.startup_timeout_seconds
        while not self._stop.is_set():
            if proc.poll() is not None:
                return self._exit_reason(proc, "during start-up")
            answers, models = probe(self.root)
            if answers:
                self.models = models
                self._set(Phase.UP)
                supervisor_log.info("vLLM is up at %s, serving %s", self.url, ", ".join(models))
                return None
            now = self.clock()
            if now - started >= timeout:
                return f"vLLM did not answer within the start-up timeout ({timeout:g} s)"
            if now - last_extend >= self.extend_every:
                self._extend()
                last_extend = now
            self._stop.wait(self.settings.poll_interval_seconds)
        return "stopped"

    def _watch(self, proc: subprocess.Popen[bytes]) -> str:
        while not self._stop.wait(self.settings.poll_interval_seconds):
            if proc.poll() is not None:
                return self._exit_reason(proc, "")
            answers, _ = probe(self.root)
            with self._lock:
                phase = self._state.phase
            if answers and phase is not Phase.UP:
                self._set(Phase.UP)
            elif not answers and phase is Phase.UP and proc.poll() is None:
                self._set(Phase.UNRESPONSIVE)
        return "stopped"

    def _exit_reason(self, proc: subprocess.Popen[bytes], when: str) -> str:
        code = proc.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        for reader in self._readers:
            reader.join(2.0)  # let its last words reach the log first
        last = self.last_lines[-1] if self.last_lines else "no output"
        return f"vLLM {how}{' ' + when if when else ''} (last line: {last})"

    def _extend(self) -> None:
        if self.notifier is not None:
            self.notifier.send(f"EXTEND_TIMEOUT_USEC={int(self.extend_every * 3 * 1_000_000)}")

    def _forward(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.last_lines.append(line)
            log.log(line_level(line), "%s", line)
            signal_ = processor_signal(line, self.settings.logits_processor)
            if signal_ is not None:
                with self._lock:
                    if self._state.processor is not ProcessorSignal.FAILED:
                        self._state.processor, self._state.processor_line = signal_, line
        proc.stdout.close()

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(self.settings.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                supervisor_log.warning("vLLM did not stop within %g s; killing it", self.settings.stop_timeout_seconds)
                self._signal_group(proc, signal.SIGKILL)
                proc.wait()
        else:
            self._signal_group(proc, signal.SIGKILL)  # workers it left behind, if any
        for reader in self._readers:
            reader.join(2.0)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
