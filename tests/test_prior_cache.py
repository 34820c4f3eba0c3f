"""The prior's embedding cache: computed once per (dataset, Clip), written atomically, reused,
read back as √D-scaled points with a fixed held-out split."""

import math

import pytest
import torch
import torch.nn.functional as F

from difflab.core.errors import UsageError
from difflab.data.datasets import load_dataset
from difflab.storage import embedding_cache as cache_mod
from difflab.storage.embedding_cache import embedding_cache
from difflab.training.prior import prior_config

DIGITS = {"name": "digits", "size": 8}


class FakeClip:
    """A fixed random projection of pixels; counts its image calls."""

    dim = 16
    meta = {"text_encoder": "minilm"}

    def __init__(self):
        self.calls = 0
        self.W = torch.randn(64, self.dim, generator=torch.Generator().manual_seed(0))

    def embed_images(self, x):
        self.calls += 1
        return F.normalize(x.flatten(1) @ self.W, dim=-1)  # [B, D]


def test_cache_is_written_once_and_reused(tmp_path):
    clip, path = FakeClip(), tmp_path / "emb.safetensors"
    out = embedding_cache(DIGITS, clip, clip_sha256="abc", path=path, batch_size=500)
    assert out == path and clip.calls == 4  # 1797 images, 500 at a time
    mtime = path.stat().st_mtime_ns
    assert embedding_cache(DIGITS, clip, clip_sha256="abc", path=path) == path
    assert clip.calls == 4 and path.stat().st_mtime_ns == mtime  # reused, not recomputed
    with pytest.raises(UsageError, match="another dataset or Clip; pass a new `cache`"):
        embedding_cache(DIGITS, clip, clip_sha256="other", path=path)
    data = load_dataset({"name": "clip_embeddings", "path": str(path), "split": "all"})
    digits = load_dataset(DIGITS)
    assert data.kind == "points" and data.shape == (16,) and torch.equal(data.labels, digits.labels)
    torch.testing.assert_close(data.x.norm(dim=-1), torch.full((1797,), math.sqrt(16)))  # √D·e
    expected = clip.embed_images(digits.to_model(digits.x[:5]))
    torch.testing.assert_close(data.x[:5] / 4, expected)
    train, test = (load_dataset({"name": "clip_embeddings", "path": str(path), "split": s})
                   for s in ("train", "test"))  # fmt: skip
    assert len(train) + len(test) == 1797 and len(test) == 179
    cfg = prior_config(path, ["train.steps=7"])
    assert cfg.data.dataset["path"] == str(path.resolve()) and cfg.train.steps == 7
    assert cfg.model.cond == {"name": "text", "p_uncond": 0.1, "encoder": "minilm",
                              "dataset": "digits"}  # fmt: skip


def test_cache_is_atomic_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "emb.safetensors"

    def crash(*args, **kwargs):
        open(args[1], "wb").write(b"half a file")  # the temp file, half written
        raise KeyboardInterrupt

    monkeypatch.setattr("difflab.storage.checkpoint.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        embedding_cache(DIGITS, FakeClip(), clip_sha256="abc", path=path)
    assert list(tmp_path.iterdir()) == []  # neither the cache nor its temp file
    monkeypatch.undo()
    clip = FakeClip()
    embedding_cache(DIGITS, clip, clip_sha256="abc", path=path)
    assert clip.calls == 8 and path.is_file()


def test_default_cache_path_is_keyed_by_clip_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    a = embedding_cache(DIGITS, FakeClip(), clip_sha256="abc")
    b = embedding_cache({"name": "digits", "size": 8}, FakeClip(), clip_sha256="abc")
    c = embedding_cache(DIGITS, FakeClip(), clip_sha256="def")
    assert a == b != c and a.parent == tmp_path
    assert cache_mod.cache_key(DIGITS, "abc") in a.name
