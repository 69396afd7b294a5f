"""ManagedServer: the supervised `vllm serve` child.

No GPU and no vLLM here: the child is a stand-in for vLLM, a small HTTP server written below that
takes `serve MODEL --host H --port P [flags]` like `vllm serve`, logs a "non-default args" line as
vLLM does (naming --logits_processors when it was given), and answers /health and /v1/models. Its
behaviour is chosen with FAKE_VLLM_* environment variables. When tests/fake_vllm.py (the shared
fake OpenAI-compatible server) exists, one more test runs against it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocr_watcher.engines.vllm_server import (
    CHILD_ENV,
    ManagedServer,
    ServerSettings,
    build_command,
    build_env,
    command_words,
    server_root,
)
from ocr_watcher.engines.vllm_server_status import (
    LOGITS_PROCESSOR,
    Phase,
    ProcessorSignal,
    State,
    backoff_delay,
    backoff_schedule,
    health_text,
    line_level,
    processor_signal,
)
from ocr_watcher.notify import Notifier

REPO = Path(__file__).resolve().parents[1]

STAND_IN = textwrap.dedent(
    '''
    """A stand-in for `vllm serve`, for tests only."""
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    argv = sys.argv[1:]
    assert argv[0] == "serve", argv
    model = argv[1]
    opts = {}
    i = 2
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            opts[argv[i]] = argv[i + 1]
            i += 2
        else:
            opts[argv[i]] = True
            i += 1
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    prefix = f"(APIServer pid={os.getpid()}) INFO 01-01 00:00:00"
    print(f"{prefix} [api_server.py:1] vLLM API server version 0.12.0", flush=True)
    args = {"model_tag": model, "model": model}
    if "--logits_processors" in opts and mode != "drop-processor":
        args["logits_processors"] = [opts["--logits_processors"]]
    args["enable_prefix_caching"] = False
    print(f"(APIServer pid={os.getpid()}) INFO 01-01 00:00:00 [utils.py:253] non-default args: {args!r}", flush=True)
    if mode == "reject-processor":
        print("(EngineCore_DP0) ERROR 01-01 00:00:00 [core.py:1] ValueError: "
              "NGramPerReqLogitsProcessor is not supported by Model Runner V2", flush=True)
    print("stand-in warning on stderr", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("FAKE_VLLM_STARTUP_SECONDS", "0")))
    with open(os.environ.get("FAKE_VLLM_ENV_DUMP") or os.devnull, "w") as fh:
        json.dump(dict(os.environ), fh)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                body = b""
            elif self.path == "/v1/models":
                body = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((opts["--host"], int(opts["--port"])), Handler)
    print(f"(APIServer pid={os.getpid()}) INFO 01-01 00:00:00 [launcher.py:1] Starting vLLM API server", flush=True)
    server.serve_forever()
    '''
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll until predicate() is true; the deadline only bounds a hung test, it asserts no timing."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone as a process once it is not running.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    path = tmp_path / "fake_vllm_standin.py"
    path.write_text(STAND_IN)
    return path


@pytest.fixture
def servers() -> Iterator[list[ManagedServer]]:
    made: list[ManagedServer] = []
    yield made
    for server in made:
        server.stop()


def make_server(servers: list[ManagedServer], stand_in: Path, env: dict[str, str] | None = None, **overrides):
    fields = dict(
        model="deepseek-ai/DeepSeek-OCR",
        command=(sys.executable, str(stand_in)),
        port=free_port(),
        startup_timeout_seconds=60.0,
        backoff_initial_seconds=0.1,
        backoff_max_seconds=1.0,
        poll_interval_seconds=0.05,
        stop_timeout_seconds=5.0,
    )
    fields.update(overrides)
    notifier = fields.pop("notifier", None)
    environ = {**os.environ, **(env or {})}
    server = ManagedServer(ServerSettings(**fields), notifier=notifier, environ=environ)
    servers.append(server)
    return server


# -- pure parts ------------------------------------------------------------------------------------
def test_command_line_has_deepseek_ocr_flags() -> None:
    settings = ServerSettings(
        model="deepseek-ai/DeepSeek-OCR",
        command=("/opt/vllm/.venv/bin/vllm",),
        host="127.0.0.1",
        port=8123,
        gpu_memory_utilization=0.85,
        extra_args=("--max-num-seqs", "256"),
    )
    argv = build_command(settings)
    assert argv[:3] == ["/opt/vllm/.venv/bin/vllm", "serve", "deepseek-ai/DeepSeek-OCR"]
    joined = " ".join(argv)
    assert f"--logits_processors {LOGITS_PROCESSOR}" in joined
    assert LOGITS_PROCESSOR == "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
    assert "--no-enable-prefix-caching" in argv
    assert "--mm-processor-cache-gb 0" in joined
    assert "--host 127.0.0.1 --port 8123" in joined
    assert "--gpu-memory-utilization 0.85" in joined
    assert argv[-2:] == ["--max-num-seqs", "256"]  # extra args last: they may override ours


def test_command_words_accepts_a_string_or_a_list() -> None:
    assert command_words("vllm") == ("vllm",)
    assert command_words("python -m tests.fake_vllm") == ("python", "-m", "tests.fake_vllm")
    assert command_words(["/x y/vllm"]) == ("/x y/vllm",)
    with pytest.raises(ValueError, match="vllm.managed.command"):
        command_words("")


def test_child_env_keeps_the_v1_runner_and_drops_systemd_variables() -> None:
    env = build_env({"PATH": "/bin", "NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "VLLM_USE_V2_MODEL_RUNNER": "1"})
    assert env["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    assert env["PATH"] == "/bin"
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env


def test_backoff_doubles_up_to_the_cap() -> None:
    assert backoff_delay(0) == 0
    assert backoff_schedule(8, initial=5, maximum=300) == [5, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_delay(10_000, 1, 60) == 60


def test_server_root() -> None:
    assert server_root("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert server_root("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert server_root("::1", 9) == "http://[::1]:9"


def test_processor_signal_from_vllm_log_lines() -> None:
    # The line vLLM 0.11.2 logs at start-up (from a published start-up log).
    configured = (
        "(APIServer pid=12227) INFO 11-20 08:54:50 [utils.py:253] non-default args: {'model_tag': "
        "'deepseek-ai/DeepSeek-OCR', 'model': 'deepseek-ai/DeepSeek-OCR', 'logits_processors': "
        "['vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor'], 'enable_prefix_caching': False, "
        "'mm_processor_cache_gb': 0.0}"
    )
    assert processor_signal(configured) is ProcessorSignal.CONFIGURED
    missing = "(APIServer pid=1) INFO 11-20 08:54:50 [utils.py:253] non-default args: {'model': 'x'}"
    assert processor_signal(missing) is ProcessorSignal.MISSING
    failed = "ValueError: NGramPerReqLogitsProcessor is not supported by Model Runner V2"
    assert processor_signal(failed) is ProcessorSignal.FAILED
    assert processor_signal("(APIServer pid=1) INFO Starting vLLM API server") is None


def test_line_level_follows_vllm() -> None:
    assert line_level("(APIServer pid=1) INFO 11-20 08:54:50 [x.py:1] hello") == logging.INFO
    assert line_level("(EngineCore_DP0 pid=2) WARNING 11-20 08:54:50 [x.py:1] careful") == logging.WARNING
    assert line_level("(EngineCore_DP0 pid=2) ERROR 11-20 08:54:50 [x.py:1] boom") == logging.ERROR
    assert line_level("Traceback (most recent call last):") == logging.ERROR
    assert line_level("Loading safetensors checkpoint shards: 100%") == logging.INFO


def test_health_text() -> None:
    assert health_text(State(Phase.STARTING, since=100.0), 142.0) == "vLLM is starting (42 s)"
    up = State(Phase.UP, processor=ProcessorSignal.CONFIGURED)
    assert health_text(up, 0.0) is None
    unknown = health_text(State(Phase.UP), 0.0)
    assert unknown is not None and unknown.startswith("logits processor not loaded")
    waiting = State(Phase.WAITING, reason="vLLM exited with status 1", retry_at=20.0)
    assert health_text(waiting, 10.0) == "vLLM exited with status 1; restarting in 10 s"


def test_child_env_constants() -> None:
    assert CHILD_ENV["VLLM_USE_V2_MODEL_RUNNER"] == "0"


# -- a real child process ------------------------------------------------------------------------
def test_start_waits_until_healthy_and_forwards_output(stand_in, servers, caplog, tmp_path) -> None:
    # Given a stand-in vLLM that takes a moment to come up
    dump = tmp_path / "env.json"
    server = make_server(servers, stand_in, env={"FAKE_VLLM_STARTUP_SECONDS": "0.5", "FAKE_VLLM_ENV_DUMP": str(dump)})
    caplog.set_level(logging.INFO, logger="ocr_watcher.vllm")
    # When it is started and waited for
    assert server.start(wait=True)
    # Then it answers, with the processor seen in its arguments line
    assert server.health() is None
    assert server.models == ["deepseek-ai/DeepSeek-OCR"]
    assert server.url == f"http://127.0.0.1:{server.settings.port}"
    # and its output (stdout and stderr) reached our log
    forwarded = [r.getMessage() for r in caplog.records if r.name == "ocr_watcher.vllm"]
    assert any("non-default args" in line for line in forwarded)
    assert "stand-in warning on stderr" in forwarded
    # and it ran with the V1 model runner
    import json

    assert json.loads(dump.read_text())["VLLM_USE_V2_MODEL_RUNNER"] == "0"


def test_health_says_starting_while_it_loads(stand_in, servers) -> None:
    server = make_server(servers, stand_in, env={"FAKE_VLLM_STARTUP_SECONDS": "30"})
    server.start()
    eventually(lambda: (server.health() or "").startswith("vLLM is starting"), what="starting")


def test_killed_child_is_restarted_with_backoff(stand_in, servers) -> None:
    # Given a running server
    server = make_server(servers, stand_in)
    assert server.start(wait=True)
    first = server.pid
    assert first is not None
    # When the child is killed
    os.kill(first, signal.SIGKILL)
    # Then it is restarted after the first back-off step and is healthy again
    eventually(lambda: server.pid not in (None, first) and server.health() is None, what="restart")
    assert server.restart_delays == [0.1]
    # and a second death waits twice as long
    second = server.pid
    os.kill(second, signal.SIGKILL)
    eventually(lambda: server.pid not in (None, second) and server.health() is None, what="second restart")
    assert server.restart_delays == [0.1, 0.2]


def test_stop_ends_the_child(stand_in, servers) -> None:
    server = make_server(servers, stand_in)
    assert server.start(wait=True)
    pid = server.pid
    assert pid is not None
    server.stop()
    assert pid_gone(pid)
    assert server.health() == "vLLM is not running"


def test_stop_while_starting_ends_the_child(stand_in, servers) -> None:
    server = make_server(servers, stand_in, env={"FAKE_VLLM_STARTUP_SECONDS": "60"})
    server.start()
    eventually(lambda: server.pid is not None, what="child started")
    pid = server.pid
    server.stop()
    assert pid_gone(pid)


def test_startup_timeout_is_reported(stand_in, servers) -> None:
    # Given a vLLM that never answers within the start-up timeout
    server = make_server(
        servers,
        stand_in,
        env={"FAKE_VLLM_STARTUP_SECONDS": "60"},
        startup_timeout_seconds=0.5,
        backoff_initial_seconds=30,
    )
    server.start()
    # Then health() says so (and that it will try again)
    eventually(lambda: "start-up timeout" in (server.health() or ""), what="timeout reported")
    assert "restarting in" in server.health()
    assert server.pid is None  # the hung child was ended


def test_processor_missing_from_arguments_is_not_ready(stand_in, servers) -> None:
    server = make_server(servers, stand_in, env={"FAKE_VLLM_MODE": "drop-processor"})
    assert not server.start(wait=False)
    eventually(lambda: server.models != [], what="server up")
    eventually(lambda: "logits processor not loaded" in (server.health() or ""), what="processor check")
    assert LOGITS_PROCESSOR in server.health()


def test_processor_error_is_reported(stand_in, servers) -> None:
    server = make_server(servers, stand_in, env={"FAKE_VLLM_MODE": "reject-processor"})
    server.start()
    eventually(lambda: server.models != [], what="server up")
    eventually(lambda: "not supported by Model Runner V2" in (server.health() or ""), what="processor error")


def test_missing_program_is_reported(tmp_path, servers) -> None:
    server = make_server(
        servers, tmp_path / "x.py", command=(str(tmp_path / "no-such-vllm"),), backoff_initial_seconds=30
    )
    server.start()
    eventually(lambda: "cannot start vLLM" in (server.health() or ""), what="spawn error")


def test_extend_timeout_sent_while_starting(stand_in, servers) -> None:
    # Given systemd's notify socket (a real datagram socket; short path for AF_UNIX)
    folder = tempfile.mkdtemp(prefix="ocrw-notify-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    try:
        # When a slow vLLM is started
        server = make_server(servers, stand_in, env={"FAKE_VLLM_STARTUP_SECONDS": "30"}, notifier=Notifier(path))
        server.extend_every = 0.1
        server.start()
        # Then systemd is asked, more than once, for more start-up time
        messages = [sock.recv(4096).decode() for _ in range(3)]
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)
    assert all(message.startswith("EXTEND_TIMEOUT_USEC=") for message in messages)
    assert int(messages[0].split("=", 1)[1]) > 0


def test_with_the_shared_fake_vllm(servers, caplog) -> None:
    """The shared fake (tests/fake_vllm.py, `python -m tests.fake_vllm serve ...`) as the vllm command."""
    caplog.set_level(logging.INFO, logger="ocr_watcher.vllm")
    server = make_server(servers, Path("unused"), command=(sys.executable, "-m", "tests.fake_vllm"))
    server.environ["PYTHONPATH"] = str(REPO)
    server.start()
    eventually(lambda: server.models != [], timeout=60, what="fake vLLM up")
    assert any("non-default args" in r.getMessage() for r in caplog.records)
    eventually(lambda: server.health() is None, what="healthy")
