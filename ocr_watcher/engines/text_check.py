"""Is a model's answer text at all? A broken model, weights or vLLM release answers bytes: broken
UTF-8, control characters, or runs of symbols that no language writes. Such a page is flagged, so
that it is never passed off as a result. Meant to catch garbage, not to judge OCR quality (that is
`ocr-watcher doctor`'s word recall on a page of known text).
"""

from __future__ import annotations

import re
import unicodedata

MIN_CHARS = 24  # shorter answers (a page number, a blank page) are too short to judge
MAX_ODD_SHARE = 0.05  # replacement, control, private-use and unassigned characters
MIN_WORDISH_SHARE = 0.5  # of the non-space characters, those in tokens a language could write
# Text takes three or four characters a token, grounding tags about two; tokens that decode to
# nothing (ids a tokenizer has no text for) make far fewer. Judged from 16 tokens on.
MIN_CHARS_PER_TOKEN = 1.0
MIN_TOKENS = 16

_MARKUP = re.compile(r"<[^>\n]{1,80}>|[#*_`|>\-=\[\]()!]+")  # HTML cells, Markdown marks
_TOKEN = re.compile(r"\S+")


def _odd(char: str) -> bool:
    if char in "\n\t\r":
        return False
    return char == "\ufffd" or unicodedata.category(char) in ("Cc", "Co", "Cn", "Cs")


def _wordish(token: str) -> bool:
    """A word, a number, or a word with punctuation at its ends: letters or digits with at most a
    third of the token anything else."""
    core = sum(1 for char in token if char.isalnum())
    return core > 0 and core * 3 >= len(token) * 2


def not_text_reason(markdown: str, raw: str | None = None, tokens: int = 0) -> str | None:
    """Why this answer is not text, or None when it reads as text (or is too short to tell).
    `raw`: the model's answer as it came (tags and all), `tokens`: how many tokens it took."""
    if raw is not None and tokens >= MIN_TOKENS and len(raw.strip()) < MIN_CHARS_PER_TOKEN * tokens:
        return f"{tokens} tokens came back as {len(raw.strip())} characters"
    text = _MARKUP.sub(" ", markdown)
    chars = [char for char in text if not char.isspace()]
    if len(chars) < MIN_CHARS:
        return None
    odd = sum(1 for char in chars if _odd(char))
    if odd > MAX_ODD_SHARE * len(chars):
        return f"{odd} of {len(chars)} characters are broken or control characters"
    tokens = _TOKEN.findall(text)
    wordish = sum(len(token) for token in tokens if _wordish(token))
    if wordish < MIN_WORDISH_SHARE * len(chars):
        return f"only {wordish} of {len(chars)} characters form words or numbers"
    return None
