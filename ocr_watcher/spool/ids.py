"""Job ids: `{original filename}_{YYYYMMDD}_{HHMMSS}_{8 hex}` (UTC), safe as a folder name."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

MAX_NAME_BYTES = 200  # leaves room for the suffix and for ".tmp-" names within NAME_MAX (255)
_UNSAFE = re.compile(r"[^\w.\-]", re.UNICODE)
JOB_ID_PATTERN = re.compile(r"^(?P<name>.+)_(?P<date>\d{8})_(?P<time>\d{6})_(?P<rand>[0-9a-f]{8})$")


def safe_name(name: str) -> str:
    """Replace what a shell, a share or a URL would trip on; never hidden, never an option."""
    cleaned = _UNSAFE.sub("_", name).strip() or "file"
    if cleaned[0] in ".-":
        cleaned = "_" + cleaned[1:]
    encoded = cleaned.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        cleaned = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    return cleaned


def new_job_id(original_name: str, now: datetime | None = None) -> str:
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{safe_name(original_name)}_{now:%Y%m%d_%H%M%S}_{secrets.token_hex(4)}"


def is_job_id(name: str) -> bool:
    return bool(JOB_ID_PATTERN.match(name)) and not name.startswith(".") and "/" not in name
