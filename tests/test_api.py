"""The job API, used the way the replaced service's users use it: `requests` against a real daemon.

Every test runs a real `ocr-watcher run` subprocess over temporary folders; OCR is real (Tesseract)
where the text matters, and the `text` engine (a PDF's own text layer) where only the job's life does.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .daemon import Daemon, drop
from .pdfgen import cer, sample_lines, scanned_pdf, slow_pdf, text_pdf

TOKEN = "api-test-token-0123456789abcdef"
PDF = "application/pdf"


def poll(url: str, until: set[str], timeout: float = 120, interval: float = 1.0, **kwargs: Any) -> dict[str, Any]:
    """The classic client loop: ask every `interval` seconds until the status is one of `until`."""
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(url, timeout=10, **kwargs)
        response.raise_for_status()
        job = response.json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still {job['status']} after {timeout} s: {job}")
        time.sleep(interval)


def upload(base: str, path: Path, name: str | None = None, **kwargs: Any) -> requests.Response:
    with open(path, "rb") as fh:
        return requests.post(f"{base}/jobs/create", files={"file": (name or path.name, fh, PDF)}, timeout=60, **kwargs)


def create(base: str, path: Path, **kwargs: Any) -> str:
    response = upload(base, path, **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "queued"
    return body["job_id"]


def raw_request(base: str, method: str, path: str) -> tuple[int, str]:
    """Send `path` exactly as written: HTTP libraries would resolve "..", as a hostile client won't."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.fixture
def text_daemon(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path, engine="text") as daemon:
        yield daemon


def long_pdf(path: Path, pages: int = 12) -> Path:
    """A scanned PDF that keeps one Tesseract worker busy for several seconds."""
    return scanned_pdf(path, [sample_lines(4, seed=page) for page in range(pages)])


# -- the classic client --------------------------------------------------------------------------
def test_classic_client_uploads_polls_every_second_and_downloads_the_text(tmp_path: Path) -> None:
    """Given a daemon with Tesseract, when a client posts a scanned 2-page PDF to /jobs/create, polls
    /jobs/{id} every second until completed and downloads, then the download is the OCR'd text
    (CER < 5%), each page is also readable alone, and the job is an ordinary job folder whose input is
    byte-for-byte the upload (claimed like an inbox file: nothing left in the upload area)."""
    pages = [sample_lines(4, seed=1), sample_lines(4, seed=2)]
    pdf = scanned_pdf(tmp_path / "Quarterly Report.pdf", pages)
    with Daemon(tmp_path) as daemon:
        base = daemon.http_url
        job_id = create(base, pdf)
        job = poll(f"{base}/jobs/{job_id}", {"completed", "failed", "cancelled"})
        assert job["status"] == "completed", job
        assert job["progress"] == {"pages_total": 2, "pages_done": 2, "pages_failed": 0, "percent": 100.0}
        assert job["filename"] == "Quarterly Report.pdf" and job["error"] is None
        download = requests.get(f"{base}/jobs/{job_id}/download", timeout=10)
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/markdown")
        assert "filename*=utf-8''Quarterly%20Report.md" in download.headers["content-disposition"]
        assert cer("\n".join(pages[0] + pages[1]), re.sub(r"<!--.*?-->", "", download.text)) < 0.05
        for number, lines in enumerate(pages, start=1):
            page = requests.get(f"{base}/jobs/{job_id}/pages/{number}", timeout=10)
            assert page.status_code == 200 and cer("\n".join(lines), page.text) < 0.05
        folder = daemon.outbox / job_id
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["source"]["origin"] == "http" and meta["source"]["name"] == "Quarterly Report.pdf"
        assert meta["source"]["sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
        assert (folder / "input.pdf").read_bytes() == pdf.read_bytes()
        assert [h["status"] for h in meta["history"]] == ["queued", "processing", "completed"]
        assert list((daemon.inbox / ".ocr-watcher" / "uploads").iterdir()) == []
        result_meta = requests.get(f"{base}/jobs/{job_id}/metadata", timeout=10)
        assert result_meta.status_code == 200 and result_meta.json()["pages"][0]["page"] == 1


def test_a_client_that_disconnects_after_create_comes_back_later_with_the_id(tmp_path: Path) -> None:
    """Given a job created over HTTP, when the client goes away at once and the daemon is even
    restarted meanwhile, then the client comes back with only the id and downloads the result."""
    pdf = text_pdf(tmp_path / "later.pdf", [["Remember this sentence for later."]])
    daemon = Daemon(tmp_path, engine="text")
    # The client's connection is closed right after, and the daemon stops.
    with daemon, requests.Session() as session, open(pdf, "rb") as fh:
        job_id = session.post(f"{daemon.http_url}/jobs/create", files={"file": fh}).json()["job_id"]
    daemon.start()  # a restart: a new process, a new port
    try:
        base = daemon.http_url
        poll(f"{base}/jobs/{job_id}", {"completed"}, timeout=60, interval=0.5)
        assert "Remember this sentence for later." in requests.get(f"{base}/jobs/{job_id}/download").text
    finally:
        daemon.stop()


# -- errors ----------------------------------------------------------------------------------------
class _Body:
    """A request body of `size` bytes produced on the fly (requests sends it with Content-Length)."""

    def __init__(self, head: bytes, size: int, tail: bytes) -> None:
        self.parts = [head, None, tail]
        self.filler = size - len(head) - len(tail)
        self.done = False
        self.position = 0

    def __len__(self) -> int:
        return len(self.parts[0]) + self.filler + len(self.parts[2])

    def __iter__(self) -> Iterator[bytes]:
        yield self.parts[0]
        chunk = b"0" * (1 << 20)
        left = self.filler
        while left > 0:
            yield chunk[: min(left, len(chunk))]
            left -= len(chunk)
        yield self.parts[2]


def _multipart(size: int) -> tuple[bytes, bytes, str]:
    boundary = "testboundary7MA4YWxkTrZu0gW"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.pdf"\r\n'
        f"Content-Type: application/pdf\r\n\r\n%PDF-1.7\n"
    ).encode()
    tail = f"\n%%EOF\r\n--{boundary}--\r\n".encode()
    return head, tail, f"multipart/form-data; boundary={boundary}"


def test_uploads_over_the_default_200_mb_limit_get_413_and_leave_nothing(text_daemon: Daemon) -> None:
    """Given the default limit (200 MiB), when a client sends a 201 MiB file, once with a declared
    Content-Length and once chunked (no length: the size is only known while streaming), then both
    get 413 naming the limit, the client sees the answer rather than a broken connection, no job and
    no upload file are left, and the daemon goes on serving."""
    base = text_daemon.http_url
    size = 201 * 2**20
    head, tail, content_type = _multipart(size)
    declared = requests.post(
        f"{base}/jobs/create", data=_Body(head, size, tail), headers={"Content-Type": content_type}, timeout=120
    )
    assert declared.status_code == 413, declared.text
    assert "200 MiB" in declared.json()["detail"]
    chunked = requests.post(
        f"{base}/jobs/create", data=iter(_Body(head, size, tail)), headers={"Content-Type": content_type}, timeout=120
    )
    assert chunked.status_code == 413, chunked.text
    assert list((text_daemon.inbox / ".ocr-watcher" / "uploads").iterdir()) == []
    assert requests.get(f"{base}/jobs").json()["total"] == 0
    assert requests.get(f"{base}/health").status_code == 200


def test_bad_uploads_get_clear_errors(tmp_path: Path) -> None:
    """Given a daemon with a 1 MiB upload limit and a profile "urgent", when clients send what is not
    an upload of a PDF or image, then each gets the right status and a message saying what to do,
    and no job is created; a good upload with the profile still works."""
    small = text_pdf(tmp_path / "ok.pdf", [["Fine."]])
    truncated = tmp_path / "cut.pdf"
    truncated.write_bytes(small.read_bytes()[:-40])
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.7\n" + os.urandom(2 * 2**20) + b"\n%%EOF\n")
    with Daemon(tmp_path, engine="text", http={"port": 0, "max_upload_mb": 1}, profiles={"urgent": {}}) as daemon:
        base = daemon.http_url
        cases: list[tuple[requests.Response, int, str]] = [
            (requests.post(f"{base}/jobs/create", json={"file": "x"}), 415, "multipart/form-data"),
            (requests.post(f"{base}/jobs/create", files={"other": ("a.pdf", small.read_bytes())}), 400, "'file'"),
            (requests.post(f"{base}/jobs/create", files={"file": ("notes.txt", b"just text\n")}), 415, "PDF"),
            (requests.post(f"{base}/jobs/create", files={"file": ("fake.pdf", b"<html></html>")}), 415, "not a PDF"),
            (requests.post(f"{base}/jobs/create", files={"file": ("empty.pdf", b"")}), 400, "empty"),
            (upload(base, truncated), 400, "%%EOF"),
            (upload(base, big), 413, "1 MiB"),
            (upload(base, small, data={"profile": "nope"}), 400, "unknown profile 'nope'"),
            (
                requests.post(
                    f"{base}/jobs/create",
                    data=b"--x\r\nContent-Disposition: form-data; name=file; filename=a.pdf\r\n\r\n%PDF-",
                    headers={"Content-Type": "multipart/form-data; boundary=x"},
                ),
                400,
                "",
            ),
        ]
        for response, status, words in cases:
            assert response.status_code == status, (response.request.body and response.request.url, response.text)
            assert words in response.json()["detail"]
        assert requests.get(f"{base}/jobs").json()["total"] == 0
        job_id = create(base, small, data={"profile": "urgent"})
        assert requests.get(f"{base}/jobs/{job_id}").json()["profile"] == "urgent"
        counted = {
            sample.labels.get("outcome"): sample.value
            for family in text_string_to_metric_families(requests.get(f"{base}/metrics").text)
            if family.name == "ocr_watcher_api_uploads"
            for sample in family.samples
        }
        assert counted == {"accepted": 1, "too_large": 1, "rejected": len(cases) - 1, "unavailable": 0}
        daemon.check_alive()


def test_unknown_and_path_like_ids_never_reach_outside_the_outbox(text_daemon: Daemon) -> None:
    """Given a secret file beside the outbox and a real job, when clients ask for ids that are unknown,
    hidden or path-like (raw and percent-encoded), then each is 404 (or the route does not exist) and
    the secret never appears in any answer."""
    base = text_daemon.http_url
    secret = text_daemon.root / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    (text_daemon.outbox / "evil_20260101_000000_deadbeef").symlink_to(text_daemon.root)
    job_id = create(base, text_pdf(text_daemon.root / "a.pdf", [["A page."]]))
    poll(f"{base}/jobs/{job_id}", {"completed"}, timeout=60, interval=0.3)
    ids = [
        "nope_20260101_000000_00000000",
        "..",
        "%2e%2e",
        "..%2F..%2Fsecret.txt",
        "%2E%2E%2Fsecret.txt",
        ".ocr-watcher",
        "evil_20260101_000000_deadbeef",
        f"{job_id}%2F..%2F..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
    ]
    for bad in ids:
        for suffix in ("", "/download", "/metadata", "/pages/1", "/result.html", "/images/x.png"):
            status, body = raw_request(base, "GET", f"/jobs/{bad}{suffix}")
            assert status in (404, 405), (bad, suffix, status, body)
            assert "TOP-SECRET" not in body
        assert raw_request(base, "DELETE", f"/jobs/{bad}")[0] in (404, 405)
    for name in ("..%2F..%2F..%2Fsecret.txt", ".hidden.png", "%2e%2e", "../../secret.txt"):
        status, body = raw_request(base, "GET", f"/jobs/{job_id}/images/{name}")
        assert status == 404 and "TOP-SECRET" not in body
    assert requests.get(f"{base}/jobs/nope_20260101_000000_00000000").json()["detail"].startswith("no job")


def test_tokens_protect_everything_but_health_metrics_and_the_page(tmp_path: Path) -> None:
    """Given two configured tokens, when clients call without a token, with a wrong one or with either
    right one, then the job API answers 401 (asking for a bearer token) or 200, while /health,
    /metrics, /healthz, the web page and the OpenAPI description stay open."""
    other = "second-token-abcdefghijklmnop"
    pdf = text_pdf(tmp_path / "t.pdf", [["Token test."]])
    with Daemon(tmp_path, engine="text", http={"port": 0, "api_tokens": [TOKEN, other]}) as daemon:
        base = daemon.http_url
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
            for method, path in (("get", "/jobs"), ("get", "/jobs/x_20260101_000000_00000000"), ("delete", "/jobs/x")):
                response = requests.request(method, base + path, headers=headers, timeout=10)
                assert response.status_code == 401, (path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
            assert upload(base, pdf, headers=headers).status_code == 401
        assert list((daemon.inbox / ".ocr-watcher" / "uploads").glob("*")) == []
        for path in ("/health", "/metrics", "/healthz", "/", "/openapi.json"):
            assert requests.get(base + path, timeout=10).status_code == 200, path
        job_id = create(base, pdf, headers={"Authorization": f"Bearer {TOKEN}"})
        job = poll(f"{base}/jobs/{job_id}", {"completed"}, 60, 0.3, headers={"Authorization": f"Bearer {other}"})
        assert job["status"] == "completed"
        lower_case_scheme = {"Authorization": f"bearer {other}"}
        assert "Token test." in requests.get(f"{base}/jobs/{job_id}/download", headers=lower_case_scheme).text
    assert TOKEN not in daemon.log()


def test_a_reload_replaces_the_tokens(tmp_path: Path) -> None:
    """Given a daemon with token A, when its config file is changed to token B and it gets SIGHUP,
    then A is refused and B accepted, without a restart, and the log names the key but not a token."""
    new = "rotated-token-abcdefghijklmnopq"
    with Daemon(tmp_path, engine="text", http={"port": 0, "api_tokens": [TOKEN]}) as daemon:
        base = daemon.http_url
        assert requests.get(f"{base}/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        daemon.config["http"]["api_tokens"] = [new]
        daemon.config_path.write_text(yaml.safe_dump(daemon.config))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_until(lambda: "http.api_tokens" in daemon.log(), 10, "the reload")
        assert requests.get(f"{base}/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
        assert requests.get(f"{base}/jobs", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert TOKEN not in daemon.log() and new not in daemon.log()


def test_during_the_shutdown_grace_metrics_answer_and_uploads_are_refused(tmp_path: Path) -> None:
    """Given a page that takes seconds to render, when SIGTERM starts the graceful stop, then while
    that page drains /metrics and /health still answer and an upload gets 503 (no job is created),
    and the daemon then exits 0 and its server with it."""
    daemon = Daemon(tmp_path, pipeline={"workers": 1, "shutdown_grace_seconds": 60}).start()
    try:
        base = daemon.http_url
        drop(daemon.inbox, slow_pdf(tmp_path / "slow.pdf", shapes=600))
        daemon.wait_for_job("slow.pdf", {"processing"})
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait_until(lambda: "stopping: no new claims" in daemon.log(), 30, "the graceful stop to begin")
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 200
        assert requests.get(f"{base}/health", timeout=10).status_code == 200
        refused = upload(base, text_pdf(tmp_path / "late.pdf", [["Too late."]]))
        assert refused.status_code == 503 and "stopping" in refused.json()["detail"]
        assert daemon.alive(), "the page drained before the requests: make it slower"
        assert daemon.proc.wait(timeout=90) == 0
    finally:
        daemon.stop()
    assert daemon.job_for("late.pdf") is None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/metrics", timeout=5)


# -- one job, two front doors ----------------------------------------------------------------------
def test_a_job_created_over_http_is_cancelled_by_a_cancel_file(tmp_path: Path) -> None:
    """Given a long job created over HTTP, when a person creates CANCEL in its folder, then the API
    reports it cancelled with the reason, and pages already done stay readable over HTTP."""
    with Daemon(tmp_path, pipeline={"workers": 1}) as daemon:
        base = daemon.http_url
        # 120 pages: about 20 s of OCR, so that the job cannot end before its CANCEL is seen (the daemon
        # looks once a second; with 12 pages, about 2 s, it sometimes finished first).
        job_id = create(base, long_pdf(tmp_path / "long.pdf", pages=120))
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/jobs/{job_id}").json()["progress"]["pages_done"] < 1:
            assert time.monotonic() < deadline, "no page finished"
            time.sleep(0.2)
        (daemon.outbox / job_id / "CANCEL").touch()
        job = poll(f"{base}/jobs/{job_id}", {"cancelled", "completed"}, timeout=30, interval=0.2)
        assert job["status"] == "cancelled" and job["error"]["type"] == "cancelled"
        assert job["progress"]["pages_done"] < 120
        assert requests.get(f"{base}/jobs/{job_id}/pages/1").status_code == 200
        download = requests.get(f"{base}/jobs/{job_id}/download")
        assert download.status_code == 409 and "cancelled" in download.json()["detail"]


def test_a_file_dropped_in_the_inbox_is_listed_and_downloaded_over_http(text_daemon: Daemon) -> None:
    """Given a PDF dropped into the inbox folder, when a client lists /jobs, then the job is there
    (origin: the inbox) and its result downloads over HTTP, identical to result.md on disk."""
    base = text_daemon.http_url
    drop(text_daemon.inbox, text_pdf(text_daemon.root / "dropped.pdf", [["Dropped by a scanner."]]))
    job = text_daemon.wait_for_job("dropped.pdf", {"completed"}, timeout=60)
    listed = requests.get(f"{base}/jobs", params={"status": "completed"}).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job["job_id"]]
    download = requests.get(f"{base}/jobs/{job['job_id']}/download")
    assert download.text == (text_daemon.outbox / job["job_id"] / "result.md").read_text()


def test_delete_cancels_and_retry_queues_again(tmp_path: Path) -> None:
    """Given a running job, when a client DELETEs it, then it is cancelled at once (the answer already
    says so); a second DELETE is harmless; retrying it over HTTP runs it to completion; and a
    completed job can be neither cancelled nor retried (409)."""
    with Daemon(tmp_path, pipeline={"workers": 1}) as daemon:
        base = daemon.http_url
        job_id = create(base, long_pdf(tmp_path / "long.pdf", pages=3))
        cancelled = requests.delete(f"{base}/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert requests.delete(f"{base}/jobs/{job_id}").json()["status"] == "cancelled"
        assert not (daemon.outbox / job_id / "CANCEL").exists()
        retried = requests.post(f"{base}/jobs/{job_id}/retry")
        assert retried.status_code == 200 and retried.json()["status"] in {"queued", "processing"}
        job = poll(f"{base}/jobs/{job_id}", {"completed", "failed"}, timeout=90, interval=0.5)
        assert job["status"] == "completed" and job["attempts"] == 2
        assert requests.delete(f"{base}/jobs/{job_id}").status_code == 409
        again = requests.post(f"{base}/jobs/{job_id}/retry")
        assert again.status_code == 409 and "completed" in again.json()["detail"]


# -- reading ---------------------------------------------------------------------------------------
def test_listing_is_newest_first_with_paging_and_a_status_filter(tmp_path: Path) -> None:
    """Given 7 completed jobs and 2 failed ones, when a client pages through /jobs and filters by
    status, then pages are newest first without overlap, totals are right, and bad queries are 422."""
    with Daemon(tmp_path, engine="text") as daemon:
        base = daemon.http_url
        created = []
        for number in range(7):
            created.append(create(base, text_pdf(tmp_path / f"doc{number}.pdf", [[f"Document {number}"]])))
            time.sleep(0.02)
        for number in range(2):
            (daemon.inbox / f"junk{number}.pdf").write_bytes(b"not a pdf at all" * 10)
        daemon.wait_until(lambda: requests.get(f"{base}/health").json()["jobs"]["failed"] == 2, 30, "2 failures")
        daemon.wait_until(lambda: requests.get(f"{base}/health").json()["jobs"]["completed"] == 7, 60, "7 done")
        seen: list[str] = []
        for offset in (0, 3, 6):
            page = requests.get(f"{base}/jobs", params={"status": "completed", "offset": offset, "limit": 3}).json()
            assert page["total"] == 7 and page["offset"] == offset and page["limit"] == 3
            seen += [job["job_id"] for job in page["jobs"]]
        assert seen == list(reversed(created))
        both = requests.get(f"{base}/jobs", params={"status": "failed,cancelled"}).json()
        assert both["total"] == 2 and {j["error"]["type"] for j in both["jobs"]} == {"not_a_pdf"}
        repeated = requests.get(f"{base}/jobs", params=[("status", "failed"), ("status", "completed")]).json()
        assert repeated["total"] == 9
        assert requests.get(f"{base}/jobs").json()["total"] == 9
        for params in ({"status": "done"}, {"limit": 0}, {"limit": 501}, {"offset": -1}):
            assert requests.get(f"{base}/jobs", params=params).status_code == 422, params
        health = requests.get(f"{base}/health").json()
        assert health["status"] == "ok" and health["worker_id"] == "d1"
        assert health["jobs"] == {"queued": 0, "processing": 0, "completed": 7, "failed": 2, "cancelled": 0}


def test_pages_stream_before_the_job_completes(tmp_path: Path) -> None:
    """Given a long job, when a client asks for pages while it runs, then a finished page is 200 at
    once, a page not done yet is 409 (ask again), one past the end is 404, the result and its
    metadata are 409 until the job completes, and the rendered HTML then carries the text."""
    with Daemon(tmp_path, pipeline={"workers": 1}) as daemon:
        base = daemon.http_url
        job_id = create(base, long_pdf(tmp_path / "long.pdf", pages=6))
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/jobs/{job_id}/pages/1").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        last = requests.get(f"{base}/jobs/{job_id}/pages/6")
        assert last.status_code == 409 and "not done yet" in last.json()["detail"]
        for suffix in ("/download", "/metadata", "/result.html"):
            assert requests.get(f"{base}/jobs/{job_id}{suffix}").status_code == 409
        # metadata.json carries the page count once the next write after opening the PDF lands.
        daemon.wait_until(lambda: requests.get(f"{base}/jobs/{job_id}").json()["progress"]["pages_total"], 10, "count")
        assert requests.get(f"{base}/jobs/{job_id}/pages/7").status_code == 404
        poll(f"{base}/jobs/{job_id}", {"completed"}, timeout=120, interval=0.5)
        html = requests.get(f"{base}/jobs/{job_id}/result.html")
        assert html.status_code == 200 and "script-src" not in html.headers["content-security-policy"]
        assert "default-src 'none'" in html.headers["content-security-policy"]
        first_word = sample_lines(4, seed=0)[0].split()[0]
        assert first_word in html.text
