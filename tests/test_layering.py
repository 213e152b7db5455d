"""The package's imports run one way: no module reaches itself through its imports, and the inner layers
(``spectral/``, ``models/``) import nothing from the outer ones (``analyses/``, ``cli``, ``report/``).

Every ``import`` and ``from ... import`` of the source counts, those inside functions included: a lazy import
hides a circle from the interpreter, not from the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gan_probe"


def module_name(file: Path, root: Path = PACKAGE) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, read from the syntax trees of every ``.py`` under ``root``
    (``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``)."""
    files = {module_name(f, root): f for f in sorted(root.rglob("*.py"))}
    package = root.name
    graph: dict[str, set[str]] = {}
    for name, file in files.items():
        is_package = file.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        graph[name] = {t for t in targets if t in files and t != name and t.split(".")[0] == package}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def arrows_into(graph: dict[str, set[str]], inner: str, outer: tuple[str, ...]) -> list[str]:
    """The imports from a module of ``inner`` (a subpackage) into one of ``outer``, as "a -> b"."""

    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    return sorted(
        f"{src} -> {dst}"
        for src, dsts in graph.items()
        if within(src, inner)
        for dst in dsts
        if any(within(dst, o) for o in outer)
    )


def test_the_graph_reader_sees_function_level_and_relative_imports(tmp_path):
    """The checks below can fail: a circle made by a lazy import inside a function, and a relative import."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n")
    (pkg / "c.py").write_text("import os\nfrom pkg import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) in (["pkg.a", "pkg.sub.b", "pkg.a"], ["pkg.sub.b", "pkg.a", "pkg.sub.b"])
    assert arrows_into(graph, "pkg.sub", ("pkg.a",)) == ["pkg.sub.b -> pkg.a"]
    (pkg / "sub" / "b.py").write_text("def f():\n    import math\n")
    assert find_cycle(import_graph(pkg)) is None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_models_import_nothing_from_the_outer_layers():
    """Checkpoint reading and the architectures run without the analyses, the CLI or the report writers."""
    outer = ("gan_probe.analyses", "gan_probe.cli", "gan_probe.report")
    assert arrows_into(import_graph(), "gan_probe.models", outer) == []


def test_spectral_imports_nothing_from_cli_or_report():
    assert arrows_into(import_graph(), "gan_probe.spectral", ("gan_probe.cli", "gan_probe.report")) == []


def test_spectral_imports_nothing_from_analyses():
    assert arrows_into(import_graph(), "gan_probe.spectral", ("gan_probe.analyses",)) == []
