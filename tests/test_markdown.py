"""Markdown from recognised structure: Tesseract TSV, PDF text layers, and the shared rules."""

from __future__ import annotations

from ocr_watcher.engines.markdown import (
    escape_line_start,
    join_lines,
    paragraphs_to_markdown,
    split_text_layer,
    tesseract_tsv_to_markdown,
    text_layer_to_markdown,
)

# Real output of `tesseract page.png stdout -l eng --psm 3 --dpi 200 tsv` (Tesseract 5.5) for a
# drawn page with a numbered heading, a paragraph with "market-/place" hyphenated across lines,
# and a line starting with "#" further down. Pasted with spaces for readability; `as_tsv` puts back
# Tesseract's tabs and the empty text column of structural rows.
REAL_SAMPLE = """\
level page_num block_num par_num line_num word_num left top width height conf text
1 1 0 0 0 0 0 0 850 520 -1
2 1 1 0 0 0 51 58 384 109 -1
3 1 1 1 0 0 51 58 384 109 -1
4 1 1 1 1 0 53 58 182 20 -1
5 1 1 1 1 1 53 59 18 19 92.050629 1.
5 1 1 1 1 2 82 58 153 20 96.166306 Introduction
4 1 1 1 2 0 51 141 384 26 -1
5 1 1 1 2 1 51 141 48 21 96.919708 The
5 1 1 1 2 2 108 143 54 19 95.467979 river
5 1 1 1 2 3 170 143 83 19 96.726646 station
5 1 1 1 2 4 261 147 49 15 96.878586 was
5 1 1 1 2 5 319 142 54 20 96.069107 built
5 1 1 1 2 6 382 142 53 25 96.069107 long
2 1 2 0 0 0 52 183 396 68 -1
3 1 2 1 0 0 52 183 396 68 -1
4 1 2 1 1 0 52 183 396 26 -1
5 1 2 1 1 1 52 183 81 21 96.819260 before
5 1 2 1 1 2 141 183 40 21 96.884102 the
5 1 2 1 1 3 188 184 82 25 96.565857 village
5 1 2 1 1 4 279 183 45 21 96.311806 had
5 1 2 1 1 5 333 189 12 15 93.157616 a
5 1 2 1 1 6 355 184 93 20 91.907768 market-
4 1 2 1 2 0 52 225 200 26 -1
5 1 2 1 2 1 52 226 67 25 96.684776 place
5 1 2 1 2 2 127 225 24 21 96.984398 of
5 1 2 1 2 3 159 227 26 19 96.425415 its
5 1 2 1 2 4 193 231 59 15 96.370399 own.
2 1 3 0 0 0 52 351 272 21 -1
3 1 3 1 0 0 52 351 272 21 -1
4 1 3 1 1 0 52 351 272 21 -1
5 1 3 1 1 1 52 353 12 19 93.302887 #
5 1 3 1 1 2 75 353 70 19 96.025658 Notes
5 1 3 1 1 3 153 351 33 21 96.025658 for
5 1 3 1 1 4 194 351 40 21 96.960808 the
5 1 3 1 1 5 243 352 81 20 96.621346 reader
"""


def as_tsv(sample: str) -> str:
    rows = [line.split() for line in sample.splitlines()]
    return "\n".join("\t".join(row + [""] * (12 - len(row))) for row in rows) + "\n"


REAL_TSV = as_tsv(REAL_SAMPLE)


def test_real_tesseract_tsv_groups_blocks_into_paragraphs():
    # Given Tesseract's own grouping: block 1, block 2 (with the hyphenated word), block 3
    markdown = tesseract_tsv_to_markdown(REAL_TSV)

    # Then each block is one paragraph, the hyphenation is undone, and line starts stay text
    assert markdown == (
        "1\\. Introduction The river station was built long\n"
        "\n"
        "before the village had a marketplace of its own.\n"
        "\n"
        "\\# Notes for the reader\n"
    )


def tsv_row(block: int, par: int, line: int, word: int, text: str, conf: str = "95.0") -> str:
    return "\t".join(["5", "1", str(block), str(par), str(line), str(word), "0", "0", "10", "10", conf, text])


HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"


def test_paragraphs_within_one_block_are_separated():
    tsv = "\n".join(
        [
            HEADER,
            "2\t1\t1\t0\t0\t0\t0\t0\t10\t10\t-1\t",
            tsv_row(1, 1, 1, 1, "First"),
            tsv_row(1, 1, 1, 2, "paragraph."),
            tsv_row(1, 2, 1, 1, "Second"),
            tsv_row(1, 2, 2, 1, "one,"),
            tsv_row(1, 2, 2, 2, "two"),
            tsv_row(2, 1, 1, 1, "Other"),
            tsv_row(2, 1, 1, 2, "block"),
        ]
    )
    assert tesseract_tsv_to_markdown(tsv) == "First paragraph.\n\nSecond one, two\n\nOther block\n"


def test_blank_words_and_structural_rows_are_skipped():
    tsv = "\n".join([HEADER, tsv_row(1, 1, 1, 1, " "), tsv_row(1, 1, 1, 2, "kept"), tsv_row(1, 1, 1, 3, "", conf="-1")])
    assert tesseract_tsv_to_markdown(tsv) == "kept\n"


def test_empty_and_header_only_tsv_give_empty_markdown():
    assert tesseract_tsv_to_markdown("") == ""
    assert tesseract_tsv_to_markdown(HEADER + "\n1\t1\t0\t0\t0\t0\t0\t0\t850\t600\t-1\t\n") == ""


def test_hyphen_at_line_end_is_rejoined_only_before_lower_case():
    assert join_lines(["a marvel-", "lous day"]) == "a marvellous day"
    assert join_lines(["Jean-", "Paul came"]) == "Jean-Paul came"
    assert join_lines(["minus -", "one"]) == "minus - one"
    assert join_lines(["  spaced   out ", "", "words"]) == "spaced out words"


def test_paragraphs_are_separated_by_blank_lines_and_empty_ones_dropped():
    assert paragraphs_to_markdown([["one", "two"], [], ["  "], ["three"]]) == "one two\n\nthree\n"
    assert paragraphs_to_markdown([]) == ""


def test_markdown_syntax_at_a_line_start_is_escaped():
    assert escape_line_start("# not a heading") == "\\# not a heading"
    assert escape_line_start("#hashtag") == "#hashtag"
    assert escape_line_start("> not a quote") == "\\> not a quote"
    assert escape_line_start("- not a list") == "\\- not a list"
    assert escape_line_start("* not a list") == "\\* not a list"
    assert escape_line_start("+ not a list") == "\\+ not a list"
    assert escape_line_start("-5 degrees") == "-5 degrees"
    assert escape_line_start("12. not ordered") == "12\\. not ordered"
    assert escape_line_start("3) not ordered") == "3\\) not ordered"
    assert escape_line_start("3.5 kg") == "3.5 kg"
    assert escape_line_start("***") == "\\***"
    assert escape_line_start("```") == "\\```"
    assert escape_line_start("<div>") == "\\<div>"
    assert escape_line_start("< 5 mm") == "< 5 mm"
    assert escape_line_start("Plain text") == "Plain text"


def test_text_layer_splits_on_blank_lines_and_short_sentence_ends():
    # Given PDFium's text: \r\n between lines; the third line is a short one that ends a sentence
    text = (
        "The first paragraph runs across the full width of\r\n"
        "the column and goes on for a while before it\r\n"
        "ends here.\r\n"
        "A second paragraph starts on the next line and\r\n"
        "is long enough to wrap onto a further line.\r\n"
        "\r\n"
        "Third"
    )
    assert split_text_layer(text) == [
        [
            "The first paragraph runs across the full width of",
            "the column and goes on for a while before it",
            "ends here.",
        ],
        ["A second paragraph starts on the next line and", "is long enough to wrap onto a further line."],
        ["Third"],
    ]


def test_text_layer_drops_pdfium_line_end_hyphen_marks():
    # PDFium joins a word hyphenated across lines itself and marks the joint with U+0002 / U+FFFE
    assert text_layer_to_markdown("an exam\x02ple of hyphen\ufffeation") == "an example of hyphenation\n"


def test_empty_text_layer_gives_empty_markdown():
    assert text_layer_to_markdown("") == ""
    assert text_layer_to_markdown("\r\n  \r\n") == ""
