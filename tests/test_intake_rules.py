"""Intake decisions: ignore rules and profiles, sniffing the bytes, and readiness over time."""

from __future__ import annotations

import os
import random
import threading

import pytest

from ocr_watcher.config import DEFAULT_IGNORE
from ocr_watcher.intake.readiness import Action, Observation, Tracked, decide, next_check_in, observe
from ocr_watcher.intake.rules import compile_patterns, is_ignored_name, is_ignored_path, profile_for
from ocr_watcher.intake.sniff import HEAD_BYTES, TAIL_BYTES, Sniff, Verdict, classify, sniff_file

PATTERNS = compile_patterns(DEFAULT_IGNORE)

PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 17 + b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x11" * 200 + b"\xff\xd9"


def sniff_bytes(data: bytes, name: str) -> Sniff:
    """classify() as sniff_file() calls it: the first HEAD_BYTES and the last TAIL_BYTES."""
    head = data[:HEAD_BYTES]
    tail = data[-TAIL_BYTES:] if len(data) > HEAD_BYTES else head
    return classify(head, tail, len(data), name)


# -- ignore rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        ".DS_Store",
        "._x.pdf",
        ".hidden.pdf",
        "~$doc.pdf",
        "~lock.pdf",
        "backup.pdf~",
        "x.pdf.part",
        "x.PDF.PART",
        "X.CRDOWNLOAD",
        "x.pdf.crdownload",
        "x.tmp",
        "x.partial",
        "x.filepart",
        "Thumbs.db",
        "THUMBS.DB",
        "thumbs.db",
        "desktop.ini",
        "Desktop.INI",
        "@eaDir",
        "@EADIR",
        "__MACOSX",
        ".stfolder",
        ".Trashes",
    ],
)
def test_default_ignore_patterns_match_case_insensitively(name):
    assert is_ignored_name(name, PATTERNS)


@pytest.mark.parametrize(
    "name",
    ["report.pdf", "REPORT.PDF", "scan 001.png", "x.tiff", "notes.txt", "part.pdf", "tmp.pdf", "a~b.pdf", "x.db"],
)
def test_ordinary_names_are_not_ignored(name):
    assert not is_ignored_name(name, PATTERNS)


def test_ignored_folder_hides_everything_below_it():
    # Given a file inside a Synology @eaDir folder (any case)
    assert is_ignored_path(["@eaDir", "x.pdf@SynoEAStream"], PATTERNS)
    assert is_ignored_path(["urgent", "@EaDir", "x.pdf"], PATTERNS)
    assert is_ignored_path(["__MACOSX", "report.pdf"], PATTERNS)
    # And a normal file in a normal folder is not ignored
    assert not is_ignored_path(["urgent", "x.pdf"], PATTERNS)


def test_configured_patterns_are_case_insensitive_too():
    patterns = compile_patterns(["*.BAK", "Scratch*"])
    assert is_ignored_name("a.bak", patterns)
    assert is_ignored_name("scratchpad.pdf", patterns)
    assert not is_ignored_name("a.pdf", patterns)


def test_profile_from_first_folder_only_when_configured():
    profiles = {"urgent": object(), "bulk": object()}
    # The first folder names a configured profile
    assert profile_for(["urgent", "x.pdf"], profiles) == "urgent"
    assert profile_for(["bulk", "deeper", "x.pdf"], profiles) == "bulk"
    # Only the first folder counts
    assert profile_for(["other", "urgent", "x.pdf"], profiles) == "default"
    # A file at the top whose name equals a profile is not in that profile
    assert profile_for(["urgent"], profiles) == "default"
    # An unconfigured folder is the default profile
    assert profile_for(["unknown", "x.pdf"], profiles) == "default"
    assert profile_for(["x.pdf"], profiles) == "default"
    assert profile_for(["urgent", "x.pdf"], {}) == "default"


# -- classify -------------------------------------------------------------------------------------
def test_complete_pdf_is_a_job():
    s = sniff_bytes(PDF, "a.pdf")
    assert (s.verdict, s.kind, s.suffix) == (Verdict.JOB, "pdf", ".pdf")


def test_pdf_is_recognised_whatever_its_name():
    s = sniff_bytes(PDF, "scan")
    assert (s.verdict, s.kind, s.suffix) == (Verdict.JOB, "pdf", ".pdf")


def test_large_pdf_with_eof_at_the_end_is_a_job():
    data = b"%PDF-1.4\n" + b"x" * (3 * TAIL_BYTES) + b"\n%%EOF\n"
    assert sniff_bytes(data, "big.pdf").verdict is Verdict.JOB


def test_pdf_without_eof_marker_is_incomplete():
    # Given a PDF cut off before its trailer (still being written, or truncated)
    data = PDF[: PDF.index(b"trailer")]
    s = sniff_bytes(data, "a.pdf")
    # Then it is not a job yet, with a reason that says so
    assert s.verdict is Verdict.INCOMPLETE
    assert s.error_type == "truncated_pdf"
    assert "%%EOF" in s.message


def test_large_pdf_whose_eof_is_only_in_the_middle_is_incomplete():
    # An incremental update being appended: the old %%EOF is far from the end
    data = PDF + b"y" * (TAIL_BYTES + 10)
    assert sniff_bytes(data, "a.pdf").verdict is Verdict.INCOMPLETE


def test_junk_after_eof_within_64_kib_is_tolerated():
    # Given a large PDF with almost 64 KiB of junk after its %%EOF
    junk = b"\r\n\x00junk appended by a scanner" + b"\x00" * (TAIL_BYTES - 1000)
    data = b"%PDF-1.4\n" + b"x" * (2 * TAIL_BYTES) + b"\n%%EOF\n" + junk
    # Then it is still a complete PDF
    assert sniff_bytes(data, "a.pdf").verdict is Verdict.JOB


def test_png_complete_and_truncated():
    assert sniff_bytes(PNG, "a.png") == Sniff(Verdict.JOB, "image", ".png")
    truncated = sniff_bytes(PNG[:-12], "a.png")
    assert (truncated.verdict, truncated.error_type, truncated.suffix) == (
        Verdict.INCOMPLETE,
        "truncated_image",
        ".png",
    )


def test_jpeg_complete_and_truncated():
    assert sniff_bytes(JPEG, "a.jpg") == Sniff(Verdict.JOB, "image", ".jpg")
    truncated = sniff_bytes(JPEG[:-2], "a.jpeg")
    assert (truncated.verdict, truncated.error_type) == (Verdict.INCOMPLETE, "truncated_image")


@pytest.mark.parametrize("magic", [b"II*\x00", b"MM\x00*"])
def test_tiff_is_a_job(magic):
    s = sniff_bytes(magic + b"\x08\x00\x00\x00" + b"\x01" * 100, "scan.tif")
    assert (s.verdict, s.kind, s.suffix) == (Verdict.JOB, "image", ".tif")


def test_image_named_pdf_is_still_an_image():
    s = sniff_bytes(PNG, "photo.pdf")
    assert (s.verdict, s.suffix) == (Verdict.JOB, ".png")


def test_zero_bytes_is_incomplete_not_rejected():
    # A file created but not yet written must not be failed at once
    s = classify(b"", b"", 0, "a.pdf")
    assert (s.verdict, s.error_type) == (Verdict.INCOMPLETE, "empty_file")


def test_zero_filled_head_is_incomplete():
    # A preallocated file (some copy tools and SMB clients) is all zeros until written
    s = sniff_bytes(b"\x00" * 100_000, "a.pdf")
    assert (s.verdict, s.error_type) == (Verdict.INCOMPLETE, "empty_file")


def test_random_bytes_named_pdf_are_rejected_as_not_a_pdf():
    data = bytes(random.Random(1234).randrange(1, 256) for _ in range(5000))
    assert b"%PDF-" not in data
    for name in ("a.pdf", "A.PDF"):
        s = sniff_bytes(data, name)
        assert (s.verdict, s.error_type, s.suffix) == (Verdict.REJECT, "not_a_pdf", ".pdf")
        assert "not a PDF" in s.message


def test_docx_is_rejected_as_unsupported_naming_the_type():
    # A .docx is a ZIP archive
    data = b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml" + b"\x00" * 300
    s = sniff_bytes(data, "letter.docx")
    assert (s.verdict, s.error_type, s.suffix) == (Verdict.REJECT, "unsupported_type", ".docx")
    assert "ZIP" in s.message and "Office" in s.message and ".docx" in s.message
    assert "PDF" in s.message  # says what is supported


def test_plain_text_is_rejected_as_unsupported():
    s = sniff_bytes(b"Dear reader,\nthis is not a scan.\n", "notes.txt")
    assert (s.verdict, s.error_type, s.suffix) == (Verdict.REJECT, "unsupported_type", ".txt")
    assert "plain text" in s.message and ".txt" in s.message


def test_unsupported_file_without_extension():
    s = sniff_bytes(b"GIF89a" + b"\x01" * 50, "picture")
    assert s.verdict is Verdict.REJECT
    assert "GIF" in s.message and "no extension" in s.message
    assert s.suffix == ""


def test_odd_suffix_is_not_carried_into_the_job_folder():
    s = sniff_bytes(b"hello\n", "x.t$xt")
    assert s.verdict is Verdict.REJECT
    assert s.suffix == ""


# -- sniff_file on real files --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "name", "verdict"),
    [
        (PDF, "a.pdf", Verdict.JOB),
        (PDF + b"z" * (TAIL_BYTES * 2) + b"%%EOF\n", "big.pdf", Verdict.JOB),
        (PDF[:30], "cut.pdf", Verdict.INCOMPLETE),
        (b"", "empty.pdf", Verdict.INCOMPLETE),
        (PNG, "a.png", Verdict.JOB),
        (b"PK\x03\x04rest", "a.docx", Verdict.REJECT),
    ],
)
def test_sniff_file_reads_head_and_tail_of_real_files(tmp_path, data, name, verdict):
    path = tmp_path / name
    path.write_bytes(data)
    assert sniff_file(path).verdict is verdict


def test_sniff_file_of_a_large_file_with_eof_only_in_the_head_is_incomplete(tmp_path):
    # The tail read must come from the end, not the beginning
    path = tmp_path / "a.pdf"
    path.write_bytes(PDF + b"\x01" * (TAIL_BYTES + HEAD_BYTES))
    assert sniff_file(path).verdict is Verdict.INCOMPLETE


def test_sniff_file_does_not_follow_symlinks(tmp_path):
    (tmp_path / "real.pdf").write_bytes(PDF)
    (tmp_path / "link.pdf").symlink_to(tmp_path / "real.pdf")
    with pytest.raises(OSError):
        sniff_file(tmp_path / "link.pdf")


def test_sniff_file_on_a_fifo_does_not_block(tmp_path):
    # Given a FIFO with no writer (opening it for reading would normally block)
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    outcome: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["sniff"] = sniff_file(fifo)
        except OSError as exc:
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    # When it is sniffed; Then the call returns (a liveness guard, not a speed check)
    finished = done.wait(30)
    if not finished:  # unblock the reader so the thread can end
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert finished, "sniff_file blocked on a FIFO"
    # And it is never taken for a job
    sniff = outcome.get("sniff")
    assert "error" in outcome or (isinstance(sniff, Sniff) and sniff.verdict is not Verdict.JOB)


# -- readiness ------------------------------------------------------------------------------------
SETTLE, INVALID = 10.0, 300.0
OBS = Observation(size=100, mtime_ns=1_000, ino=7)


def tracked_at(t: float, obs: Observation = OBS) -> Tracked:
    return observe(None, obs, t)


def test_waits_until_settled_then_sniffs():
    # Given a file first seen at t=0
    tracked = tracked_at(0.0)
    # Then it waits until it has been unchanged for `settle` seconds
    assert decide(tracked, 0.0, SETTLE, INVALID) is Action.WAIT
    assert decide(tracked, 9.999, SETTLE, INVALID) is Action.WAIT
    # And is only sniffed once settled
    assert decide(tracked, 10.0, SETTLE, INVALID) is Action.SNIFF


@pytest.mark.parametrize(
    "changed",
    [
        Observation(size=101, mtime_ns=1_000, ino=7),
        Observation(size=100, mtime_ns=1_001, ino=7),
        Observation(size=100, mtime_ns=1_000, ino=8),  # replaced by a rename, same size and time
    ],
    ids=["size", "mtime", "inode"],
)
def test_any_change_restarts_the_settle_clock_and_forgets_the_sniff(changed):
    # Given a file that settled and was sniffed as incomplete
    tracked = tracked_at(0.0)
    tracked = observe(tracked, OBS, 9.0)  # the same observation again keeps the clock
    assert tracked.stable_since == 0.0
    tracked.sniff = Sniff(Verdict.INCOMPLETE, "pdf", ".pdf", "truncated_pdf", "cut")
    # When one of size, mtime or inode changes at t=20
    again = observe(tracked, changed, 20.0)
    # Then the clock starts again and the old sniff is forgotten
    assert again.stable_since == 20.0
    assert again.sniff is None
    assert decide(again, 29.0, SETTLE, INVALID) is Action.WAIT
    assert decide(again, 30.0, SETTLE, INVALID) is Action.SNIFF


def test_unchanged_observation_keeps_the_cached_sniff():
    tracked = tracked_at(0.0)
    tracked.sniff = Sniff(Verdict.JOB, "pdf", ".pdf")
    assert observe(tracked, Observation(100, 1_000, 7), 50.0) is tracked


def test_settled_job_is_claimed():
    tracked = tracked_at(0.0)
    tracked.sniff = Sniff(Verdict.JOB, "pdf", ".pdf")
    assert decide(tracked, 10.0, SETTLE, INVALID) is Action.CLAIM


def test_incomplete_waits_then_is_claimed_failed_after_invalid_timeout():
    # Given a settled file whose bytes say it is incomplete
    tracked = tracked_at(0.0)
    tracked.sniff = Sniff(Verdict.INCOMPLETE, "pdf", ".pdf", "truncated_pdf", "cut")
    # Then it waits for invalid_timeout more seconds
    assert decide(tracked, 10.0, SETTLE, INVALID) is Action.WAIT
    assert decide(tracked, 309.9, SETTLE, INVALID) is Action.WAIT
    # And then is claimed as a failed job
    assert decide(tracked, 310.0, SETTLE, INVALID) is Action.CLAIM_FAILED
    assert decide(tracked, 10_000.0, SETTLE, INVALID) is Action.CLAIM_FAILED


def test_reject_is_claimed_failed_at_once_after_settle():
    tracked = tracked_at(0.0)
    tracked.sniff = Sniff(Verdict.REJECT, error_type="not_a_pdf", message="no")
    assert decide(tracked, 5.0, SETTLE, INVALID) is Action.WAIT  # never before it settled
    assert decide(tracked, 10.0, SETTLE, INVALID) is Action.CLAIM_FAILED


def test_zero_settle_and_zero_timeout():
    tracked = tracked_at(3.0)
    assert decide(tracked, 3.0, 0.0, 0.0) is Action.SNIFF
    tracked.sniff = Sniff(Verdict.INCOMPLETE)
    assert decide(tracked, 3.0, 0.0, 0.0) is Action.CLAIM_FAILED


def test_next_check_in():
    tracked = tracked_at(100.0)
    # Before settling: the rest of the settle time
    assert next_check_in(tracked, 100.0, SETTLE, INVALID) == pytest.approx(10.0)
    assert next_check_in(tracked, 104.0, SETTLE, INVALID) == pytest.approx(6.0)
    # Settled and incomplete: the rest of the invalid timeout
    tracked.sniff = Sniff(Verdict.INCOMPLETE)
    assert next_check_in(tracked, 110.0, SETTLE, INVALID) == pytest.approx(300.0)
    assert next_check_in(tracked, 400.0, SETTLE, INVALID) == pytest.approx(10.0)
    # Past the timeout: now
    assert next_check_in(tracked, 500.0, SETTLE, INVALID) == 0.0


def test_next_check_in_is_when_decide_changes_its_answer():
    # Property: waiting exactly next_check_in seconds turns WAIT into something else
    tracked = tracked_at(0.0)
    now = 3.0
    assert decide(tracked, now, SETTLE, INVALID) is Action.WAIT
    now += next_check_in(tracked, now, SETTLE, INVALID)
    assert decide(tracked, now, SETTLE, INVALID) is Action.SNIFF
    tracked.sniff = Sniff(Verdict.INCOMPLETE)
    assert decide(tracked, now, SETTLE, INVALID) is Action.WAIT
    now += next_check_in(tracked, now, SETTLE, INVALID)
    assert decide(tracked, now, SETTLE, INVALID) is Action.CLAIM_FAILED


def test_pdf_header_after_leading_junk_is_found():
    # PDF readers accept up to 1024 bytes before %PDF-
    assert sniff_bytes(b"\x01" * 500 + PDF, "a.pdf").verdict is Verdict.JOB


# -- what a claim records of the engine ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("engine", "profile", "expected"),
    [
        ("tesseract", {}, {"language": "eng", "dpi": 300}),
        ("tesseract", {"language": "deu", "dpi": 200}, {"language": "deu", "dpi": 200}),
        ("vllm", {}, {"model": "deepseek-ai/DeepSeek-OCR", "mode": "markdown", "dpi": 144}),
        (
            "vllm",
            {"mode": "free", "model": "deepseek-ai/DeepSeek-OCR-2"},
            {"model": "deepseek-ai/DeepSeek-OCR-2", "mode": "free", "dpi": 144},
        ),
        ("text", {"dpi": 200}, {}),
    ],
)
def test_a_claim_records_the_engine_settings_resolved_from_profile_and_engine_section(engine, profile, expected):
    """The settings a job keeps for its whole life: the profile's own, else its engine section's,
    and only those the engine uses (the text engine uses none)."""
    from ocr_watcher.config import Config
    from ocr_watcher.intake.intake import claim_request

    config = Config.model_validate({"profiles": {"books": profile}})
    request = claim_request(config, engine, "books/a.pdf", "books", Sniff(Verdict.JOB, "pdf", ".pdf"))
    assert request.engine_settings == expected


def test_a_file_being_claimed_is_not_handed_out_again_until_its_claim_ends(tmp_path):
    """Claims run on claim threads: until one ends, the file it is moving may still be in the inbox,
    and a scan must not make a second request of it; once it ended and the file is still there (the
    claim failed before moving it), the file is ready again after it settles."""
    from ocr_watcher.config import load_config
    from ocr_watcher.intake.intake import Intake

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    overrides = {"inbox": str(inbox), "outbox": str(tmp_path / "outbox"), "engine": "text"}
    overrides["intake"] = {"settle_seconds": 0.0, "poll_interval_seconds": 0.5, "use_inotify": False}
    intake = Intake(load_config(environ={}, overrides=overrides), lambda profile: "text")
    (inbox / "a.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")

    clock = [0.0]

    def ready_after_two_looks() -> list[str]:  # the first look records it, the second sees it settled
        for _ in range(2):
            clock[0] += 1.0
            intake.refresh(clock[0])
        return [request.inbox_path for request in intake.take(10)]

    assert ready_after_two_looks() == ["a.pdf"]
    assert ready_after_two_looks() == [] and intake.waiting == 0
    intake.settled("a.pdf")
    assert ready_after_two_looks() == ["a.pdf"]
