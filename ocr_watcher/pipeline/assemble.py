"""result.md, result_metadata.json and result.txt from the page files, once every page is settled."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..engines.plain_text import pages_to_text
from ..spool.model import JobMeta, iso, utc_now
from ..spool.store import JobStore
from .repeats import find_repeats, without_repeats


class Assembled(NamedTuple):
    markdown: str  # result.md
    meta: dict[str, Any]  # result_metadata.json
    text: str | None  # result.txt, where it was asked for


class PageMissing(FileNotFoundError):
    """A page counted as done has no Markdown file (someone removed it): it must be done again."""

    def __init__(self, job_id: str, page: int) -> None:
        super().__init__(f"page {page} of {job_id} is missing")
        self.page = page


def page_separator(page: int, total: int) -> str:
    """A rule that renders visibly, plus a comment that scripts can split on."""
    return f"<!-- page {page} of {total} -->"


def join_pages(pages: list[tuple[int, str | None, str | None]], total: int) -> str:
    """Pure: [(page, markdown or None, failure or None)] -> one Markdown document."""
    parts: list[str] = []
    for page, markdown, failure in pages:
        if parts:
            parts.append("\n\n---\n\n")
        parts.append(page_separator(page, total) + "\n\n")
        if failure is not None:
            parts.append(f"> **Page {page} could not be read:** {failure}\n")
        else:
            parts.append((markdown or "").strip() + "\n")
    return "".join(parts)


def assemble_result(store: JobStore, meta: JobMeta, failed: dict[int, str], *, text: bool = False) -> Assembled:
    total = meta.progress.pages_total or 0
    pages: list[tuple[int, str | None, str | None]] = []
    infos: list[dict[str, Any]] = []
    warnings: list[str] = []
    for page in range(1, total + 1):
        if page in failed:
            pages.append((page, None, failed[page]))
            infos.append({"page": page, "status": "failed", "error": failed[page]})
            warnings.append(f"page {page}: {failed[page]}")
            continue
        markdown = store.read_page(meta.job_id, page)
        if markdown is None:
            raise PageMissing(meta.job_id, page)
        # Figure links are written relative to pages/NNNN.md; result.md sits one folder up.
        pages.append((page, markdown.replace("](../images/", "](images/"), None))
        info = store.read_page_info(meta.job_id, page) or {"page": page, "status": "done"}
        info.pop("blocks", None)  # where the words are stays in the page files: it would make this file huge
        infos.append(info)
        warnings.extend(f"page {page}: {w}" for w in info.get("warnings", []))
    # Running headers, footers and page numbers stay in the page files, not in result.md.
    repeats = find_repeats({page: markdown for page, markdown, _ in pages if markdown is not None})
    if repeats:
        pages = [(page, md if md is None else without_repeats(md, repeats), why) for page, md, why in pages]
    engines = sorted({i["engine"] for i in infos if i.get("engine")})
    models = sorted({i["model"] for i in infos if i.get("model")})
    result_meta = {
        "job_id": meta.job_id,
        "source": meta.source.model_dump(mode="json", exclude={"mtime_ns"}),  # bookkeeping, not a result
        "engine": engines[0] if len(engines) == 1 else (engines or None),
        "model": models[0] if len(models) == 1 else (models or None),
        "pages_total": total,
        "pages_done": total - len(failed),
        "pages_failed": len(failed),
        "attempts": meta.attempts,
        "created_at": iso(meta.created_at),
        "started_at": iso(meta.started_at),
        "finished_at": iso(utc_now()),
        "seconds_engine_total": round(sum(i.get("seconds_engine", 0.0) for i in infos), 3),
        "warnings": warnings,
        # Left out of result.md: [{"text": as on its first page, "pages": where it repeats}]
        "running_headers_footers": [{"text": r.text, "pages": list(r.pages)} for r in repeats.values()],
        "pages": infos,
    }
    plain = pages_to_text([markdown for _, markdown, _ in pages]) if text else None
    return Assembled(join_pages(pages, total), result_meta, plain)
