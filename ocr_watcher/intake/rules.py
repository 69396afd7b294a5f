"""Pure rules for inbox files: what is ignored, which profile a path selects."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import translate


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str]:
    """Case-insensitive globs as one regular expression: one match per name instead of one per
    pattern (the scan tests every name in the inbox, every poll)."""
    globs = [translate(pattern) for pattern in patterns]
    if not globs:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("|".join(f"(?:{glob})" for glob in globs), re.IGNORECASE | re.DOTALL)


def is_ignored_name(name: str, patterns: re.Pattern[str]) -> bool:
    """Case-insensitive glob match of one path component (file or folder name)."""
    return patterns.match(name) is not None


def is_ignored_path(parts: Sequence[str], patterns: re.Pattern[str]) -> bool:
    return any(is_ignored_name(part, patterns) for part in parts)


def profile_for(parts: Sequence[str], profiles: Iterable[str]) -> str:
    """The first folder below the inbox names the profile; anything else is "default"."""
    if len(parts) >= 2 and parts[0] in set(profiles):
        return parts[0]
    return "default"
