"""Errors in the right terms: the library names Python parameters (`images`, `resume=True`), the
CLI maps them to the flags a shell user types (--image, --resume)."""

import argparse
import ast
import re
from pathlib import Path

import pytest

from difflab.cli.errors import COMMANDS, FLAGS, cli_message
from difflab.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parent.parent / "difflab"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                found.add(id(body[0].value))
    return found


def _flag_strings(path: Path) -> list[tuple[int, str, bool]]:
    """(line, text, in a raise statement) of each non-docstring string naming a CLI flag."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    raised = {id(n) for r in ast.walk(tree) if isinstance(r, ast.Raise) for n in ast.walk(r)}
    return [(node.lineno, node.value, id(node) in raised) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and FLAG.search(node.value)]  # fmt: skip


LIBRARY = sorted(p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] != "cli")


def test_the_scan_finds_a_flag_in_a_raise(tmp_path):
    """The walk sees f-string parts inside raise statements, and skips docstrings."""
    code = '"""Use --doc."""\ndef f(x):\n    """--doc too"""\n    raise ValueError(f"{x}: pass --out")\n'
    (tmp_path / "probe.py").write_text(code)
    assert _flag_strings(tmp_path / "probe.py") == [(4, ": pass --out", True)]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_messages_name_no_cli_flags(path):
    """Messages, and the hints and constants they are built from, use library terms: a message
    built away from its raise (a hint constant, a `require(..., hint)` argument) counts too."""
    found = _flag_strings(path)
    assert not found, [f"{path.name}:{line}: {text!r}" for line, text, _ in found]


def _cli_options() -> tuple[set[str], set[str]]:
    """(every option string, every command name) of the difflab parser."""
    options, commands = set(), set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            options.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                commands.update(action.choices)
                parsers.extend(action.choices.values())
    return options, commands


def test_every_mapped_flag_and_command_exists():
    options, commands = _cli_options()
    assert set(FLAGS.values()) <= options, set(FLAGS.values()) - options
    for name, command in COMMANDS.items():
        assert command.split()[1] in commands, command
        assert any(f"def {name}(" in p.read_text() for p in LIBRARY), name


@pytest.mark.parametrize(
    ("library", "cli"),
    [("`images` given but this model takes no image condition; drop `images`",
      "--image given but this model takes no image condition; drop --image"),
     ("`out` runs/x already holds files; pass `resume=True` to continue it",
      "--out runs/x already holds files; pass --resume to continue it"),
     ('use `method="ode"` for this model', "use --method ode for this model"),
     ('add classifier guidance (`guidance="classifier:ckpt=CLF.safetensors"`)',
      "add classifier guidance (--guidance classifier:ckpt=CLF.safetensors)"),
     ("`out` x exists; pass `force=True` to overwrite", "--out x exists; pass --force to overwrite"),
     ("train one with `train_encoder(data, out)`",
      "train one with `difflab train-encoder DATA --out FILE`"),
     ("`unknown` and `ckpt` and `x=1` and `resume=False` stay", None),
     ("pass a class in that range", None)],
)  # fmt: skip
def test_cli_message_maps_parameters_to_flags(library, cli):
    assert cli_message(library) == (cli or library)


def test_cli_prints_library_errors_with_flags(tmp_path, capsys):
    """A UsageError raised deep in the library reaches the shell user in flag terms."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "old.txt").write_text("x")
    assert main(["train", "digits", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {run} already holds files; pass --resume" in err and "`" not in err, err
