"""Configs: defaults ← file ← overrides, TOML round trip, unknown keys and bad numbers rejected."""

import pytest

from difflab.core.config import (
    Config,
    builtin_configs,
    from_dict,
    load_config,
    read_config_file,
    to_toml,
)
from difflab.core.errors import UsageError


def test_builtin_configs_load_and_round_trip_through_toml(tmp_path):
    assert {"digits", "fashion_mnist", "swiss_roll"} <= set(builtin_configs())
    for name in builtin_configs():
        cfg = load_config(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(to_toml(cfg.to_dict()))
        assert load_config(path).to_dict() == cfg.to_dict()


def test_overrides_parse_toml_values_and_replace_specs():
    cfg = load_config("digits", ["train.lr=3e-4", "train.bf16=true", "sample.sampler={name='ddim', eta=0.5}",
                                 "model.net.model_channels=8"])  # fmt: skip
    assert cfg.train.lr == 3e-4 and cfg.train.bf16 is True
    assert cfg.sample.sampler == {"name": "ddim", "eta": 0.5}
    assert cfg.model.net["model_channels"] == 8 and cfg.model.net["name"] == "unet"


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.stepz=3", "unknown config key 'train.stepz'"),
        ("trian.steps=3", "unknown config key 'trian.steps'"),
        ("train.steps", "not of the form"),
        ("train.lr=-1", "train.lr must be a positive"),
        ("train.ema_decay=1.5", "ema_decay must be in"),
        ("train.grad_clip=nan", "grad_clip must be a number >= 0"),
        ("model.net=3", "net must be a table with a name"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(UsageError, match=message):
        load_config("digits", [override])


def test_unknown_file_key_and_bad_toml(tmp_path):
    (tmp_path / "a.toml").write_text("[train]\nsteps = 3\nwarmpu = 2\n")
    with pytest.raises(UsageError, match="unknown config key 'train.warmpu'"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("[train\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        read_config_file(tmp_path / "b.toml")
    with pytest.raises(UsageError, match="unknown config key 'extra'"):
        from_dict({"extra": {}}, Config)


def test_builtin_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    """A folder called `demo` (e.g. an earlier --out) must not hide the built-in `demo` config."""
    from difflab.core.config import BUILTIN_DIR, read_config_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert read_config_file("demo") == read_config_file(BUILTIN_DIR / "demo.toml")
