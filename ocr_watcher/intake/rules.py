"""Pure rules for inbox files: what is ignored, which profile a path selects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase


def compile_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    return tuple(p.casefold() for p in patterns)


def is_ignored_name(name: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive glob match of one path component (file or folder name)."""
    folded = name.casefold()
    return any(fnmatchcase(folded, pattern) for pattern in patterns)


def is_ignored_path(parts: Sequence[str], patterns: Sequence[str]) -> bool:
    return any(is_ignored_name(part, patterns) for part in parts)


def profile_for(parts: Sequence[str], profiles: Iterable[str]) -> str:
    """The first folder below the inbox names the profile; anything else is "default"."""
    if len(parts) >= 2 and parts[0] in set(profiles):
        return parts[0]
    return "default"
