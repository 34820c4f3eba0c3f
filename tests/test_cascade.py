"""Cascades (CDM): the shapes chain base → SR is checked, a 2-stage cascade of tiny nets runs end
to end (Python, TOML, CLI), sample i depends on its seed only, and truncation stops the base at
σ = the SR stage's aug level."""

import pytest
import torch
from test_palette import _pipe

from difflab import train
from difflab.cli.main import main
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.inference.cascade import Cascade, load_cascade

NET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
       "attention_resolutions=[]}")  # fmt: skip


def _uncond(shape=(1, 8, 8)):
    from difflab.inference.pipeline import Pipeline
    from difflab.storage.models import build_denoiser

    cfg = load_config("digits", [NET, "sample.steps=2"])
    cfg.model.shape = list(shape)
    torch.manual_seed(1)
    return Pipeline(build_denoiser(cfg.model).eval(), cfg.to_dict())


def _sr(shape=(1, 16, 16), **cond):
    return _pipe({"source": "lowres", **cond}, shape, randomize=True)


def test_chain_shapes_are_checked():
    with pytest.raises(UsageError, match=r"stage 1 makes \[1, 8, 8\] images but stage 2 takes "
                                         r"low-resolution \[1, 16, 16\]"):  # fmt: skip
        Cascade([_uncond(), _sr((1, 32, 32))])
    with pytest.raises(UsageError, match="stage 2 is not a super-resolution model"):
        Cascade([_uncond(), _uncond((1, 16, 16))])
    with pytest.raises(UsageError, match="stage 2 is not a super-resolution model"):
        Cascade([_uncond(), _pipe({"source": "masked"}, (1, 16, 16))])
    with pytest.raises(UsageError, match=r"option\(s\) \['stride'\] unknown"):
        Cascade([_uncond(), _sr()], [{}, {"stride": 2}])
    with pytest.raises(UsageError, match="at least one stage"):
        Cascade([])


def test_two_stage_cascade_runs_and_is_seeded_per_sample():
    cascade = Cascade([_uncond(), _sr(aug_max=0.5)], [{}, {"aug_level": 0.2}])
    outputs = cascade.sample(3, seed=5)
    assert [tuple(x.shape) for x in outputs] == [(3, 1, 8, 8), (3, 1, 16, 16)]
    images = cascade(3, seed=5)
    assert images.dtype == torch.uint8 and images.shape == (3, 1, 16, 16)
    assert torch.equal(cascade(2, seed=5, batch_size=1), images[:2])
    # the SR stage follows its low-res input: a different base sample, a different output
    assert not torch.equal(images[0], images[1])
    calls = []
    cascade.sample(1, seed=0, stages=[{"steps": 3}, {"steps": 2}], callback=calls.append)
    assert [c["stage"] for c in calls] == [0, 0, 0, 1, 1]
    with pytest.raises(UsageError, match="`aug_level` is an option of the SR stages"):
        cascade.sample(1, stages=[{"aug_level": 0.1}])


def test_truncated_cascade_stops_the_base_at_the_aug_level():
    """CDM §3.2 truncated: the base's reverse process ends at σ = s and z_s conditions the SR
    stage as it is (no second noise)."""
    cascade = Cascade([_uncond(), _sr(aug_max=0.5)], [{"steps": 4}, {"aug_level": 0.3}],
                      truncate=True)  # fmt: skip
    grid = cascade._truncated_grid(cascade.stages[0], {"steps": 4}, 0.3)
    assert grid[-1] == 0.3 and torch.all(grid[:-1] > 0.3) and torch.all(grid.diff() < 0)
    seen = []
    cascade.stages[0].sample = _spy(cascade.stages[0].sample, seen)
    outputs = cascade.sample(2, seed=0)
    assert float(seen[0]["sigmas"][-1]) == pytest.approx(0.3)
    assert outputs[-1].shape == (2, 1, 16, 16)
    plain = cascade.sample(2, seed=0, truncate=False)
    assert seen[-1]["sigmas"] is None and not torch.equal(plain[-1], outputs[-1])


def _spy(fn, seen):
    def wrapped(*args, **kwargs):
        seen.append(kwargs)
        return fn(*args, **kwargs)

    return wrapped


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    common = [NET, "train.steps=2", "train.batch_size=8", "train.log_every=1",
              "sample.steps=2"]  # fmt: skip
    train(load_config("digits", common), root / "base")
    train(load_config("digits", [*common, "data.dataset.size=16",
                                 "model.cond={name='image', aug_max=0.4}"]), root / "sr")
    return root


def test_cascade_toml_and_cli(runs, tmp_path, capsys):
    toml = runs / "cascade.toml"
    toml.write_text('truncate = false\n[[stages]]\nmodel = "base"\n'
                    '[[stages]]\nmodel = "sr"\naug_level = 0.1\n')  # fmt: skip
    cascade = load_cascade(toml)
    assert cascade.options == [{}, {"aug_level": 0.1}] and cascade.image_shape == (1, 16, 16)
    assert cascade(2, seed=0).shape == (2, 1, 16, 16)
    out = tmp_path / "s"
    assert main(["sample", str(toml), "--out", str(out), "-n", "2", "--steps", "2", "--quiet",
                 "--aug-level", "0.2"]) == 0  # fmt: skip
    assert (out / "grid.png").is_file() and (out / "stage1.png").is_file()
    assert len(list((out / "images").glob("*.png"))) == 2
    capsys.readouterr()
    # --quiet: on a loaded machine stage 1's progress bar reaches stderr before the error does
    assert main(["sample", str(toml), "--out", str(out), "-n", "1", "--aug-level", "0.9",
                 "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--aug-level" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stages]]\nmodel = "nowhere"\n[[stages]]\n')
    assert main(["sample", str(bad), "--out", str(out), "-n", "1"]) == 2
