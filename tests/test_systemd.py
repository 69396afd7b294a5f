"""systemd integration: the notify protocol against a real NOTIFY_SOCKET held by the test, as systemd
holds it for a Type=notify unit, with the real daemon as a subprocess; and the unit files checked by
`systemd-analyze verify` and `systemd-analyze security`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ocr_watcher.config import Config
from ocr_watcher.notify import Notifier, make_hooks, watchdog_interval

from .daemon import REPO, Daemon, drop
from .pdfgen import sample_lines, scanned_pdf

UNITS = REPO / "systemd"
_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid


class NotifySocket:
    """A datagram socket that records every notify message with its arrival time and the sender's
    pid (SO_PASSCRED, as systemd checks NotifyAccess=main)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDENTIALS.unpack(payload[: _CREDENTIALS.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), pid, fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def snapshot(self) -> list[tuple[float, int, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def times(self, key: str, value: str | None = None, since: float = float("-inf")) -> list[float]:
        """Arrival times of messages setting `key` (to `value`; a value ending in "..." is a prefix)."""

        def matches(got: str) -> bool:
            if value is None:
                return True
            return got.startswith(value[:-3]) if value.endswith("...") else got == value

        return [at for at, _pid, fields in self.snapshot() if key in fields and matches(fields[key]) and at >= since]

    def wait_for(self, key: str, value: str | None = None, since: float = float("-inf"), timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.times(key, value, since)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.snapshot()}")


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """NOTIFY_SOCKET and WATCHDOG_USEC=1 s in the environment the daemon is started with."""
    folder = tmp_path if len(str(tmp_path)) < 80 else Path(tempfile.mkdtemp(prefix="ocrw-"))  # sun_path: 108 bytes
    listener = NotifySocket(folder)
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


IDLE = "0 jobs in progress (0 processing), 0 pages of 0 jobs queued, 0 files waiting in the inbox"


def _gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def test_ready_status_watchdog_and_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """Given a daemon started as systemd starts a Type=notify unit with WatchdogSec=1s, when it starts,
    OCRs a job and gets SIGTERM, then it sends READY=1 exactly once, STATUS= lines that follow the work,
    WATCHDOG=1 about every half second, and STOPPING=1; every message comes from the main process."""
    daemon = Daemon(tmp_path).start()
    try:
        ready = notify_socket.wait_for("READY", "1")
        drop(daemon.inbox, scanned_pdf(tmp_path / "notify.pdf", [sample_lines(4, seed=s) for s in range(2)]))
        job = daemon.wait_for_job("notify.pdf", {"completed", "failed"})
        busy = notify_socket.wait_for("STATUS", "1 job in progress (1 processing)...")
        notify_socket.wait_for("STATUS", IDLE, since=busy)
        while time.monotonic() - ready < 3.0:  # at least three watchdog periods
            time.sleep(0.1)
    finally:
        returncode = daemon.stop()
    assert returncode == 0
    assert job["status"] == "completed"
    stopping = notify_socket.wait_for("STOPPING", "1")
    messages = notify_socket.snapshot()
    assert {pid for _, pid, _ in messages} == {daemon.proc.pid}, "NotifyAccess=main would drop the others"
    assert len(notify_socket.times("READY", "1")) == 1
    assert "RELOADING" not in {key for _, _, fields in messages for key in fields}
    statuses = [fields["STATUS"] for _, _, fields in messages if "STATUS" in fields]
    assert statuses[0] == IDLE and statuses[-1].startswith("stopping: finishing pages in flight"), statuses
    pings = notify_socket.times("WATCHDOG", "1", since=ready)
    assert pings and pings[-1] < stopping, "no WATCHDOG=1 after STOPPING=1"
    gaps = sorted(_gaps(pings))
    assert len(pings) >= 5, pings
    assert 0.3 <= gaps[len(gaps) // 2] <= 0.9, f"median gap {gaps[len(gaps) // 2]:.2f} s; half of 1 s expected"


def test_watchdog_stops_while_the_main_loop_is_stuck(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """Given a running daemon pinging the watchdog, when its main loop blocks for real (a SIGHUP makes
    it read its configuration, which is now a FIFO nobody writes to, as a config file on a hung NFS
    server would block it), then RELOADING=1 comes and no WATCHDOG=1 follows while the process lives on;
    once the file can be read, the reload completes (READY=1) and the pings resume.

    SIGSTOP would stop every thread and prove nothing about where the pings come from; here only the
    main thread is blocked, so a ping sent from any other thread would show up."""
    daemon = Daemon(tmp_path).start()
    config_text = daemon.config_path.read_text()
    try:
        ready = notify_socket.wait_for("READY", "1")
        notify_socket.wait_for("WATCHDOG", "1", since=ready + 1.0)
        daemon.config_path.unlink()
        os.mkfifo(daemon.config_path)
        before_hup = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = notify_socket.wait_for("RELOADING", "1", since=ready)
        time.sleep(3.0)  # three watchdog periods
        assert daemon.alive()
        assert _process_state(daemon.proc.pid) != "T", "the process must be running, not stopped"
        assert notify_socket.times("WATCHDOG", "1", since=reloading) == [], "a stuck main loop must not ping"
        with open(daemon.config_path, "w") as fifo:  # the reader is waiting: this does not block
            fifo.write(config_text)
        reloaded = notify_socket.wait_for("READY", "1", since=reloading)
        resumed = notify_socket.wait_for("WATCHDOG", "1", since=reloaded)
        daemon.wait_until(lambda: "configuration reloaded" in daemon.log(), 10, "the reload to be logged")
    finally:
        _unblock(daemon.config_path, config_text)
        returncode = daemon.stop()
    assert returncode == 0
    assert resumed > reloaded > reloading
    assert len(notify_socket.times("READY", "1")) == 2, "READY=1 at start and after the reload"
    fields = next(f for _, _, f in notify_socket.snapshot() if f.get("RELOADING") == "1")
    assert before_hup <= int(fields["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _unblock(fifo: Path, text: str) -> None:
    """Feed a reader still waiting on the FIFO (after a failed assertion), then make it a file again."""
    if not fifo.is_fifo():
        return
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody is reading it
    except OSError:
        pass
    else:
        os.write(fd, text.encode())
        os.close(fd)
    fifo.unlink()
    fifo.write_text(text)


def _process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


# -- the protocol in-process ------------------------------------------------------------------------


def test_abstract_namespace_socket_and_no_socket() -> None:
    """An "@name" NOTIFY_SOCKET is Linux's abstract namespace; without NOTIFY_SOCKET nothing is sent."""
    name = f"ocr-watcher-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        server.settimeout(5)
        notifier = Notifier("@" + name)
        assert notifier.send("READY=1", "STATUS=up")
        assert server.recv(4096) == b"READY=1\nSTATUS=up"
        notifier.close()
    assert not Notifier(None).send("READY=1")
    assert not Notifier("relative/path").enabled


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert notifier.send("WATCHDOG=1") is False


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "4242"}, 45.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_for_the_right_process(environ: dict, expected: float | None) -> None:
    assert watchdog_interval(environ, pid=4242) == expected


def test_make_hooks_takes_the_variables_out_of_the_environment() -> None:
    """Children (render workers, tesseract, a supervised vLLM) must not inherit NOTIFY_SOCKET."""
    environ = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/b"}
    hooks = make_hooks(Config(), environ)
    assert environ == {"PATH": "/b"}
    assert hooks.watchdog_every == 1.0
    assert hooks.notifier.enabled


# -- unit files -------------------------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian: apt install systemd)"
)
# (unit name as installed, file in systemd/); the template is checked as an instance.
INSTALLED = [
    ("ocr-watcher.service", "ocr-watcher.service"),
    ("ocr-watcher@0.service", "ocr-watcher@.service"),
    ("ocr-watcher-vllm.service", "ocr-watcher-vllm.service"),
]
_EXEC = re.compile(r"^Exec\w+=[-@:+!]*(/\S+)", re.MULTILINE)


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file-system root holding the system's own units (targets the defaults depend on), ours, and
    executable stand-ins at the paths our Exec lines name, which verify requires to exist."""
    root = tmp_path_factory.mktemp("root")
    system_units = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    if system_units is None:
        pytest.skip("no systemd unit directory on this machine")
    shutil.copytree(system_units, root / system_units.relative_to("/"), symlinks=True)
    installed = root / "etc/systemd/system"
    installed.mkdir(parents=True)
    for _name, source in INSTALLED:
        text = (UNITS / source).read_text()
        (installed / source).write_text(text)
        for executable in _EXEC.findall(text):
            stand_in = root / executable.lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\n")
            stand_in.chmod(0o755)
    return root


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [name for name, _ in INSTALLED])
def test_unit_files_pass_systemd_analyze_verify(unit_root: Path, unit: str) -> None:
    """verify exits 0 even for unknown keys and unparsable values, so any output fails the test too."""
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={unit_root}", unit], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


@needs_systemd_analyze
def test_cpu_only_drop_in_passes_verify(unit_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(unit_root, root, symlinks=True)
    drop_ins = root / "etc/systemd/system/ocr-watcher.service.d"
    drop_ins.mkdir()
    shutil.copy(UNITS / "cpu-only.conf.example", drop_ins / "cpu-only.conf")
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "ocr-watcher.service"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [name for name, _ in INSTALLED])
def test_unit_exposure_is_at_most_3_5(unit_root: Path, unit: str) -> None:
    """`systemd-analyze security` scores 0 (locked down) to 10 (exposed); the target is 3.5."""
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=35", f"--root={unit_root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def test_units_carry_what_the_design_requires() -> None:
    """The properties DESIGN section 6 names, which verify does not insist on."""
    for _name, source in INSTALLED:
        text = (UNITS / source).read_text()
        settings = set(re.findall(r"^(\w+=[^\n]*)$", text, re.MULTILINE))
        assert {"KillMode=mixed", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict"} <= settings
        assert not any(line.startswith("PrivateDevices=") for line in settings), "the GPU is a device"
        assert "DeviceAllow=char-nvidia* rw" in settings
        if source != "ocr-watcher-vllm.service":
            assert {"Type=notify", "NotifyAccess=main", "RestartPreventExitStatus=78", "User=ocr-watcher"} <= settings
            assert any(line.startswith("WatchdogSec=") for line in settings)
            assert any(line.startswith("ReadWritePaths=") for line in settings)
            stop = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.MULTILINE)
            assert stop and int(stop.group(1)) >= 20 + 30, "longer than the default shutdown grace (20 s)"
    template = (UNITS / "ocr-watcher@.service").read_text()
    assert "Environment=CUDA_VISIBLE_DEVICES=%i" in template
    assert "Environment=OCR_WATCHER_WORKER_ID=%H-%i" in template
    vllm = (UNITS / "ocr-watcher-vllm.service").read_text().replace("\\\n", " ")
    for flag in (
        "--logits_processors vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor",
        "--no-enable-prefix-caching",
        "--mm-processor-cache-gb 0",
    ):
        assert flag in " ".join(vllm.split()), flag
