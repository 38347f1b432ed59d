"""The layout's rules, checked on the sources: no import cycle in Rust or in Python, the
engine never reaches into the boundary layer, and the Rust module imports nothing from
the Python package (see docs/internals.md, "Layers")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
PKG = REPO / "python" / "honeytrace"


# -- a graph and its cycles --------------------------------------------------------------


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# -- Rust --------------------------------------------------------------------------------


def rust_modules() -> dict[str, Path]:
    mods = {}
    for f in SRC.rglob("*.rs"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        mods["::".join(parts)] = f
    return mods


def expand_use(tree: str) -> list[str]:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0].strip()]
    prefix = tree[:brace]
    inner = tree[brace + 1 : tree.rfind("}")]
    items, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    out = []
    for item in items:
        if item.strip():
            out.extend(prefix + p for p in expand_use(item))
    return out


def rust_references(module: str, text: str) -> set[str]:
    """Absolute paths (`engine::diag::count`) this module refers to."""
    text = re.sub(r"//[^\n]*", "", text)
    paths: list[str] = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use(m.group(1)))
    paths.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", text))
    parent = module.split("::")[:-1]
    out = set()
    for p in paths:
        p = p.replace(" ", "")
        if p.startswith("crate::"):
            out.add(p[len("crate::") :])
        elif p.startswith("super::"):
            out.add("::".join([*parent, p[len("super::") :]]).strip(":"))
    return out


def rust_graph() -> dict[str, set[str]]:
    mods = rust_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for ref in rust_references(m, f.read_text(encoding="utf-8")):
            parts = ref.split("::")
            # The longest module the path names (the rest is an item inside it).
            target = next(
                (
                    "::".join(parts[:n])
                    for n in range(len(parts), 0, -1)
                    if "::".join(parts[:n]) in mods
                ),
                None,
            )
            if target is not None and target != m and not m.startswith(target + "::"):
                graph[m].add(target)
    return graph


def test_rust_reference_parser() -> None:
    refs = rust_references(
        "py::span", "use crate::engine::{diag::{self, COUNTERS}, keys};\nuse super::bridge::x;"
    )
    assert {"engine::diag::self", "engine::diag::COUNTERS", "engine::keys", "py::bridge::x"} <= refs


def test_rust_modules_have_no_import_cycle() -> None:
    graph = rust_graph()
    assert len(graph) > 30
    assert cycles(graph) == []


def test_the_engine_does_not_know_the_boundary_layer_or_pyo3() -> None:
    graph = rust_graph()
    engine = [m for m in graph if m.startswith("engine")]
    assert engine
    for m in engine:
        assert not any(t.startswith("py") for t in graph[m]), (m, graph[m])
        text = rust_modules()[m].read_text(encoding="utf-8")
        assert "pyo3" not in text, f"{m} uses pyo3"


def test_the_rust_module_imports_nothing_from_the_python_package() -> None:
    for f in SRC.rglob("*.rs"):
        for m in re.finditer(r'import\((?:intern!\(py, )?"(honeytrace[\w.]*)"', f.read_text()):
            assert m.group(1) == "honeytrace._core", f"{f}: imports {m.group(1)}"


# -- Python ------------------------------------------------------------------------------


def python_modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = ["honeytrace", *f.relative_to(PKG).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    # The engine: a leaf (it imports nothing from the package; checked above).
    mods["honeytrace._core"] = PKG / "_core.pyi"
    return mods


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def python_imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules `module` imports, anywhere (functions included), except under
    `if TYPE_CHECKING:`."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    out: set[str] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for n in child.orelse:
                    walk(n)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    pkg = base[: len(base) - (child.level - 1)]
                    target = ".".join([*pkg, child.module] if child.module else pkg)
                else:
                    target = child.module or ""
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    # `from . import _core` imports a module, not the package.
                    out.add(sub if sub in mods else target)
            walk(child)

    walk(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in out if m in mods and m != module}


def test_python_modules_have_no_import_cycle() -> None:
    mods = python_modules()
    graph = {
        m: set() if m == "honeytrace._core" else python_imports(m, f, mods) for m, f in mods.items()
    }
    # The package's __init__ imports its modules; a module importing the package
    # would make a cycle of its own, which this also catches.
    assert graph["honeytrace"]
    assert cycles(graph) == []
