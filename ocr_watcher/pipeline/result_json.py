"""result.json: every page's JSON in one file (its blocks, lines and words with their boxes, its
source and rotation), for systems that want the geometry of a whole document at once. The pages are
as pages/NNNN.json has them (docs/schema/page.schema.json); a page that failed is listed with its
error (docs/schema/result.schema.json)."""

from __future__ import annotations

from typing import Any

from ..spool.atomic import json_bytes
from ..spool.model import JobMeta
from ..spool.store import JobStore


def job_json(store: JobStore, meta: JobMeta, failed: dict[int, str]) -> bytes:
    total = meta.progress.pages_total or 0
    pages: list[dict[str, Any]] = []
    for page in range(1, total + 1):
        if page in failed:
            pages.append({"page": page, "status": "failed", "error": failed[page]})
        else:
            pages.append(store.read_page_info(meta.job_id, page) or {"page": page, "status": "done"})
    return json_bytes({"job_id": meta.job_id, "source": meta.source.name, "pages_total": total, "pages": pages})
