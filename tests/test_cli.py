"""The CLI through subprocess: train → sample on a tiny config, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from test_train import TINY_UNET

from difflab.core.pngmeta import read_png_meta


def difflab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "difflab", *args, "--quiet"], capture_output=True,
                          text=True, cwd=cwd, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    r = difflab("train", "digits", "--out", str(run), "--set", TINY_UNET, "--set",
                "train.steps=3", "--set", "train.batch_size=8")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return run


def test_train_then_sample(run_dir, tmp_path):
    r = difflab("sample", str(run_dir), "--out", str(tmp_path / "s"), "-n", "5", "--steps", "3",
                "--sampler", "ddim", "--eta", "0.5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s" / "grid.png").exists()
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 5


def test_dry_run_prints_config_and_params():
    r = difflab("train", "digits", "--out", "unused", "--dry-run")
    assert r.returncode == 0 and "[model]" in r.stdout and "# parameters:" in r.stdout


def test_list_shows_samplers_with_order():
    r = difflab("list", "samplers")
    assert r.returncode == 0 and "heun" in r.stdout and "order=2" in r.stdout


def test_list_shows_every_registry():
    """`difflab list` prints each registry's entries: the objectives, codecs and formats too."""
    from difflab.codecs.base import CODECS
    from difflab.storage.formats import FORMATS
    from difflab.training.objectives import OBJECTIVES

    r = difflab("list")
    assert r.returncode == 0
    sections = {}
    for line in r.stdout.splitlines():
        if not line.startswith(" "):
            current = sections.setdefault(line.rstrip(":"), [])
        else:
            current.append(line.split()[0])
    native = {"objectives": {"denoising", "hybrid"}, "codecs": {"identity"}, "formats": {"difflab-1"}}
    for kind, registry in {"objectives": OBJECTIVES, "codecs": CODECS, "formats": FORMATS}.items():
        # this process may hold test-registered entries too (e.g. test_pipeline's toy codec)
        assert native[kind] <= set(sections[kind]) <= set(registry.names())
    assert "demo" in sections["configs"]


BAD = [
    (["train", "nope.toml", "--out", "x"], "config 'nope.toml' not found"),
    (
        ["train", "digits", "--out", "x", "--set", "train.stepz=3"],
        "unknown config key 'train.stepz'",
    ),
    (["train", "digits", "--out", "x", "--set", "train.lr=nan"], "train.lr must be a positive"),
    (
        ["train", "digits", "--out", "x", "--set", "model.net={name='resnet9'}"],
        "unknown net 'resnet9'",
    ),
    (
        [
            "train",
            "digits",
            "--out",
            "x",
            "--set",
            "data.dataset={name='folder', path='/nonexistent'}",
            "--dry-run",
        ],
        "/nonexistent",
    ),
    (["sample", "RUN", "--out", "o", "--sampler", "nope"], "unknown sampler 'nope'"),
    (["sample", "RUN", "--out", "o", "--steps", "0"], "--steps must be >= 1"),
    (
        ["sample", "RUN", "--out", "o", "--sampler", "euler", "--eta", "0.3"],
        "takes no option 'eta'",
    ),
    (["sample", "FOREIGN", "--out", "o"], "not a difflab checkpoint"),
    (["sample", "EMPTY", "--out", "o"], "not a safetensors file"),
    (["sample", "MISSING", "--out", "o"], "does not exist"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_input_is_one_line_exit_2(args, message, run_dir, tmp_path):
    foreign, empty = tmp_path / "foreign.safetensors", tmp_path / "empty.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    empty.write_bytes(b"")
    subst = {"RUN": str(run_dir), "FOREIGN": str(foreign), "EMPTY": str(empty),
             "MISSING": str(tmp_path / "missing.safetensors")}  # fmt: skip
    r = difflab(*[subst.get(a, a) for a in args], cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_demo_smoke_writes_its_pngs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "difflab", "demo", "--out", str(tmp_path / "demo"),
                        "--seconds", "2"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name in ("samples.png", "trajectory.png", "loss.png", "demo.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    report = json.loads((tmp_path / "demo" / "demo.json").read_text())
    settings = read_png_meta(tmp_path / "demo" / "samples.png")  # the grid carries its settings
    assert settings["step"] == report["steps"] and settings["n"] == 100
    assert settings["sampler"]["name"] == "heun" and len(settings["sha256"]) == 64
    assert 0 < report["steps"] < report["planned_steps"]  # a fixed step count, cut by the budget
    assert "of 2s budget" in r.stderr  # the bar counts time against the budget
    assert f"ran out after {report['steps']} of {report['planned_steps']} steps" in r.stderr
    again = difflab("demo", "--out", str(tmp_path / "demo"), "--seconds", "1")
    assert again.returncode == 0, again.stderr  # a demo dir may be reused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    refused = difflab("demo", "--out", str(tmp_path / "other"), "--seconds", "1")
    assert refused.returncode == 2 and (tmp_path / "other" / "keep.txt").exists()


def test_train_features_ref_stats_eval(run_dir, tmp_path):
    feat, ref = str(tmp_path / "feat.safetensors"), str(tmp_path / "ref.npz")
    assert difflab("train-features", "digits", "--out", feat, "--steps", "20").returncode == 0
    r = difflab("ref-stats", "{name='digits', split='test'}", "--features", feat, "--out", ref)
    assert r.returncode == 0 and "FD-digits reference of 359" in r.stdout, r.stderr
    r = difflab("eval", str(run_dir), "--ref", ref, "--features", feat, "-n", "200",
                "--steps", "2", "--metrics", "fd,kid,pr")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 200 and report["fd_name"] == "FD-digits" and report["fd"] > 0
    plot = tmp_path / "fd.png"
    r = difflab("eval", str(run_dir), "--ref", ref, "--features", feat, "-n", "150",
                "--steps", "1,2", "--metrics", "fd", "--all-checkpoints", "--plot", str(plot))  # fmt: skip
    assert r.returncode == 0 and plot.stat().st_size > 0, r.stderr
    assert [rep["steps"] for rep in json.loads(r.stdout[: r.stdout.rindex("]") + 1])] == [1, 2]
    wrong = difflab("eval", str(run_dir), "--ref", ref, "-n", "10")
    assert wrong.returncode == 2 and "--features" in wrong.stderr
