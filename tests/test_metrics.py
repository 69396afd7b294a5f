"""Metrics, /healthz and /readyz, the Grafana dashboard and the alert rules, against real parts:
a real daemon subprocess, a real Prometheus server scraping it, and promtool."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from ocr_watcher.config import load_config
from ocr_watcher.hooks import HookList, Hooks
from ocr_watcher.http import HttpHooks
from ocr_watcher.metrics import (
    MetricsHooks,
    job_duration_seconds,
    make_hooks,
    queue_wait_seconds,
)
from ocr_watcher.service import Service
from ocr_watcher.spool.model import JobMeta, Source, Status, Worker

from .daemon import Daemon, drop
from .pdfgen import sample_lines, text_pdf

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "monitoring"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="the prometheus and promtool binaries are not installed (Debian: apt-get install prometheus)",
)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


# -- helpers ---------------------------------------------------------------------------------------
def http_get(url: str, timeout: float = 10) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a /metrics page."""
    out = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(parsed: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in parsed, f"{name}{labels} is not in /metrics"
    return parsed[key]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                if len(address) == 8:  # IPv4, little-endian hex
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found


def wait_for(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metrics_url(daemon: Daemon) -> str:
    match = wait_for(lambda: re.search(r"metrics on (http://\S+)/metrics", daemon.log()), 10, "the metrics log line")
    return match.group(1)


class Prometheus:
    """A real Prometheus server on loopback, scraping `targets` every second, with our alert rules."""

    def __init__(self, root: Path, targets: list[str]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(MONITORING / "alerts.yml")],
            "scrape_configs": [{"job_name": "ocr-watcher", "static_configs": [{"targets": targets}]}],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={self.root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, 30, "Prometheus to become ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
        try:
            return http_get(self.url + "/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, _, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", f"{path} {params}: {status} {body[:500]}"
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [data["result"]]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target, with Grafana's variables filled in as Grafana would."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    variables = {f"${v['name']}": v.get("allValue") or ".*" for v in dashboard["templating"]["list"]}
    variables.update(GRAFANA_VARIABLES)
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(variables, key=len, reverse=True):  # $instance before $in...
                expr = expr.replace(name, variables[name])
            assert "$" not in expr, f"unknown variable in {panel['title']!r}: {expr}"
            queries.append((panel["title"], expr))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# -- pure parts ----------------------------------------------------------------------------------------
def _meta(**changes: Any) -> JobMeta:
    created = datetime(2026, 1, 7, 12, 0, tzinfo=timezone.utc)
    meta = JobMeta(
        job_id="scan.pdf_20260107_120000_a1b2c3d4",
        source=Source(name="scan.pdf", inbox_path="scan.pdf", size=1),
        input_file="input.pdf",
        created_at=created,
        worker=Worker(id="w", host="h", pid=1),
        history=[{"status": "queued", "at": "2026-01-07T12:00:00.000Z"}],
    )
    return meta.model_copy(update=changes)


def test_job_timings_come_from_the_metadata() -> None:
    """Given a job's metadata, queue wait is queued -> processing (the latest queueing, after a retry)
    and duration is created -> finished."""
    meta = _meta()
    start = meta.created_at + timedelta(seconds=90)
    meta.transition(Status.PROCESSING, now=start)
    assert queue_wait_seconds(meta) == 90
    assert job_duration_seconds(meta) is None
    meta.transition(Status.FAILED, now=start + timedelta(hours=2))
    assert job_duration_seconds(meta) == 90 + 7200
    meta.transition(Status.QUEUED, now=start + timedelta(hours=3))
    meta.transition(Status.PROCESSING, now=start + timedelta(hours=3, seconds=5))
    assert queue_wait_seconds(meta) == 5


def test_engine_errors_are_told_apart_from_render_and_input_errors(tmp_path: Path) -> None:
    """Only failures the pipeline attributes to the engine stage count as engine errors."""
    hooks = MetricsHooks(load_config(environ={}, overrides=_overrides(tmp_path, {"enabled": False})))
    for stage in ("engine", "render", "cancelled", "engine"):
        hooks.on_page("job", 1, "retried", {"error": "x", "stage": stage, "engine": "tesseract"})
    registry = hooks.metrics.registry
    assert registry.get_sample_value("ocr_watcher_engine_errors_total", {"engine": "tesseract"}) == 2
    assert registry.get_sample_value("ocr_watcher_pages_total", {"outcome": "retried", "engine": "tesseract"}) == 4


def _overrides(tmp_path: Path, http: dict[str, Any]) -> dict[str, Any]:
    return {
        "inbox": str(tmp_path / "inbox"),
        "outbox": str(tmp_path / "outbox"),
        "engine": "text",
        "worker_id": "m1",
        "pipeline": {"workers": 1, "shutdown_grace_seconds": 2},
        "http": http,
    }


def test_http_disabled_gives_a_no_op_hook(tmp_path: Path) -> None:
    config = load_config(environ={}, overrides=_overrides(tmp_path, {"enabled": False}))
    hooks = make_hooks(config)
    assert type(hooks) is Hooks


def test_hook_calls_move_the_counters_without_naming_jobs(tmp_path: Path) -> None:
    """Given the metrics hook, when a job goes queued -> processing -> failed -> queued -> processing ->
    completed, its pages are done, retried after an engine error and failed at rendering, and retention
    deletes a job, then each counter and histogram moves once, and no job id or file name shows."""
    hooks = MetricsHooks(load_config(environ={}, overrides=_overrides(tmp_path, {"port": 0})))
    meta = _meta()
    hooks.on_job_status(meta, None)
    for status in (Status.PROCESSING, Status.FAILED, Status.QUEUED, Status.PROCESSING, Status.COMPLETED):
        previous = meta.status
        meta.transition(status)
        hooks.on_job_status(meta, previous)
    hooks.on_page(meta.job_id, 1, "done", {"engine": "text", "seconds_engine": 0.01, "seconds_render": 0.2})
    hooks.on_page(meta.job_id, 2, "retried", {"engine": "text", "error": "text: no", "stage": "engine"})
    hooks.on_page(meta.job_id, 2, "failed", {"engine": "text", "error": "rendering failed", "stage": "render"})
    hooks.on_page(meta.job_id, 3, "failed", {"engine": "text", "error": "boom", "stage": "engine"})
    hooks.on_job_deleted(meta.job_id, "age", 4096)
    exposition = hooks.metrics.exposition().decode()
    parsed = samples(exposition)
    assert value(parsed, "ocr_watcher_jobs_created_total", profile="default") == 1
    assert value(parsed, "ocr_watcher_jobs_retried_total", profile="default") == 1
    for outcome in ("failed", "completed"):
        assert value(parsed, "ocr_watcher_jobs_finished_total", outcome=outcome, profile="default") == 1
        assert value(parsed, "ocr_watcher_job_duration_seconds_count", outcome=outcome, profile="default") == 1
    assert value(parsed, "ocr_watcher_job_queue_wait_seconds_count", profile="default") == 2
    assert value(parsed, "ocr_watcher_last_success_timestamp_seconds") == meta.finished_at.timestamp()
    assert value(parsed, "ocr_watcher_pages_total", outcome="done", engine="text") == 1
    assert value(parsed, "ocr_watcher_pages_total", outcome="retried", engine="text") == 1
    assert value(parsed, "ocr_watcher_pages_total", outcome="failed", engine="text") == 2
    assert value(parsed, "ocr_watcher_engine_errors_total", engine="text") == 2
    assert value(parsed, "ocr_watcher_page_duration_seconds_bucket", engine="text", le="0.05") == 1
    assert value(parsed, "ocr_watcher_retention_deletions_total", reason="age") == 1
    assert value(parsed, "ocr_watcher_retention_deleted_bytes_total", reason="age") == 4096
    assert meta.job_id not in exposition and "scan.pdf" not in exposition


def test_server_binds_loopback_and_healthz_follows_the_main_loop(tmp_path: Path) -> None:
    """Given an in-process service with the metrics hook on a controllable clock, when the loop ticks,
    /healthz is 200; when the clock moves a minute past the last tick, 503; /readyz is 200 with the text
    engine; series exist at zero before any job; and the server listens on 127.0.0.1 only."""
    config = load_config(environ={}, overrides=_overrides(tmp_path, {"port": 0}))
    assert config.http.host == "127.0.0.1"
    now = [1000.0]
    hooks = MetricsHooks(config, clock=lambda: now[0])
    http = HttpHooks(config, hooks)
    service = Service(config, hooks=HookList([hooks, http]))
    service.start()
    try:
        service.tick()
        assert http.server is not None
        host, port = http.server.address
        assert host == "127.0.0.1"
        assert listening_addresses(port) == {"127.0.0.1"}
        base = http.server.base_url
        assert http_get(base + "/healthz")[0] == 200
        assert http_get(base + "/readyz") == (200, "text/plain; charset=utf-8", "ready: text\n")
        now[0] += 60  # the loop has not ticked for a minute (the clock moved; no tick ran)
        status, _, body = http_get(base + "/healthz")
        assert (status, body.split(":")[0]) == (503, "main loop stalled")
        service.tick()
        assert http_get(base + "/healthz")[0] == 200
        assert http_get(base + "/nope")[0] == 404
        status, content_type, body = http_get(base + "/metrics")
        assert (status, content_type) == (200, CONTENT_TYPE_LATEST)  # Prometheus text format
        parsed = samples(body)
        assert value(parsed, "ocr_watcher_jobs_finished_total", outcome="cancelled", profile="default") == 0
        assert value(parsed, "ocr_watcher_pages_total", outcome="retried", engine="text") == 0
        assert value(parsed, "ocr_watcher_engine_ready", engine="text") == 1
        # A reload (SIGHUP) with a new profile and limit: its series appear at zero on the next refresh.
        service.config = load_config(
            environ={"MAX_JOB_COUNT": "5"}, overrides={**_overrides(tmp_path, {"port": 0}), "profiles": {"urgent": {}}}
        )
        now[0] += 1
        service.tick()
        parsed = samples(http_get(base + "/metrics")[2])
        assert value(parsed, "ocr_watcher_jobs_finished_total", outcome="failed", profile="urgent") == 0
        assert value(parsed, "ocr_watcher_jobs_limit") == 5
    finally:
        service.shutdown()
    assert http.server is None
    assert listening_addresses(port) == set()  # stopped with the daemon


@needs_promtool
def test_alert_rules_pass_promtool() -> None:
    """The rules parse, and their unit tests (each alert firing and staying quiet) pass."""
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run([str(PROMTOOL), *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


# -- end to end: daemon + Prometheus -------------------------------------------------------------------
EXPECTED_AT_ZERO = [
    ("ocr_watcher_jobs_created_total", {"profile": "default"}),
    ("ocr_watcher_jobs_retried_total", {"profile": "default"}),
    *[("ocr_watcher_jobs_finished_total", {"outcome": o, "profile": "default"}) for o in ("completed", "failed")],
    *[("ocr_watcher_pages_total", {"outcome": o, "engine": "text"}) for o in ("done", "failed", "retried")],
    ("ocr_watcher_page_duration_seconds_count", {"engine": "text"}),
    ("ocr_watcher_job_duration_seconds_count", {"outcome": "completed", "profile": "default"}),
    ("ocr_watcher_job_queue_wait_seconds_count", {"profile": "default"}),
    ("ocr_watcher_engine_errors_total", {"engine": "text"}),
    *[("ocr_watcher_retention_deletions_total", {"reason": r}) for r in ("age", "count", "storage")],
    ("ocr_watcher_last_success_timestamp_seconds", {}),
    ("ocr_watcher_queue_pages", {}),
    ("ocr_watcher_queue_jobs", {}),
    ("ocr_watcher_jobs_queued", {}),
    ("ocr_watcher_jobs_in_progress", {}),
    ("ocr_watcher_pages_in_progress", {}),
    ("ocr_watcher_inbox_files_waiting", {}),
]


@needs_prometheus
def test_prometheus_scrapes_the_daemon_and_every_dashboard_and_alert_query_works(tmp_path: Path) -> None:
    """Given a daemon with /metrics and a real Prometheus scraping it every second, when born-digital PDFs
    and an unsupported file are processed, then the counters move, every dashboard panel query and alert
    expression evaluates without error, the throughput and queue panels have data, the rules evaluate
    healthy, `promtool check metrics` accepts the page, and no job id or file name appears in it."""
    daemon = Daemon(tmp_path, engine="text", http={"port": 0}).start()
    prometheus = None
    try:
        base = metrics_url(daemon)
        port = int(base.rsplit(":", 1)[1])
        assert listening_addresses(port) == {"127.0.0.1"}

        # Before any job: every known series is there, at zero; the daemon is alive and ready.
        before = samples(http_get(base + "/metrics")[2])
        for name, labels in EXPECTED_AT_ZERO:
            assert value(before, name, **labels) == 0, (name, labels)
        assert value(before, "ocr_watcher_build_info", version="0.1.0") == 1
        assert value(before, "ocr_watcher_engine_ready", engine="text") == 1
        assert value(before, "ocr_watcher_outbox_bytes_limit") == 10240 * 1024 * 1024
        assert http_get(base + "/healthz")[0] == 200
        assert http_get(base + "/readyz")[:1] == (200,)

        prometheus = Prometheus(tmp_path, [base.removeprefix("http://")]).start()
        wait_for(lambda: prometheus.scalar('up{job="ocr-watcher"}') == 1, 30, "Prometheus to scrape the daemon")

        # When: three PDFs (2 + 3 + 5 pages) and a file of an unsupported type.
        names = {"invoice-4711.pdf": 2, "contract-0815.pdf": 3, "minutes-2026.pdf": 5}
        for i, (name, pages) in enumerate(names.items()):
            pdf = text_pdf(tmp_path / name, [sample_lines(4, seed=10 * i + p) for p in range(pages)])
            drop(daemon.inbox, pdf)
        (tmp_path / "notes-secret.txt").write_text("not a document\n")
        drop(daemon.inbox, tmp_path / "notes-secret.txt")
        for name in names:
            daemon.wait_for_job(name, {"completed"}, timeout=60)
        daemon.wait_for_job("notes-secret.txt", {"failed"}, timeout=60)

        # Then: Prometheus sees the work done.
        wait_for(
            lambda: prometheus.scalar('sum(ocr_watcher_pages_total{outcome="done"})') == 10,
            30,
            "Prometheus to see 10 pages done",
        )
        wait_for(
            lambda: prometheus.scalar('sum(ocr_watcher_jobs_finished_total{outcome="failed"})') == 1,
            30,
            "Prometheus to see the failed job",
        )

        queries = dashboard_queries()
        throughput = [expr for title, expr in queries if title in ("Throughput", "Throughput by engine")]
        assert len(throughput) == 2
        for expr in throughput:
            wait_for(lambda e=expr: (prometheus.scalar(e) or 0) > 0, 30, f"throughput data: {expr}")
        for title, expr in queries:
            result = prometheus.query(expr)  # raises on a query error
            if title.startswith("Queue"):
                assert result, f"no data for {title!r}: {expr}"
        for rule in alert_rules():
            prometheus.query(rule["expr"])

        # The rules are loaded and evaluate without error (health "ok"), and none fires.
        def rules_healthy() -> list[dict[str, Any]] | None:
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            return rules if rules and all(r["health"] == "ok" for r in rules) else None

        rules = wait_for(rules_healthy, 30, "the alert rules to evaluate")
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
        assert [r["name"] for r in rules if r["state"] == "firing"] == []

        # The page after the work: counts, and nothing that names a job or a file.
        status, _, exposition = http_get(base + "/metrics")
        after = samples(exposition)
        assert value(after, "ocr_watcher_jobs_created_total", profile="default") == 4
        assert value(after, "ocr_watcher_jobs_finished_total", outcome="completed", profile="default") == 3
        assert value(after, "ocr_watcher_pages_total", outcome="done", engine="text") == 10
        assert value(after, "ocr_watcher_page_duration_seconds_count", engine="text") == 10
        assert value(after, "ocr_watcher_job_duration_seconds_count", outcome="failed", profile="default") == 1
        assert value(after, "ocr_watcher_last_success_timestamp_seconds") > 0
        for job in daemon.jobs():
            assert job["job_id"] not in exposition
            assert job["source"]["name"] not in exposition
        for word in ("invoice", "contract", "minutes", "notes-secret", "4711"):
            assert word not in exposition

        check = subprocess.run(
            [str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, f"promtool check metrics:\n{check.stdout}{check.stderr}"
        assert http_get(base + "/healthz")[0] == 200
    finally:
        if prometheus is not None:
            prometheus.stop()
        daemon.stop()
