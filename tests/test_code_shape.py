"""Code a newcomer can read in parts: no module of ocr_watcher/ over 400 lines, no class over 300.
Read from the source with `ast`; the last test shows the check finds an oversized class."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.import_graph import ROOT

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


def oversized(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(root.parent)
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef) and (size := node.end_lineno - node.lineno + 1) > MAX_CLASS_LINES:
                found.append(f"{name}: class {node.name} has {size} lines (limit {MAX_CLASS_LINES})")
    return found


def test_no_module_or_class_is_too_long() -> None:
    found = oversized()
    assert not found, "split these into parts with one job each:\n" + "\n".join(found)


def test_the_check_sees_an_oversized_class_and_module(tmp_path: Path) -> None:
    package = tmp_path / "ocr_watcher"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES))
    (package / "big.py").write_text(f"class Big:\n{body}\n" + "\n" * 100)
    (package / "small.py").write_text("class Small:\n    pass\n")
    assert oversized(package) == [
        f"ocr_watcher/big.py: {MAX_CLASS_LINES + 101} lines (limit {MAX_MODULE_LINES})",
        f"ocr_watcher/big.py: class Big has {MAX_CLASS_LINES + 1} lines (limit {MAX_CLASS_LINES})",
    ]
