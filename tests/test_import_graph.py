"""Dependencies run one way (docs/architecture.md): no import circle in ocr_watcher/, counting every
import (function-local and TYPE_CHECKING ones too), and no import against the direction rules of
tests/import_graph.py. The last tests show that the check fails where it should."""

from __future__ import annotations

from pathlib import Path

from tests import import_graph
from tests.import_graph import PACKAGE, build, circles, describe, wrong_way


def test_there_is_no_import_circle() -> None:
    graph = build()
    found = {", ".join(part): describe(graph, part) for part in circles(graph)}
    assert not found, f"import circles (run `python -m tests.import_graph`): {found}"


def test_imports_run_one_way() -> None:
    found = wrong_way(build())
    assert not found, "imports against the direction rules:\n" + "\n".join(found)


def test_the_graph_sees_the_daemon_and_its_observers() -> None:
    """A parser that silently read nothing would pass the two tests above."""
    graph = build()
    assert f"{PACKAGE}.hooks" in graph[f"{PACKAGE}.service"]
    assert f"{PACKAGE}.sd_notify" in graph[f"{PACKAGE}.engines.vllm_server"]
    assert f"{PACKAGE}.metrics" in graph[f"{PACKAGE}.http"]  # under TYPE_CHECKING: counted
    assert f"{PACKAGE}.api.app" in graph[f"{PACKAGE}.http"]  # inside a function: counted


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / PACKAGE
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_circle_through_type_checking_and_a_function_local_import_is_found(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "a.py": "def f():\n    from . import b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import thing\n",
            "c.py": "from ocr_watcher.a import f\n",
            "d.py": "from . import a\n",  # imports into the circle, is not part of it
        },
    )
    assert circles(build(package)) == [[f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c"]]


def test_wrong_way_imports_are_found(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "service.py": "",
            "cli.py": "from .service import x\n",
            "metrics.py": "from .service import x\n",
            "spool/__init__.py": "",
            "spool/store.py": "from ..config import x\n",
            "engines/__init__.py": "",
            "engines/vllm_server.py": "def f():\n    from ..hooks import Hooks\n",
            "config.py": "",
            "hooks.py": "",
        },
    )
    found = wrong_way(build(package))
    assert [line.split(" (")[0] for line in found] == [
        f"{PACKAGE}.engines.vllm_server -> {PACKAGE}.hooks",
        f"{PACKAGE}.metrics -> {PACKAGE}.service",
        f"{PACKAGE}.spool.store -> {PACKAGE}.config",
    ]


def test_the_rules_name_real_parts() -> None:
    """A rule about a module that was renamed away would guard nothing."""
    modules = set(build())
    rules = [*import_graph.MAY_IMPORT, *import_graph.ONLY_IMPORTED_BY]
    rules += [name for allowed in import_graph.MAY_IMPORT.values() for name in allowed]
    rules += [name for importers in import_graph.ONLY_IMPORTED_BY.values() for name in importers]
    assert [rule for rule in rules if rule not in modules] == []
