"""What a settled file is, from its first and last bytes: a job, not yet complete, or not for us."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

HEAD_BYTES = 1024
TAIL_BYTES = 64 * 1024  # %%EOF is searched this far from the end: junk appended after it is tolerated

SUPPORTED = "ocr-watcher reads PDF, PNG, JPEG and TIFF files"


class Verdict(str, Enum):
    JOB = "job"  # a complete PDF or image
    INCOMPLETE = "incomplete"  # may still be being written: wait, then fail after a time limit
    REJECT = "reject"  # settled and definitely not something we can OCR: a failed job at once


@dataclass(frozen=True)
class Sniff:
    verdict: Verdict
    kind: str | None = None  # "pdf" | "image"
    suffix: str = ""  # suffix for input<suffix> in the job folder
    error_type: str | None = None
    message: str | None = None


_OTHER_TYPES = [
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\xd0\xcf\x11\xe0", "a legacy Microsoft Office document"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%!PS", "a PostScript file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"{\\rtf", "an RTF document"),
]


def classify(head: bytes, tail: bytes, size: int, name: str) -> Sniff:
    """Pure: decide from the bytes (and, for the message, the name)."""
    suffix = Path(name).suffix.lower()
    if size == 0:
        return Sniff(Verdict.INCOMPLETE, error_type="empty_file", message="the file is empty (0 bytes)")
    if b"%PDF-" in head:
        if b"%%EOF" in tail:
            return Sniff(Verdict.JOB, "pdf", ".pdf")
        return Sniff(
            Verdict.INCOMPLETE,
            "pdf",
            ".pdf",
            "truncated_pdf",
            "the PDF has no end-of-file marker (%%EOF): it is truncated or was never completely written",
        )
    image = _classify_image(head, tail)
    if image is not None:
        return image
    if head.strip(b"\0") == b"":
        return Sniff(Verdict.INCOMPLETE, error_type="empty_file", message="the file holds only zero bytes")
    if suffix == ".pdf":
        return Sniff(
            Verdict.REJECT,
            suffix=".pdf",
            error_type="not_a_pdf",
            message="the file is named .pdf but is not a PDF (it does not start with %PDF-)",
        )
    return Sniff(
        Verdict.REJECT,
        suffix=_safe_suffix(suffix),
        error_type="unsupported_type",
        message=f"unsupported file type: {describe(head, suffix)}; {SUPPORTED}",
    )


def _classify_image(head: bytes, tail: bytes) -> Sniff | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if b"IEND" in tail[-64:]:
            return Sniff(Verdict.JOB, "image", ".png")
        return Sniff(Verdict.INCOMPLETE, "image", ".png", "truncated_image", "the PNG image is truncated")
    if head.startswith(b"\xff\xd8\xff"):
        if b"\xff\xd9" in tail[-1024:]:
            return Sniff(Verdict.JOB, "image", ".jpg")
        return Sniff(Verdict.INCOMPLETE, "image", ".jpg", "truncated_image", "the JPEG image is truncated")
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return Sniff(Verdict.JOB, "image", ".tif")
    return None


def describe(head: bytes, suffix: str) -> str:
    for magic, what in _OTHER_TYPES:
        if head.startswith(magic):
            return f"{what} ('{suffix or 'no extension'}')"
    sample = head[:512]
    if sample and all(32 <= b < 127 or b in b"\r\n\t" for b in sample):
        return f"plain text ('{suffix or 'no extension'}')"
    return f"'{suffix}' file" if suffix else "a file without an extension"


def _safe_suffix(suffix: str) -> str:
    return suffix if suffix[1:].isalnum() and len(suffix) <= 10 else ""


def sniff_file(path: Path, name: str | None = None) -> Sniff:
    """Open (which on NFS also revalidates the cache: close-to-open) and read head and tail.
    `name`: the name to judge the file by, when its path does not carry it (an upload).

    O_NONBLOCK so that a FIFO that slipped through can never block the daemon.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Sniff(Verdict.REJECT, error_type="unsupported_type", message="not a regular file")
        size = st.st_size
        head = os.pread(fd, HEAD_BYTES, 0)
        tail_start = max(0, size - TAIL_BYTES)
        tail = os.pread(fd, TAIL_BYTES, tail_start) if size > HEAD_BYTES else head
    finally:
        os.close(fd)
    return classify(head, tail, size, name or path.name)
