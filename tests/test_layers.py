"""Stages import downward only, as docs/contracts.md ("Layers") says, and nothing imports in a
circle: every import in src/kubenetdiag, including those inside functions and under
TYPE_CHECKING, is checked against the table in that document."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src"
PACKAGE = "kubenetdiag"
CONTRACTS = ROOT / "docs" / "contracts.md"


def layer_table() -> list[tuple[str, list[str]]]:
    """[(layer name, module prefixes)] in order, from the marked table in docs/contracts.md."""
    text = CONTRACTS.read_text(encoding="utf-8")
    block = text.split("<!-- layers: begin -->", 1)[1].split("<!-- layers: end -->", 1)[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], re.findall(r"`([\w.]+)`", cells[1])))
    return rows


def module_files() -> dict[str, Path]:
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """Project modules `name` imports, resolved to the most specific module that exists."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else a
            # name defined in pkg itself
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if not target.startswith(PACKAGE):
                continue
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(table):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best_len and (prefix != PACKAGE or module == PACKAGE):
                best, best_len = index, len(prefix)
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_the_table_is_read() -> None:
    names = [name for name, _ in layer_table()]
    assert names[:3] == ["base", "inventory", "probes"]
    assert names[-2:] == ["pipeline", "cli"]


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    table = layer_table()
    unplaced = [m for m in graph if layer_of(m, table) < 0]
    assert not unplaced, "modules in no layer of docs/contracts.md: " + ", ".join(unplaced)


def test_stages_import_downward_only(graph: dict[str, set[str]]) -> None:
    table = layer_table()
    upward = []
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, table)
        if mine < 0:
            continue  # reported by test_every_module_has_a_layer
        for target in sorted(targets):
            theirs = layer_of(target, table)
            if theirs > mine:
                upward.append(f"{module} ({table[mine][0]}) imports {target} "
                              f"({table[theirs][0]})")
    assert not upward, "\n".join(upward)


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_function_local_and_type_checking_imports(tmp_path: Path) -> None:
    # A checker that missed these would pass a tree with the very cycles it is meant to catch.
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kubenetdiag.engine.ruleset import RuleSet\n"
        "def f():\n    from ..reports import view\n    import kubenetdiag.cli\n",
        encoding="utf-8",
    )
    modules = {"kubenetdiag.engine.ruleset", "kubenetdiag.reports", "kubenetdiag.reports.view",
               "kubenetdiag.cli", "kubenetdiag.facts.mod"}
    found = imports_of("kubenetdiag.facts.mod", source, modules)
    assert found == {"kubenetdiag.engine.ruleset", "kubenetdiag.reports.view", "kubenetdiag.cli"}
