"""Every bench script imports: a moved library name breaks the test suite, not the next benchmark run."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_bench_scripts_found():
    """The glob sees the bench folder (so the parametrized test below cannot pass by being empty)."""
    assert len(SCRIPTS) >= 20


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_bench_script_imports(path, monkeypatch):
    """Importing the script (its __main__ block does not run) resolves every difflab name it uses."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert module.__doc__, f"{path.name} has no docstring saying what it measures and how to run it"
    if '__name__ == "__main__"' in path.read_text():  # a runnable bench: its entry point exists
        assert callable(getattr(module, "main", None)), f"{path.name} runs main() but has none"
