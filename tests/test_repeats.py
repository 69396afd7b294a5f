"""Running headers, footers and page numbers: left out of result.md, kept in the page files."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ocr_watcher.pipeline.repeats import find_repeats, shape, without_repeats
from tests.daemon import Daemon, drop
from tests.pdfgen import sample_lines

HEADER = "Annual Report 2024"


def _page(n: int, body: list[str]) -> str:
    return "\n\n".join([HEADER, *body, f"Page {n} of 5"]) + "\n"


def test_a_header_and_numbered_footers_on_most_pages_are_found_and_left_out() -> None:
    pages = {n: _page(n, sample_lines(2, seed=n)) for n in range(1, 6)}
    pages[5] = "The last page has neither.\n"
    repeats = find_repeats(pages)
    assert {r.text for r in repeats.values()} == {HEADER, "Page 1 of 5"}
    assert all(r.pages == (1, 2, 3, 4) for r in repeats.values())
    assert without_repeats(pages[2], repeats) == "\n\n".join(sample_lines(2, seed=2)) + "\n"
    assert without_repeats(pages[5], repeats) == pages[5]


def test_digits_case_spacing_and_markdown_marks_do_not_make_a_header_different() -> None:
    assert shape("## ANNUAL  report 2024") == shape("Annual Report 2025") == "annual report #"
    assert shape("- 12 -") == shape("3") == "#"


def test_text_that_repeats_in_the_middle_of_pages_or_is_long_stays() -> None:
    long = "This sentence is long enough to be body text and not a running header at all, surely."
    pages = {}
    for n in range(1, 5):
        first, second, last = sample_lines(3, seed=n)
        pages[n] = "\n\n".join([long, first, "See the table below.", second, last]) + "\n"
    assert find_repeats(pages) == {}  # the long one is too long; "See the table below." is not at a margin


def test_a_heading_that_starts_every_page_is_content() -> None:
    pages = {n: f"# Invoice\n\n{sample_lines(1, seed=n)[0]}\n\nTotal {n}.00 EUR and more\n" for n in range(1, 5)}
    assert [r.text for r in find_repeats(pages).values()] == ["Total 1.00 EUR and more"]


def test_identical_pages_keep_their_text_and_two_pages_are_too_few() -> None:
    same = {n: "Invoice 2024-117\n\nTotal: 1,250.00 EUR\n" for n in range(1, 5)}
    repeats = find_repeats(same)
    assert all(without_repeats(markdown, repeats) == markdown for markdown in same.values())
    assert find_repeats({1: _page(1, ["a"]), 2: _page(2, ["b"])}) == {}


def _scanned_report(path: Path, pages: int, dpi: int = 200) -> Path:
    """A scanned report: a running header at the top, body text, "Page N of M" at the bottom."""
    font = ImageFont.load_default(size=28)
    images = []
    for n in range(1, pages + 1):
        image = Image.new("L", (int(8.5 * dpi), int(5.5 * dpi)), 255)
        draw = ImageDraw.Draw(image)
        draw.text((60, 40), HEADER, fill=0, font=font)
        for i, line in enumerate(sample_lines(5, seed=100 + n)):
            draw.text((60, 220 + i * 44), line, fill=0, font=font)
        draw.text((image.width // 2 - 90, image.height - 90), f"Page {n} of {pages}", fill=0, font=font)
        images.append(image)
    images[0].save(path, "PDF", save_all=True, append_images=images[1:], resolution=dpi)
    return path


def test_a_scanned_reports_running_header_and_page_numbers_stay_out_of_result_md(tmp_path: Path) -> None:
    """Given a 4-page scan with the same header and a "Page N of 4" footer on every page, when the
    daemon OCRs it, then result.md has neither (its body text is all there), each page file keeps them,
    and result_metadata.json lists what was left out and on which pages."""
    pdf = _scanned_report(tmp_path / "report.pdf", 4)
    with Daemon(tmp_path) as daemon:
        drop(daemon.inbox, pdf)
        job = daemon.wait_for_job("report.pdf", {"completed", "failed"}, timeout=180)
    assert job["status"] == "completed", job
    folder = daemon.job_dir(job)
    result = (folder / "result.md").read_text()
    assert HEADER not in result and not any(f"Page {n} of 4" in result for n in range(1, 5)), result
    assert all(sample_lines(5, seed=100 + n)[0].split()[0] in result for n in range(1, 5))
    for n in range(1, 5):
        page = (folder / "pages" / f"{n:04d}.md").read_text()
        assert HEADER in page and f"Page {n} of 4" in page, page
    left_out = json.loads((folder / "result_metadata.json").read_text())["running_headers_footers"]
    assert sorted(entry["text"] for entry in left_out) == [HEADER, "Page 1 of 4"]
    assert all(entry["pages"] == [1, 2, 3, 4] for entry in left_out)
