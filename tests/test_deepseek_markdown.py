"""DeepSeek-OCR grounding output → Markdown and figure boxes (ocr_watcher.engines.deepseek_markdown).

The samples in tests/data/deepseek/ are HAND-WRITTEN in DeepSeek-OCR's published output format, not
captured model output. The format was checked against deepseek-ai/DeepSeek-OCR
(DeepSeek-OCR-master/DeepSeek-OCR-vllm/run_dpsk_ocr_pdf.py and run_dpsk_ocr_image.py, config.py) and
deepseek-ai/DeepSeek-OCR-2 (DeepSeek-OCR2-master/DeepSeek-OCR2-vllm/run_dpsk_ocr2_pdf.py): tags
`<|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>` followed by the region's content,
coordinates scaled by `c / 999 * size`, `image` regions replaced by image links, the other tags
removed, and `<｜end▁of▁sentence｜>` ending a page that did not loop.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from ocr_watcher.engines.deepseek_markdown import (
    Converted,
    Figure,
    Region,
    box_to_pixels,
    grounded_blocks,
    parse,
    parse_boxes,
    to_markdown,
)

DATA = Path(__file__).parent / "data" / "deepseek"
EOS = "<｜end▁of▁sentence｜>"
MARKERS = ("<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<｜")


def sample(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def convert(name: str, width: int = 1000, height: int = 1414, page: int = 3, **kwargs) -> Converted:
    return to_markdown(sample(name), width, height, page=page, **kwargs)


def test_headings_and_paragraphs_keep_the_models_markdown_and_lose_every_tag():
    # Given a page with a header, a title, sub-titles, paragraphs, a list, a footer and a page number
    # When it is converted
    result = convert("headings_paragraphs.txt")
    # Then the tags are gone, the text after each is kept, `#` marks stay, blank-line runs collapse
    assert result.markdown == (
        "Annual Report of the River Board, 1932\n\n"
        "# The River Station and its Village\n\n"
        "## 1. Introduction\n\n"
        "The river station was built long before the village had a market. Its first keeper, "
        "Jean-Paul Martin, kept a daily record of the water level.\n\n"
        "The record runs without a gap from 1874 to 1931.\n\n"
        "## 2. The floods\n\n"
        "Three floods reached the station:\n\n"
        "- 1882, in March;\n- 1910, in January;\n- 1930, in November.\n\n"
        "River Board, Report No. 58\n\n"
        "12\n"
    )
    assert result.figures == []
    assert result.warnings == []


def test_table_stays_html_with_its_caption():
    result = convert("table_caption.txt")
    assert result.markdown == (
        "Table 1: Water level at the station (cm)\n\n"
        "<table><tr><td>Year</td><td>March</td><td>November</td></tr>"
        "<tr><td>1882</td><td>412</td><td>198</td></tr>"
        "<tr><td>1930</td><td>231</td><td>455</td></tr></table>\n\n"
        "Levels read at 8 a.m.\n"
    )
    assert result.warnings == []


def test_equations_stay_latex_inline_and_display():
    result = convert("equations.txt")
    assert result.markdown == (
        "The flow \\(Q\\) through a section of area \\(A\\) at mean velocity \\(v\\) is\n\n"
        "\\[\nQ = A v \\tag{1}\n\\]\n\n"
        "and for a rectangular channel of width $b$ and depth $h$,\n\n"
        "$$\nQ = b h \\, \\frac{1}{n} R^{2/3} S^{1/2}\n$$\n"
    )
    assert result.warnings == []


def test_several_figures_on_one_page_are_numbered_in_reading_order_and_linked():
    # Given a page rendered at 1000 x 1414 with three `image` regions and two captions
    result = convert("figures.txt", page=3)
    # Then each becomes a figure named by page and per-page counter, with its pixel box
    assert result.figures == [
        Figure("p0003_fig01.png", (100, 155, 481, 567)),
        Figure("p0003_fig02.png", (520, 155, 901, 567)),
        Figure("p0003_fig03.png", (0, 707, 1000, 1414)),
    ]
    # And the Markdown links them where the regions were, captions kept
    assert result.markdown == (
        "# Plates\n\n"
        "![](images/p0003_fig01.png)\n\n"
        "<center>Figure 1: The station in 1880.</center>\n\n"
        "![](images/p0003_fig02.png)\n\n"
        "<center>Figure 2: The station in 1930.</center>\n\n"
        "![](images/p0003_fig03.png)\n"
    )
    assert result.warnings == []


def test_page_files_one_level_down_link_with_a_prefix():
    result = convert("figures.txt", link_prefix="../images/")
    assert "![](../images/p0003_fig01.png)" in result.markdown
    assert "](images/" not in result.markdown


def test_one_image_ref_with_several_boxes_gives_one_figure_per_box_in_order():
    # Given an `image` ref with three boxes followed by a second `image` ref, on page 12
    result = convert("multi_box_image.txt", page=12)
    # Then the per-page counter runs over every box, so the second ref is figure 4, not 2
    assert [figure.name for figure in result.figures] == [
        "p0012_fig01.png",
        "p0012_fig02.png",
        "p0012_fig03.png",
        "p0012_fig04.png",
    ]
    assert [figure.box_px for figure in result.figures] == [
        (80, 141, 301, 425),
        (350, 141, 651, 425),
        (700, 141, 921, 425),
        (80, 566, 921, 991),
    ]
    assert result.markdown == (
        "Specimens collected at the station:\n\n"
        "![](images/p0012_fig01.png)\n\n"
        "![](images/p0012_fig02.png)\n\n"
        "![](images/p0012_fig03.png)\n\n"
        "<center>Figure 3: Three specimens, left to right.</center>\n\n"
        "![](images/p0012_fig04.png)\n"
    )


def test_output_cut_off_mid_tag_keeps_the_text_before_it_and_warns():
    assert sample("truncated.txt").endswith("<|ref|>text<|/ref|><|det|>[[12, 3")
    result = convert("truncated.txt")
    assert result.markdown == "## 3. Gauges\n\nThe gauges were read twice a day.\n"
    assert len(result.warnings) == 1
    assert "cut off" in result.warnings[0]


@pytest.mark.parametrize(
    "cut", ["<｜end▁of", "<|", "<|re", "<|ref|", "<|ref|>tex", "<|ref|>text<|/re", "<|ref|>text<|/ref|><|de"]
)
def test_output_cut_off_inside_a_marker_is_dropped(cut):
    result = to_markdown("Last words.\n\n" + cut, 100, 100, page=1)
    assert result.markdown == "Last words.\n"
    assert result.warnings


def test_garbage_coordinates_are_dropped_or_clamped_with_warnings_never_evaluated(capfd):
    # Given coordinates that are letters, three numbers, a call, huge, negative, reversed, infinite
    result = convert("garbage_coords.txt", width=1000, height=1000)
    # Then nothing was executed (the call would have printed "pwned")
    assert "pwned" not in capfd.readouterr().out
    # And text after a bad tag is kept while the tag itself is gone
    assert "Letters instead of numbers." in result.markdown
    assert "A call." in result.markdown
    assert "An infinite number." in result.markdown
    assert not any(marker in result.markdown for marker in MARKERS)
    # And image boxes are clamped to 0..999 and put in order; the valid box next to a bad one stays
    assert result.figures == [
        Figure("p0003_fig01.png", (100, 100, 1000, 401)),  # x2 = 10**20 → 999
        Figure("p0003_fig02.png", (0, 0, 201, 301)),  # negatives → 0
        Figure("p0003_fig03.png", (400, 500, 601, 701)),  # x2 < x1, y2 < y1 → swapped
        Figure("p0003_fig04.png", (10, 10, 21, 21)),  # [1,2,3] beside it dropped
    ]
    warnings = "\n".join(result.warnings)
    assert "'[[a,b]]' dropped" in warnings
    assert warnings.count("'[1, 2, 3]' dropped") == 2
    assert "__import__" in warnings
    assert "99999999999999999999, 400]' clamped" in warnings
    assert "[-50, -20, 200, 300]' clamped" in warnings
    assert "swapped" in warnings
    assert "inf" in warnings
    assert len(result.warnings) == 8


def test_coordinates_are_read_as_literals_only():
    boxes, warnings = parse_boxes("[[__import__('sys').modules.__setitem__('pwned_by_det', 1), 0, 1, 1]]")
    assert boxes == ()
    assert warnings
    assert "pwned_by_det" not in sys.modules


@pytest.mark.parametrize(
    ("det", "boxes"),
    [
        ("[[1, 2, 3, 4]]", ((1, 2, 3, 4),)),
        ("[1, 2, 3, 4]", ((1, 2, 3, 4),)),  # one bare box
        ("[[1.4, 2.6, 3, 4]]", ((1, 3, 3, 4),)),  # rounded
        (" [[0, 0, 999, 999], [5, 5, 6, 6]] ", ((0, 0, 999, 999), (5, 5, 6, 6))),
        ("[[True, 0, 1, 1]]", ()),
        ("[[true, 0, 1, 1]]", ()),  # JSON's booleans are not numbers either
        ("[[NaN, 0, 1, 1]]", ()),
        ("[[1e999, 0, 1, 1]]", ()),  # JSON reads 1e999 as infinity: not a finite number
        ("[[[1, 2, 3, 4]]]", ()),
        ("[]", ()),
        ("", ()),
        ("{'x': 1}", ()),
        ("[" * 5000 + "]" * 5000, ()),
        ("[[1, 2, 3, 4]]" * 2000, ()),  # far too long: not even parsed
    ],
)
def test_parse_boxes_accepts_only_lists_of_four_numbers(det, boxes):
    assert parse_boxes(det)[0] == boxes


def test_malformed_tags_in_the_middle_are_dropped_and_their_text_kept():
    output = (
        "<|ref|>text<|/ref|>No det after the ref.\n\n"
        "<|det|>[[1, 2, 3, 4]]<|/det|>No ref before the det.\n\n"
        "<|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]\nAn unclosed det.\n\n"
        "A stray <|/det|> marker.\n"
    )
    result = to_markdown(output, 100, 100, page=1)
    assert result.markdown == (
        "No det after the ref.\n\nNo ref before the det.\n\nAn unclosed det.\n\nA stray  marker.\n"
    )
    assert len(result.warnings) == 5


def test_special_tokens_are_stripped_wherever_they_are():
    output = "<｜begin▁of▁sentence｜><|ref|>text<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\nHello." + EOS
    result = to_markdown(output, 100, 100, page=1)
    assert result.markdown == "Hello.\n"
    assert result.warnings == []


@pytest.mark.parametrize("output", ["", EOS, "\n\n" + EOS + "\n"])
def test_empty_output_is_an_empty_page(output):
    assert to_markdown(output, 100, 100, page=1) == Converted(markdown="", figures=[], warnings=[])


def test_parse_gives_regions_and_text_in_reading_order():
    parsed = parse(
        "<|ref|>title<|/ref|><|det|>[[1, 2, 3, 4]]<|/det|>\n# T\n<|ref|>image<|/ref|><|det|>[[5, 6, 7, 8]]<|/det|>"
    )
    assert parsed.items == [Region("title", ((1, 2, 3, 4),)), "\n# T\n", Region("image", ((5, 6, 7, 8),))]
    assert parsed.warnings == []


@pytest.mark.parametrize(
    ("box", "width", "height", "pixels"),
    [
        ((0, 0, 999, 999), 1240, 1754, (0, 0, 1240, 1754)),  # 999 is the far edge: full width/height
        ((0, 0, 999, 999), 999, 999, (0, 0, 999, 999)),  # identity at 999 px
        ((333, 0, 666, 999), 1000, 1000, (333, 0, 667, 1000)),  # 333.33 → 333, 666.67 → 667: outwards
        ((500, 500, 500, 500), 1998, 1998, (1000, 1000, 1000, 1000)),
        ((998, 998, 999, 999), 10, 10, (9, 9, 10, 10)),  # the last pixel
    ],
)
def test_box_to_pixels_scales_by_size_over_999_rounding_outwards(box, width, height, pixels):
    assert box_to_pixels(box, width, height) == pixels


def test_an_image_box_without_area_is_dropped_and_numbering_stays_dense():
    output = "<|ref|>image<|/ref|><|det|>[[10, 10, 10, 500], [10, 10, 500, 500], [7, 7, 9, 7]]<|/det|>"
    result = to_markdown(output, 100, 100, page=1)
    assert result.figures == [Figure("p0001_fig01.png", (1, 1, 51, 51))]
    assert result.markdown == "![](images/p0001_fig01.png)\n"
    assert len(result.warnings) == 2
    assert all("has no area" in warning for warning in result.warnings)


def test_every_figure_box_is_a_valid_pil_crop_box():
    for name in sorted(path.name for path in DATA.glob("*.txt")):
        for width, height in [(1, 1), (7, 3), (1240, 1754)]:
            for figure in to_markdown(sample(name), width, height, page=1).figures:
                left, top, right, bottom = figure.box_px
                assert 0 <= left < right <= width
                assert 0 <= top < bottom <= height


def test_every_prefix_of_every_sample_converts_without_raising_or_leaking_tags():
    # Output cut off by max_tokens can end anywhere.
    for path in sorted(DATA.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        for end in range(len(text) + 1):
            result = to_markdown(text[:end], 640, 480, page=1)
            assert not any(marker in result.markdown for marker in MARKERS), (path.name, end)


def test_a_bad_page_size_is_a_programming_error():
    with pytest.raises(ValueError, match="0x100"):
        to_markdown("", 0, 100, page=1)


def test_random_mixtures_of_tag_pieces_never_raise_nor_leak_tags():
    # Given seeded random soups of markers, brackets, numbers, labels and special tokens
    pieces = ["<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "[[", "]]", "[", "1", ", ", "-5", "1e999", "image", "text"]
    pieces += ["\n", " ", "<", "|", "(", ")", EOS]
    rng = random.Random(20251129)
    for _ in range(2000):
        output = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 120)))
        # When converted, Then nothing raises, no tag survives, and every figure is a valid crop box
        result = to_markdown(output, 300, 200, page=1)
        assert not any(marker in result.markdown for marker in MARKERS), output
        for figure in result.figures:
            left, top, right, bottom = figure.box_px
            assert 0 <= left < right <= 300
            assert 0 <= top < bottom <= 200


def test_grounding_regions_become_page_blocks_of_their_kinds() -> None:
    output = (
        "<|ref|>sub_title<|/ref|><|det|>[[0, 0, 499, 99], [500, 0, 999, 99]]<|/det|>\n## Two **boxes**\n\n"
        "<|ref|>image<|/ref|><|det|>[[0, 100, 999, 499]]<|/det|>\n\n"
        "<|ref|>caption<|/ref|><|det|>[[0, 500, 999, 599]]<|/det|>\nA *caption*\n"
        "<|ref|>text<|/ref|><|det|>[[0, 600, 999"  # cut off by max_tokens
    )
    assert grounded_blocks(output, 999, 999) == [
        {"kind": "title", "box_px": [0, 0, 999, 99], "lines": [{"text": "Two boxes", "box_px": [0, 0, 999, 99]}]},
        {"kind": "figure", "box_px": [0, 100, 999, 499], "lines": []},
        {"kind": "text", "box_px": [0, 500, 999, 599], "lines": [{"text": "A caption", "box_px": [0, 500, 999, 599]}]},
    ]
