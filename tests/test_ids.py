"""Job ids: `{name}_{YYYYMMDD}_{HHMMSS}_{8 hex}` in UTC, always a safe folder name."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ocr_watcher.spool.atomic import temp_name_for
from ocr_watcher.spool.ids import MAX_NAME_BYTES, is_job_id, new_job_id, safe_name

NAME_MAX = 255
MOMENT = datetime(2026, 1, 7, 12, 34, 56, tzinfo=timezone.utc)


def test_job_id_has_name_utc_date_time_and_8_hex():
    # Given a plain file name and a UTC moment
    # When a job id is made
    job_id = new_job_id("document.pdf", MOMENT)
    # Then it is name_YYYYMMDD_HHMMSS_8hex
    assert re.fullmatch(r"document\.pdf_20260107_123456_[0-9a-f]{8}", job_id), job_id
    assert is_job_id(job_id)


def test_job_id_time_is_converted_to_utc():
    # Given a moment expressed in UTC+02:00 (14:34:56 local == 12:34:56 UTC)
    local = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert local.hour == 14
    # When a job id is made
    job_id = new_job_id("a.pdf", local)
    # Then the id carries the UTC time
    assert "_20260107_123456_" in job_id


def test_job_id_date_rolls_over_in_utc():
    # Given 2026-01-08 01:00 at UTC+03:00, which is still 2026-01-07 in UTC
    local = datetime(2026, 1, 8, 1, 0, 0, tzinfo=timezone(timedelta(hours=3)))
    # Then the date in the id is the UTC date
    assert "_20260107_220000_" in new_job_id("a.pdf", local)


def test_job_ids_for_the_same_name_and_second_differ():
    # Given two claims of the same name within one second
    # Then the random suffix keeps their ids apart
    assert new_job_id("a.pdf", MOMENT) != new_job_id("a.pdf", MOMENT)


def test_job_id_without_a_moment_uses_now_in_utc():
    before = datetime.now(timezone.utc).replace(microsecond=0)
    job_id = new_job_id("a.pdf")
    after = datetime.now(timezone.utc)
    stamp = re.search(r"_(\d{8}_\d{6})_[0-9a-f]{8}$", job_id).group(1)
    moment = datetime.strptime(stamp, "%Y%m%d_%H%M%S").replace(tzinfo=timezone.utc)
    assert before <= moment <= after


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("my report.pdf", "my_report.pdf"),
        ("line\nbreak.pdf", "line_break.pdf"),
        ("tab\there.pdf", "tab_here.pdf"),
        ("a/b.pdf", "a_b.pdf"),
        ("a\\b.pdf", "a_b.pdf"),
        ("$(rm -rf ~);x.pdf", "__rm_-rf____x.pdf"),
        ("q\"u'o`te*?.pdf", "q_u_o_te__.pdf"),
        ("nul\x00byte.pdf", "nul_byte.pdf"),
        ("Résumé 文档.pdf", "Résumé_文档.pdf"),
        ("Ünïcödé_ok-1.2.pdf", "Ünïcödé_ok-1.2.pdf"),
    ],
)
def test_unsafe_characters_are_replaced_and_word_characters_kept(name, expected):
    # Given a name with characters a shell, a share or a URL trips on
    # Then each is replaced by "_" and letters of any script, digits, ".", "-", "_" are kept
    assert safe_name(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".hidden.pdf", "_hidden.pdf"),
        ("-rf.pdf", "_rf.pdf"),
        ("..", "_."),
        (".", "_"),
        ("", "file"),
    ],
)
def test_names_never_start_with_a_dot_or_a_dash(name, expected):
    # Given a name that would be hidden, an option, or empty
    # Then it is made visible and harmless
    cleaned = safe_name(name)
    assert cleaned == expected
    assert cleaned and cleaned[0] not in ".-"


def test_job_id_of_a_hidden_name_is_itself_not_hidden():
    job_id = new_job_id(".DS_Store", MOMENT)
    assert not job_id.startswith(".")
    assert is_job_id(job_id)


@pytest.mark.parametrize("char", ["a", "é", "文", "𝔘"])  # 1, 2, 3 and 4 bytes in UTF-8
def test_255_byte_names_are_truncated_on_a_character_boundary(char):
    # Given a file name of (about) NAME_MAX bytes made of multi-byte characters
    width = len(char.encode("utf-8"))
    name = char * (NAME_MAX // width)
    assert NAME_MAX - width < len(name.encode("utf-8")) <= NAME_MAX
    # When it becomes a name and a job id
    cleaned = safe_name(name)
    job_id = new_job_id(name, MOMENT)
    # Then the name is cut to at most MAX_NAME_BYTES, on a character boundary (decodes strictly)
    encoded = cleaned.encode("utf-8")
    assert len(encoded) <= MAX_NAME_BYTES
    assert len(encoded) > MAX_NAME_BYTES - width  # nothing more than a partial character is dropped
    assert encoded.decode("utf-8", errors="strict") == cleaned
    assert set(cleaned) == {char}
    # And the job id, and the temp name written next to it, still fit in one path component
    assert len(job_id.encode("utf-8")) <= NAME_MAX
    assert len(temp_name_for(Path("/x") / job_id).name.encode()) <= NAME_MAX
    assert is_job_id(job_id)


def test_short_names_are_not_truncated():
    name = "x" * MAX_NAME_BYTES
    assert safe_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "report.pdf",
        "",
        ".ocr-watcher",
        "report.pdf_20260107_123456",  # no random part
        "report.pdf_20260107_123456_ABCDEF12",  # upper-case hex
        "report.pdf_20260107_123456_abcdef1",  # 7 hex
        "report.pdf_2026017_123456_abcdef12",  # 7-digit date
        "_20260107_123456_abcdef12",  # no name
        ".hidden_20260107_123456_abcdef12",  # hidden
        "a/b_20260107_123456_abcdef12",  # a path, not a name
        "report.pdf_20260107_123456_abcdef12.tmp",
    ],
)
def test_is_job_id_rejects_what_is_not_a_job_folder(name):
    assert not is_job_id(name)


@pytest.mark.parametrize(
    "name",
    ["report.pdf_20260107_123456_abcdef12", "a_b_c_20260107_123456_00000000", "文档.pdf_20260107_123456_0a1b2c3d"],
)
def test_is_job_id_accepts_job_ids(name):
    assert is_job_id(name)
