"""The documented JSON Schemas (docs/schema/), and a check of the files a test left behind."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schema"


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check_page_files(root: Path) -> list[str]:
    """What is wrong with each pages/NNNN.json under `root` (empty: all of them validate)."""
    problems: list[str] = []
    check = validator("page.schema.json")
    for folder, _, files in os.walk(root):
        if os.path.basename(folder) != "pages":
            continue
        for name in files:
            if not (name.endswith(".json") and name[:-5].isdigit()):
                continue
            path = Path(folder, name)
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # removed meanwhile, or a test's own broken file: the reader checks say so
            problems.extend(f"{path}: {error.json_path}: {error.message}" for error in check.iter_errors(doc))
    return problems
