"""The import graph of `ocr_watcher/`, read from the source with `ast`: every import counts, at module
level, inside functions and under `if TYPE_CHECKING:`, because a reader follows each of them the same.

The direction rules (docs/architecture.md) are data here, `MAY_IMPORT` and `ONLY_IMPORTED_BY`;
tests/test_import_graph.py fails on a circle or a wrong-way import. `python -m tests.import_graph`
prints both, with the line of each import.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "ocr_watcher"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first such import}

# What a part may import of ocr_watcher besides itself (module names or packages). Parts not listed
# may import what they need, within ONLY_IMPORTED_BY and without circles. The package's own
# __init__ (the version) is open to all.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    # The systemd socket client stands alone: the notify hook and the vLLM supervisor share it.
    f"{PACKAGE}.sd_notify": (),
    # The framed child process stands alone: render workers and OCR workers are built on it.
    f"{PACKAGE}.child": (),
    # The folder protocol knows nothing of OCR, observers or the daemon.
    f"{PACKAGE}.spool": (),
    # Engines know their settings and nothing of the daemon that drives them.
    f"{PACKAGE}.engines": (f"{PACKAGE}.config", f"{PACKAGE}.sd_notify", f"{PACKAGE}.child"),
    f"{PACKAGE}.intake": (f"{PACKAGE}.config", f"{PACKAGE}.spool", f"{PACKAGE}.engines.registry"),
    f"{PACKAGE}.pipeline": (
        f"{PACKAGE}.spool",
        f"{PACKAGE}.engines.base",
        f"{PACKAGE}.engines.text_trust",  # whether a page's text layer is used (pure)
        f"{PACKAGE}.engines.text_check",
        f"{PACKAGE}.engines.geometry",  # boxes in pixels and points (pure)
        f"{PACKAGE}.engines.plain_text",  # result.txt from Markdown (pure)
        f"{PACKAGE}.child",
    ),
    # What observers are handed, and the hook interface: plain values, no observer, no service.
    f"{PACKAGE}.observe": (
        f"{PACKAGE}.config",
        f"{PACKAGE}.spool",
        f"{PACKAGE}.engines.base",
        f"{PACKAGE}.intake.sniff",
        f"{PACKAGE}.pipeline.scheduler",
    ),
    f"{PACKAGE}.hooks": (f"{PACKAGE}.observe", f"{PACKAGE}.spool"),
    # Webhooks and commands: an observer like the others, with the job store it is lent.
    f"{PACKAGE}.deliveries": (
        f"{PACKAGE}.config",
        f"{PACKAGE}.hooks",
        f"{PACKAGE}.observe",
        f"{PACKAGE}.spool",
        f"{PACKAGE}.log_setup",
    ),
    # Estimates: an observer too; its readers (published) serve the job API and the CLI.
    f"{PACKAGE}.eta": (
        f"{PACKAGE}.config",
        f"{PACKAGE}.hooks",
        f"{PACKAGE}.observe",
        f"{PACKAGE}.spool",
        f"{PACKAGE}.pipeline.scheduler",
    ),
}
# Modules only these may import: the daemon and its wiring sit at the top, under the CLI alone.
ONLY_IMPORTED_BY: dict[str, tuple[str, ...]] = {
    f"{PACKAGE}.service": (f"{PACKAGE}.cli",),
    f"{PACKAGE}.wiring": (f"{PACKAGE}.cli",),
    # The daemon's parts (the job owner, its decisions, the outbox scan, the engines) serve it alone.
    f"{PACKAGE}.daemon": (f"{PACKAGE}.service", f"{PACKAGE}.daemon"),
    f"{PACKAGE}.cli": (),
    # The observers are chosen by wiring; the service knows only the Hooks interface.
    f"{PACKAGE}.metrics": (f"{PACKAGE}.wiring", f"{PACKAGE}.http"),
    f"{PACKAGE}.notify": (f"{PACKAGE}.wiring",),
    f"{PACKAGE}.retention": (f"{PACKAGE}.wiring", f"{PACKAGE}.metrics", f"{PACKAGE}.cli"),  # cli: purge
    f"{PACKAGE}.http": (f"{PACKAGE}.wiring",),
    f"{PACKAGE}.deliveries": (f"{PACKAGE}.wiring",),
    f"{PACKAGE}.eta.daemon_hooks": (f"{PACKAGE}.wiring",),
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name `from <...> import` refers to."""
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(tree: ast.AST, current: str, is_package: bool, modules: set[str]) -> Iterable[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(current, is_package, node)
            for alias in node.names:
                # `from pkg import mod` imports the submodule where there is one, else a name of pkg
                sub = f"{source}.{alias.name}"
                yield (sub if sub in modules else source), node.lineno


def build(root: Path = ROOT) -> Graph:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: Graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: dict[str, int] = {}
        for target, line in _targets(tree, name, path.name == "__init__.py", modules):
            # `import ocr_watcher.a.b` where only ocr_watcher.a is a module: count the module
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected parts with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(graph: Graph, part: list[str]) -> list[str]:
    """Every import inside one circle, as `a -> b (line n)`."""
    members = set(part)
    return [
        f"{src} -> {dst} (line {line})" for src in part for dst, line in sorted(graph[src].items()) if dst in members
    ]


def _within(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def wrong_way(graph: Graph) -> list[str]:
    """Every import that breaks MAY_IMPORT or ONLY_IMPORTED_BY, as `a -> b (line n): why`."""
    found = []
    for src, edges in sorted(graph.items()):
        for dst, line in sorted(edges.items()):
            for part, allowed in MAY_IMPORT.items():
                open_to_all = dst == PACKAGE or _within(dst, part)
                if _within(src, part) and not open_to_all and not any(_within(dst, a) for a in allowed):
                    found.append(f"{src} -> {dst} (line {line}): {part} may import only {allowed or 'nothing'}")
            for target, importers in ONLY_IMPORTED_BY.items():
                inside = _within(src, target)  # a package's own modules import each other freely
                if _within(dst, target) and not inside and not any(_within(src, i) for i in importers):
                    found.append(f"{src} -> {dst} (line {line}): only {importers or 'nothing'} may import {target}")
    return found


if __name__ == "__main__":
    g = build()
    for part in circles(g):
        print(f"circle of {len(part)}: {', '.join(part)}")
        for line in describe(g, part):
            print("   ", line)
    for line in wrong_way(g):
        print("wrong way:", line)
