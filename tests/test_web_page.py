"""The web page (GET /) in a real headless Chromium against a real daemon: upload, watch, open, download,
the token prompt, cancel and retry.

Playwright drives the system's Chromium (Debian's `chromium`, installed by .ci/run); Playwright's own
browser download is never used. A full-page screenshot is kept as a test artefact ($TEST_ARTIFACTS,
else test-artifacts/ in the repository).

The page sets a Content-Security-Policy without 'unsafe-eval': wait with expect(...) or with
`page.wait_for_function("() => ...")` (a function); a bare expression string is refused by the CSP.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .daemon import REPO, Daemon, drop, slow_tesseract
from .pdfgen import scanned_image, scanned_pdf

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
expect = sync_api.expect

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no system Chromium on PATH (apt-get install chromium; .ci/run does it)"
)

TOKEN = "a-long-test-token-0123456789"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACTIVE = re.compile(r"^(queued|processing)$")

# Three scanned pages with words Tesseract reads reliably at the generator's size.
SCAN_PAGES = [
    ["The harbour lighthouse report", "Keepers counted seventeen ships"],
    ["Second page about the garden", "Tomatoes and pumpkins grew tall"],
    ["Third page closes the report", "Signed by the village council"],
]
SCAN_WORDS = ["lighthouse", "seventeen", "garden", "pumpkins", "village", "council"]


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Console:
    """The page's console errors and uncaught exceptions."""

    def __init__(self, page: sync_api.Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def unexpected(self, *expected_statuses: int) -> list[str]:
        """Errors other than the browser's "Failed to load resource" for the answers the test provoked."""
        allowed = re.compile(rf"status of ({'|'.join(map(str, expected_statuses)) or 'none'})\b")
        provoked = [e for e in self.errors if e.startswith("Failed to load resource") and allowed.search(e)]
        return [e for e in self.errors if e not in provoked]


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture
def console(page: sync_api.Page) -> Console:
    return Console(page)


def artefact(name: str) -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def screenshot(page: sync_api.Page, name: str) -> Path:
    path = artefact(name)
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"{path} is not a PNG screenshot"
    return path


def unique_name(label: str) -> str:
    """A worker id no other test run on this machine uses now: the pipeline's scratch folder is named
    after it (/tmp/ocr-watcher-<worker id>), and a daemon clears that folder when it starts and stops."""
    return f"{label}-{os.getpid()}"


def jobs_rows(page: sync_api.Page) -> sync_api.Locator:
    return page.locator("#jobs tbody tr[data-job-id]")


# -- tests ----------------------------------------------------------------------------------------
def test_upload_progress_result_and_download(tmp_path: Path, page: sync_api.Page, console: Console) -> None:
    """Given a daemon with Tesseract and a 3-page image-only PDF,
    when a person uploads it with the page's file picker,
    then its row appears and its progress bar only moves forward to 100 % as the job completes;
    opening the job shows the recognised text in the sandboxed result frame, Download saves exactly the
    Markdown that GET /jobs/{id}/download serves, under the upload's name, and Download .txt and .pdf
    the result.txt and searchable result.pdf that the profile's outputs add; a file that is not a PDF is
    refused with the server's reason shown; and the page logs no errors."""
    pdf = scanned_pdf(tmp_path / "harbour-report.pdf", SCAN_PAGES)
    not_a_pdf = tmp_path / "notes.pdf"
    not_a_pdf.write_text("These are plain text notes, not a PDF.\n" * 20)

    outputs = {"default": {"outputs": ["markdown", "txt", "pdf"]}}
    with Daemon(tmp_path, unique_name("web"), engine="tesseract", profiles=outputs) as daemon:
        url = daemon.http_url
        page.goto(url)
        expect(page).to_have_title("ocr-watcher")
        expect(page.locator("#page-info")).to_have_text("Showing 0 of 0")
        expect(page.locator("#token-panel")).to_be_hidden()
        # Every value the row's progress bar shows, as the page sets it.
        page.evaluate(
            """() => {
                window.percents = [];
                const seen = (bar) => window.percents.push(Number(bar.dataset.percent));
                new MutationObserver((records) => {
                    for (const r of records) {
                        if (r.type === 'attributes' && r.target.matches('tr[data-job-id] .progress')) seen(r.target);
                        for (const node of r.addedNodes)  // a row shown for the first time
                            if (node.nodeType === 1) node.querySelectorAll('.progress').forEach(seen);
                    }
                }).observe(document.querySelector('#jobs tbody'),
                           {subtree: true, childList: true, attributes: true, attributeFilter: ['data-percent']});
            }"""
        )

        # When: the PDF is uploaded through the file picker.
        page.set_input_files("#file-input", pdf)

        # Then: the upload is acknowledged, the job's row appears, and it runs to completion.
        expect(page.locator("#uploads li[data-state=done]")).to_contain_text("queued as", timeout=15_000)
        row = jobs_rows(page)
        expect(row).to_have_count(1, timeout=15_000)
        expect(row.locator("td.name")).to_have_text("harbour-report.pdf")
        expect(row).to_have_attribute("data-status", "completed", timeout=120_000)
        expect(row.locator(".progress")).to_have_attribute("data-percent", "100")
        expect(row.locator(".progress-text")).to_have_text("3 / 3 pages · 100 %")
        expect(page.locator("#page-info")).to_have_text("Showing 1–1 of 1")
        percents = page.evaluate("window.percents")
        assert percents and percents == sorted(percents) and percents[-1] == 100, percents
        job_id = row.get_attribute("data-job-id")
        assert job_id

        # When: the job is opened.
        row.click()
        detail = page.locator("#job-detail")
        expect(detail).to_be_visible()
        expect(detail).to_have_attribute("data-job-id", job_id)
        expect(page.locator("#detail-status")).to_have_text("completed")
        expect(page.locator("#download")).to_be_enabled()
        expect(page.locator("#cancel")).to_be_disabled()
        expect(page.locator("#retry")).to_be_disabled()

        # Then: the result is rendered in an iframe that may run no script, and holds the scanned words.
        frame = page.locator("#result-frame")
        expect(frame).to_be_visible(timeout=10_000)
        expect(frame).to_have_attribute("sandbox", "")
        result_body = page.frame_locator("#result-frame").locator("body")
        expect(result_body).to_contain_text("lighthouse", ignore_case=True, timeout=10_000)
        shown = result_body.inner_text().lower()
        missing = [word for word in SCAN_WORDS if word not in shown]
        assert len(missing) <= 1, f"the result frame lacks {missing}: {shown!r}"

        # And: Download saves what the API serves, named after the uploaded file.
        served = requests.get(f"{url}/jobs/{job_id}/download", timeout=10)
        assert served.status_code == 200
        with page.expect_download(timeout=10_000) as info:
            page.click("#download")
        download = info.value
        assert download.suggested_filename == "harbour-report.md"
        assert Path(download.path()).read_bytes() == served.content
        # And the profile's other result file is offered beside it: result.txt.
        served_text = requests.get(f"{url}/jobs/{job_id}/download", params={"format": "txt"}, timeout=10)
        assert served_text.status_code == 200 and served_text.text.strip()
        with page.expect_download(timeout=10_000) as info:
            page.click("#more-downloads button[data-format=txt]")
        assert info.value.suggested_filename == "harbour-report.txt"
        assert Path(info.value.path()).read_bytes() == served_text.content
        # And the searchable PDF.
        served_pdf = requests.get(f"{url}/jobs/{job_id}/download", params={"format": "pdf"}, timeout=10)
        assert served_pdf.status_code == 200 and served_pdf.content.startswith(b"%PDF-")
        with page.expect_download(timeout=10_000) as info:
            page.click("#more-downloads button[data-format=pdf]")
        assert info.value.suggested_filename == "harbour-report.pdf"
        assert Path(info.value.path()).read_bytes() == served_pdf.content
        shot = screenshot(page, "web-page.png")

        # When: a file that only claims to be a PDF is uploaded. Then: the server's reason is shown.
        refused = requests.post(f"{url}/jobs/create", files={"file": ("notes.pdf", not_a_pdf.read_bytes())}, timeout=10)
        assert refused.status_code == 415
        page.set_input_files("#file-input", not_a_pdf)
        expect(page.locator("#upload-error")).to_have_text(f"notes.pdf: {refused.json()['detail']}", timeout=15_000)
        expect(page.locator("#uploads li[data-state=error]")).to_have_count(1)
        expect(jobs_rows(page)).to_have_count(1)

        assert console.unexpected(415) == []
    assert shot.stat().st_size > 0


def test_token_prompt_inbox_job_cancel_and_retry(tmp_path: Path, page: sync_api.Page, console: Console) -> None:
    """Given a daemon whose API needs a bearer token, with Tesseract slowed to 1 s a page,
    when a person opens the page, it is served without a token but asks for one; a file chosen meanwhile
    waits for it; a wrong token is refused; with the right one the file is uploaded and the jobs are listed,
    and a long scan dropped into the inbox shows up by itself;
    then cancelling that job from the page cancels it in the daemon, Retry queues it again, the token
    survives a reload of the tab, and forgetting it brings the prompt back and hides the jobs."""
    wrapper = slow_tesseract(tmp_path / "bin", seconds=1.0)
    receipt = scanned_image(tmp_path / "receipt.png", ["Receipt for one lighthouse lamp"])
    long_scan = scanned_pdf(tmp_path / "long-scan.pdf", [[f"Page {n} of a long scan"] for n in range(1, 13)])
    config = {
        "http": {"port": 0, "api_tokens": [TOKEN]},
        "tesseract": {"command": str(wrapper)},
        "pipeline": {"workers": 1},
    }

    with Daemon(tmp_path, unique_name("web-token"), engine="tesseract", **config) as daemon:
        url = daemon.http_url
        # The page holds no data, so it is public; the API is not.
        assert requests.get(f"{url}/", timeout=10).status_code == 200
        assert requests.get(f"{url}/jobs", timeout=10).status_code == 401

        # When: the page is opened without a token. Then: it asks for one and shows no jobs.
        page.goto(url)
        expect(page.locator("#token-panel")).to_be_visible()
        expect(page.locator("#token-message")).to_have_text("This server needs an access token.")
        expect(page.locator("#token-input")).to_be_focused()
        expect(jobs_rows(page)).to_have_count(0)

        # When: a file is chosen before the token is entered. Then: it waits for the token.
        page.set_input_files("#file-input", receipt)
        expect(page.locator("#uploads li[data-state=token]")).to_contain_text("waiting for an access token")

        # When: a wrong token is entered. Then: it is refused and the prompt stays.
        page.fill("#token-input", "wrong-token-wrong-token")
        page.click("#token-save")
        expect(page.locator("#token-error")).to_contain_text("refused")
        expect(page.locator("#token-panel")).to_be_visible()
        expect(page.locator("#uploads li[data-state=token]")).to_have_count(1)

        # When: the right one is entered. Then: the waiting file is uploaded, and the job list loads.
        page.fill("#token-input", TOKEN)
        page.click("#token-save")
        expect(page.locator("#token-panel")).to_be_hidden()
        expect(page.locator("#uploads li[data-state=done]")).to_contain_text("queued as", timeout=15_000)
        receipt_row = jobs_rows(page).filter(has_text="receipt.png")
        expect(receipt_row).to_have_attribute("data-status", "completed", timeout=60_000)
        assert page.evaluate("sessionStorage.getItem('ocr-watcher.token')") == TOKEN

        # When: a long scan is dropped into the inbox folder. Then: it shows up in the list by itself.
        drop(daemon.inbox, long_scan)
        row = jobs_rows(page).filter(has_text="long-scan.pdf")
        expect(row).to_have_count(1, timeout=15_000)
        expect(row).to_have_attribute("data-status", ACTIVE)
        expect(page.locator("#page-info")).to_have_text("Showing 1–2 of 2")
        expect(jobs_rows(page).first).to_contain_text("long-scan.pdf")  # newest first
        job_id = row.get_attribute("data-job-id")
        assert job_id

        # When: it is opened. Then: next to its progress bar, the daemon's estimate of its end (the
        # receipt's page, 1 s, is what it is timed by: a dozen pages, some seconds to go).
        row.click()
        expect(page.locator("#job-detail")).to_have_attribute("data-job-id", job_id)
        to_go = re.compile(r"About \d+ (s|min) to go · done by ")
        expect(page.locator("#detail-eta")).to_contain_text(to_go, timeout=15_000)

        # When: it is cancelled from the page.
        expect(page.locator("#cancel")).to_be_enabled()
        expect(page.locator("#retry")).to_be_disabled()
        expect(page.locator("#download")).to_be_disabled()
        page.click("#cancel")

        # Then: the job is cancelled, in the page and in the daemon's job folder.
        expect(page.locator("#detail-status")).to_have_text("cancelled", timeout=30_000)
        expect(row).to_have_attribute("data-status", "cancelled", timeout=10_000)
        expect(page.locator("#result-note")).to_have_text("No result: the job is cancelled.")
        expect(page.locator("#retry")).to_be_enabled()
        expect(page.locator("#cancel")).to_be_disabled()
        assert daemon.job_for("long-scan.pdf")["status"] == "cancelled"
        screenshot(page, "web-page-cancelled.png")

        # When: Retry is pressed. Then: the job is queued again (and cancelled again, to stop quickly).
        page.click("#retry")
        expect(row).to_have_attribute("data-status", ACTIVE, timeout=10_000)
        expect(page.locator("#cancel")).to_be_enabled()
        page.click("#cancel")
        expect(row).to_have_attribute("data-status", "cancelled", timeout=30_000)
        assert daemon.job_for("long-scan.pdf")["attempts"] >= 2

        # When: the tab is reloaded. Then: the token is still used, and the linked job reopens.
        page.reload()
        expect(jobs_rows(page)).to_have_count(2)
        expect(page.locator("#token-panel")).to_be_hidden()
        expect(page.locator("#job-detail")).to_have_attribute("data-job-id", job_id)

        # When: the token is forgotten. Then: the prompt comes back and the jobs are no longer shown.
        page.click("#token-change")
        page.click("#token-forget")
        expect(page.locator("#token-message")).to_have_text("This server needs an access token.")
        expect(jobs_rows(page)).to_have_count(0)
        expect(page.locator("#job-detail")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('ocr-watcher.token')") is None

        assert console.unexpected(401) == []
