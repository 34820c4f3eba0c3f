"""Latent-diffusion runs carry their codec file, and train from a latent cache."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from test_train import _tiny_cfg

import difflab
import difflab.storage.codecs
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.data.datasets import load_dataset
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import build_codec, file_sha256, save_codec
from difflab.storage.latent_cache import encode_dataset
from difflab.training.loop import train

DIGITS = load_dataset("digits")  # [N, 1, 8, 8]
KL = {"name": "kl", "channels": 1, "factor": 2, "z_channels": 2, "net": {"ch": 8}}


def kl_file(path):
    """A tiny calibrated KL codec file for 8×8 digits (untrained nets: the space is what counts)."""
    torch.manual_seed(0)
    codec = build_codec(KL)
    codec.calibrate([DIGITS.to_model(DIGITS.x[:64])])
    return save_codec(path, codec, KL, (1, 8, 8))


def latent_cfg(codec, *extra):
    return _tiny_cfg(f"model.codec={{ckpt='{codec}'}}", *extra)


def test_a_latent_run_moved_elsewhere_still_loads_and_samples(tmp_path):
    source = kl_file(tmp_path / "ae" / "kl.safetensors")
    run = train(latent_cfg(source, "train.steps=1"), tmp_path / "run")
    copy = tmp_path / "run" / "codec.safetensors"
    assert file_sha256(copy) == file_sha256(source)
    stored = ckpt.load_model_file(run)[1]["model"]["codec"]
    assert stored == {"name": "kl", "ckpt": "codec.safetensors", "sha256": file_sha256(source)}
    assert "ckpt = \"codec.safetensors\"" in (tmp_path / "run" / "config.toml").read_text() or (
        "'codec.safetensors'" in (tmp_path / "run" / "config.toml").read_text())
    expected = difflab.load(run)(2, seed=0)
    shutil.rmtree(tmp_path / "ae")  # the autoencoder the run was trained with is gone ...
    shutil.move(tmp_path / "run", tmp_path / "moved")  # ... and the run moved as a whole
    moved = tmp_path / "moved"
    pipe = difflab.load(moved)
    assert pipe.config["model"]["codec"]["ckpt"] == str((moved / "codec.safetensors").resolve())
    assert torch.equal(pipe(2, seed=0), expected)
    lone = tmp_path / "export"  # one model file with the codec copy beside it also loads
    lone.mkdir()
    shutil.copy(ckpt.latest_checkpoint(moved), lone / "model.safetensors")
    shutil.copy(moved / "codec.safetensors", lone / "codec.safetensors")
    assert torch.equal(difflab.load(lone / "model.safetensors")(2, seed=0), expected)


def test_a_moved_run_resumes_from_its_own_config(tmp_path, monkeypatch):
    source = kl_file(tmp_path / "kl.safetensors")
    straight = train(latent_cfg(source, "train.steps=2"), tmp_path / "a")
    train(latent_cfg(source, "train.steps=1"), tmp_path / "b")
    source.unlink()
    shutil.move(tmp_path / "b", tmp_path / "c")
    monkeypatch.chdir(tmp_path)  # codec.safetensors is not in the working directory
    cfg = load_config(tmp_path / "c" / "config.toml", ["train.steps=2"])
    resumed = train(cfg, tmp_path / "c", resume=True)
    ta, tb = ckpt.load_tensors(straight)[0], ckpt.load_tensors(resumed)[0]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_an_absolute_codec_path_of_an_older_model_file_still_loads_and_is_checked(tmp_path):
    source = kl_file(tmp_path / "kl.safetensors")
    run = train(latent_cfg(source, "train.steps=1"), tmp_path / "run")
    tensors, meta = ckpt.load_tensors(run)
    meta["config"]["model"]["codec"]["ckpt"] = str(source)  # as written before runs kept a copy
    old = tmp_path / "old" / "model.safetensors"
    ckpt.save_model(old, tensors, meta["config"], meta["info"])
    assert torch.equal(difflab.load(old)(2, seed=0), difflab.load(run)(2, seed=0))
    os.utime(source)  # same bytes: fine; other bytes: refused
    save_codec(source, build_codec(KL), KL, (1, 8, 8))
    with pytest.raises(UsageError, match=f"codec file {source} changed since"):
        difflab.load(old)


def test_training_from_a_latent_cache_equals_encoding_on_the_fly(tmp_path):
    """Equal up to float rounding, not bit for bit: conv kernels pick their algorithm by batch
    shape, so an image encoded in the cache's batch of 256 and in a training batch of 8 differs
    by ~1e-6 (measured 2e-6 on unit-variance latents). Adam's first step is lr·sign(g) for most
    weights, so raw weights after one step agree to well within 2·lr."""
    source = kl_file(tmp_path / "kl.safetensors")
    cache = encode_dataset("digits", source, tmp_path / "digits.latents.safetensors")
    codec = difflab.storage.codecs.load_codec_file(source)[0]
    latents = load_dataset({"name": "latents", "path": str(cache)})
    with torch.no_grad():
        per_batch = torch.cat([codec.encode(DIGITS.to_model(DIGITS.x[i : i + 8]))
                               for i in range(0, len(DIGITS), 8)])  # fmt: skip
    torch.testing.assert_close(latents.x, per_batch, rtol=0, atol=1e-5)
    assert torch.equal(latents.labels, DIGITS.labels) and latents.shape == (2, 4, 4)
    on_the_fly = train(latent_cfg(source, "train.steps=1"), tmp_path / "a")
    cached = train(latent_cfg(source, "train.steps=1",
                              f"data.dataset={{name='latents', path='{cache}'}}"),
                   tmp_path / "b")  # fmt: skip
    la, lb = (json.loads((tmp_path / r / "log.jsonl").read_text()) for r in "ab")
    assert la["loss"] == pytest.approx(lb["loss"], rel=1e-5)
    wa, wb = (ckpt.load_tensors(ckpt.state_path(p))[0] for p in (on_the_fly, cached))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=4e-4)
    config = difflab.load(cached).config
    assert config["model"]["shape"] == [1, 8, 8]  # the pixel shape: sampling decodes
    assert config["data"]["dataset"]["name"] == "latents"


def test_a_latent_cache_of_another_codec_is_refused_before_any_file_is_written(tmp_path):
    cache = encode_dataset("digits", kl_file(tmp_path / "kl.safetensors"), tmp_path / "c.st")
    torch.manual_seed(1)
    other = save_codec(tmp_path / "other.safetensors", build_codec(KL), KL, (1, 8, 8))
    data = f"data.dataset={{name='latents', path='{cache}'}}"
    for codec in (f"model.codec={{ckpt='{other}'}}", "model.codec={name='identity'}"):
        with pytest.raises(UsageError, match="latent cache .* was encoded by codec file .*kl"):
            train(_tiny_cfg(codec, data), tmp_path / "run")
        assert not (tmp_path / "run").exists()
    with pytest.raises(UsageError, match="exists; pick a new path or pass `force=True`"):
        encode_dataset("digits", other, cache)
    with pytest.raises(UsageError, match="not a latent cache"):
        load_dataset({"name": "latents", "path": str(other)})


def test_cli_encode_writes_a_cache_and_refuses_to_overwrite(tmp_path, capsys):
    from difflab.cli.main import main

    source = kl_file(tmp_path / "kl.safetensors")
    args = ["encode", "digits", "--codec-ckpt", str(source), "--out", str(tmp_path / "c.st"),
            "--quiet"]  # fmt: skip
    assert main(args) == 0 and load_dataset({"name": "latents", "path": str(tmp_path / "c.st")})
    assert main(args) == 2
    assert "exists; pick a new path or pass --force" in capsys.readouterr().err
