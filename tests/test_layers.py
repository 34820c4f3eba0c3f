"""The package layering of ARCHITECTURE §2, enforced: imports only point down, and no cycles.

Every import in difflab/ counts, function-level ones too, so a cycle cannot hide behind a lazy
import. Package `__init__` files may import their own submodules (registration, re-exports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "difflab"

# Lower rows may not import higher rows; packages in one row do not import each other.
LAYERS = (
    ("core",),
    ("nets", "samplers", "conditioning", "codecs", "data"),
    ("storage",),
    ("guidance", "training"),
    ("inference",),
    ("evaluation",),
    ("web",),  # the local UI; `difflab serve` (cli) starts it
    ("cli",),
)
RANK = {pkg: i for i, row in enumerate(LAYERS) for pkg in row}
TOP_LEVEL = {"difflab", "difflab.__main__"}  # the public API and `python -m difflab`


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """difflab modules that `path` imports anywhere in its body (a name imported from a package
    counts as that package's submodule when one of that name exists)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("difflab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("difflab"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) & set(known) for name, path in known.items()}


def package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    missing = {package(m) for m in modules() if m not in TOP_LEVEL} - set(RANK)
    assert not missing, f"packages without a layer in LAYERS: {sorted(missing)}"


def test_imports_only_point_down():
    bad = []
    for src, targets in graph().items():
        if src in TOP_LEVEL:
            continue
        for dst in targets:
            a, b = package(src), package(dst)
            if dst == "difflab":
                bad.append(f"{src} -> difflab (the public API is for users, not the library)")
            elif a != b and (RANK[b] > RANK[a] or RANK[b] == RANK[a]):
                bad.append(f"{src} ({a}, layer {RANK[a]}) -> {dst} ({b}, layer {RANK[b]})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    edges = {m: {t for t in ts if t != m} for m, ts in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "edges, cyclic",
    [({"a": {"b"}, "b": {"c"}, "c": set()}, False), ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True)],
)
def test_cycle_finder_finds_cycles(edges, cyclic):
    assert (find_cycle(edges) is not None) == cyclic


def test_the_cli_parser_and_the_public_api_import_no_torch():
    """`difflab --help` and `import difflab` stay cheap: torch loads when a command needs it."""
    import subprocess
    import sys

    code = (
        "import sys, difflab, difflab.cli.main as m; m.build_parser(); "
        "print(sorted(k for k in ('torch', 'numpy') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
