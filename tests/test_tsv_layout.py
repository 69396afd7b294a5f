"""Structure from Tesseract's boxes: headings from larger type, lists from markers, on real OCR of
rendered pages (and the rules apart, on TSV rows)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ocr_watcher.engines.base import PageInput
from ocr_watcher.engines.markdown import tesseract_tsv_to_markdown
from ocr_watcher.engines.tesseract import TesseractEngine
from tests.pdfgen import draw_page, sample_lines

DPI = 200
BODY_PX = 28  # about 10 pt at 200 dpi, as tests/pdfgen.py draws


def _page(path: Path, lines: list[tuple[str, float]]) -> PageInput:
    """A white page with each (text, size as a multiple of the body's) on its own line."""
    image = Image.new("L", (int(8.5 * DPI), int(6 * DPI)), 255)
    draw = ImageDraw.Draw(image)
    y = 50
    for text, scale in lines:
        px = round(BODY_PX * scale)
        if text:
            draw.text((60, y), text, fill=0, font=ImageFont.load_default(size=px))
        y += round(px * 1.6)
    image.save(path)
    return PageInput(job_id="t", page=1, image_path=path, width=image.width, height=image.height)


def _ocr(page: PageInput) -> str:
    return TesseractEngine(dpi=DPI).recognize(page).markdown


def test_a_report_page_reads_as_a_title_a_heading_a_bulleted_and_a_numbered_list(tmp_path: Path) -> None:
    page = _page(
        tmp_path / "report.png",
        [
            ("Annual Report", 2.4),
            ("The river station was built long before the village had a", 1),
            ("marketplace of its own, and the people who lived there came", 1),
            ("to trade fish, grain and cloth every week of the summer.", 1),
            ("", 1),
            ("Results of the Year", 1.6),
            ("• Revenue grew in every quarter", 1),
            ("• Costs fell by a tenth", 1),
            ("• Two new stations opened", 1),
            ("", 0.5),
            ("1. Read the summary first", 1),
            ("2. Then the tables", 1),
            ("3. Then the notes at the end", 1),
        ],
    )
    blocks = _ocr(page).strip().split("\n\n")
    assert blocks[0] == "# Annual Report"
    assert blocks[1].startswith("The river station") and blocks[1].endswith("summer.")  # one paragraph
    assert blocks[2] == "## Results of the Year"
    bullets = ["- Revenue grew in every quarter", "- Costs fell by a tenth", "- Two new stations opened"]
    assert blocks[3].splitlines() == bullets
    assert blocks[4].splitlines() == ["1. Read the summary first", "2. Then the tables", "3. Then the notes at the end"]


def test_a_page_of_body_text_gets_no_headings_or_lists(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    lines = sample_lines(9, seed=7)
    draw_page(lines, dpi=DPI).save(path)
    markdown = _ocr(PageInput(job_id="t", page=1, image_path=path))
    assert not [line for line in markdown.splitlines() if line.startswith(("#", "- ", "1. "))], markdown


# -- the rules, on TSV rows ---------------------------------------------------------------------------
def _tsv(lines: list[tuple[int, int, str]]) -> str:
    """TSV with one paragraph per (block, line height, text) entry's block; a line row, then its words."""
    rows = ["level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"]
    for number, (block, height, text) in enumerate(lines, start=1):
        rows.append("\t".join(["4", "1", str(block), "1", str(number), "0", "0", "0", "100", str(height), "-1", ""]))
        for word_number, word in enumerate(text.split(), start=1):
            box = ["0", "0", "9", "9", "95"]
            rows.append("\t".join(["5", "1", str(block), "1", str(number), str(word_number), *box, word]))
    return "\n".join(rows) + "\n"


BODY = [(1, 30, "the people who lived there came to trade fish and grain and cloth every week")]


def test_an_ambiguous_marker_makes_a_list_only_with_a_second_item() -> None:
    alone = tesseract_tsv_to_markdown(_tsv([*BODY, (2, 30, "© 2024 NVIDIA Corporation")]))
    assert alone.strip().splitlines()[-1] == "© 2024 NVIDIA Corporation"
    two = tesseract_tsv_to_markdown(_tsv([*BODY, (2, 30, "¢ Revenue grew"), (3, 30, "¢ Costs fell")]))
    assert two.strip().split("\n\n")[-1] == "- Revenue grew\n- Costs fell"  # Tesseract's reading of •


def test_numbers_that_do_not_count_up_stay_text_and_a_single_number_is_escaped() -> None:
    jumbled = tesseract_tsv_to_markdown(_tsv([*BODY, (2, 30, "3. Third"), (3, 30, "7. Seventh")]))
    assert jumbled.strip().split("\n\n")[-2:] == ["3\\. Third", "7\\. Seventh"]
    single = tesseract_tsv_to_markdown(_tsv([*BODY, (2, 30, "1. Introduction")]))
    assert single.strip().split("\n\n")[-1] == "1\\. Introduction"


def test_no_heading_without_enough_body_text_to_measure_it_against() -> None:
    assert tesseract_tsv_to_markdown(_tsv([(1, 30, "small"), (2, 90, "Large words")])) == "small\n\nLarge words\n"


def test_a_bullet_items_continuation_line_joins_its_item() -> None:
    item = [(2, 30, "• Revenue grew in every"), (2, 30, "quarter of the year")]
    markdown = tesseract_tsv_to_markdown(_tsv([*BODY, *item]))
    assert markdown.strip().split("\n\n")[-1] == "- Revenue grew in every quarter of the year"
