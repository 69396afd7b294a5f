"""The documented JSON Schemas (docs/schema/), and a check of the files a test left behind: every
pages/NNNN.json against page.schema.json, every result.json against result.schema.json."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schema"


@cache
def validator(name: str) -> Draft202012Validator:
    """The schema `name`, with the others it refers to (by their $id)."""
    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry = Registry().with_resources(resources)
    return Draft202012Validator(json.loads((SCHEMAS / name).read_text()), registry=registry)


def _schema_of(folder: str, name: str) -> str | None:
    if os.path.basename(folder) == "pages" and name.endswith(".json") and name[:-5].isdigit():
        return "page.schema.json"
    return "result.schema.json" if name == "result.json" else None


def check_page_files(root: Path) -> list[str]:
    """What is wrong with each page or result JSON under `root` (empty: all of them validate)."""
    problems: list[str] = []
    for folder, _, files in os.walk(root):
        for name in files:
            schema = _schema_of(folder, name)
            if schema is None:
                continue
            path = Path(folder, name)
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # removed meanwhile, or a test's own broken file: the reader checks say so
            problems.extend(f"{path}: {e.json_path}: {e.message}" for e in validator(schema).iter_errors(doc))
    return problems
