"""Can a PDF page's own text layer be used instead of OCR? Decided from the page alone, as a pure
function of its text and how much of it images cover (pipeline/render_worker.py measures both).

A born-digital page's text layer is exact and a hundred times cheaper than OCR. It is not used
where it is missing, where it is not text (a broken font mapping gives replacement and control
characters, or runs of symbols), where it reads as garbage (a poor OCR layer from an old scanner:
words without vowels, capitals in mid-word), or where a scanned image fills the page and the layer
holds too little to be the page's text (a stamp, a file name, a page number over a scan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .text_check import not_text_reason

SCAN_COVER = 0.5  # images over half the page: a scan or a photographed page
SCAN_MIN_CHARS = 300  # ...whose text layer, to be the page's text, holds more than a caption
MAX_GARBLED_SHARE = 0.3  # of the longer lower-case words, those that no Latin-script word looks like
MIN_WORDS_TO_JUDGE = 12

_WORD = re.compile(r"[A-Za-z]{4,}")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
_MID_CAPITAL = re.compile(r"[a-z][A-Z]")


@dataclass(frozen=True)
class Verdict:
    use_text: bool
    reason: str  # why, in words for the page JSON


def garbled_share(text: str) -> float | None:
    """The share of Latin-script words (four letters or more, not all capitals: acronyms have no
    vowels) that have no vowel or a capital in mid-word; None where there are too few to judge."""
    words = [word for word in _WORD.findall(text) if not word.isupper()]
    if len(words) < MIN_WORDS_TO_JUDGE:
        return None
    odd = sum(1 for word in words if not _VOWEL.search(word) or _MID_CAPITAL.search(word))
    return odd / len(words)


def judge_text_layer(text: str, image_cover: float) -> Verdict:
    """`text`: the page's text layer as extracted; `image_cover`: the share of the page's area
    (0 to 1) that images cover."""
    visible = sum(1 for char in text if not char.isspace())
    scanned = image_cover >= SCAN_COVER
    if visible == 0:
        return Verdict(False, "no text layer" + (" (a scanned page)" if scanned else ""))
    if (not_text := not_text_reason(text)) is not None:
        return Verdict(False, f"the text layer is not text: {not_text}")
    share = garbled_share(text)
    if share is not None and share > MAX_GARBLED_SHARE:
        return Verdict(False, f"the text layer reads as garbage ({share:.0%} of its words are not words)")
    if scanned and visible < SCAN_MIN_CHARS:
        return Verdict(False, f"a scanned page whose text layer has only {visible} characters")
    over = f", over images covering {image_cover:.0%} of the page" if scanned else ""
    return Verdict(True, f"its text layer ({visible} characters{over})")
