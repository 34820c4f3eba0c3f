"""The prior through the one training loop (resumable) and the CLI: `train_prior` on a Clip's
cached embeddings, `difflab train-prior` with a noise-aware encoder as the Clip."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from difflab.conditioning.text_encoder import load_text_encoder
from difflab.core.errors import UsageError
from difflab.data.datasets import load_dataset
from difflab.evaluation.prior import prior_cosine
from difflab.inference.pipeline import load
from difflab.storage import checkpoint as ckpt
from difflab.training.prior import train_prior

TINY = ["train.batch_size=32", "model.net.width=32", "model.net.depth=1", "train.log_every=1"]


class MiniClip:
    """A random projection of pixels into MiniLM's 384-d text space; texts by MiniLM itself."""

    dim, meta = 384, {"text_encoder": "minilm"}
    W = torch.randn(64, 384, generator=torch.Generator().manual_seed(0))

    def embed_images(self, x):
        return F.normalize(x.flatten(1) @ self.W, dim=-1)  # [B, 384]

    def embed_texts(self, prompts):
        return load_text_encoder("minilm").encode(list(prompts))["pooled"]


def test_train_prior_runs_the_loop_resumes_and_samples_unit_embeddings(tmp_path):
    cache, out = tmp_path / "emb.safetensors", tmp_path / "run"
    path = train_prior("digits", MiniClip(), out, clip_sha256="x", cache=cache,
                       overrides=[*TINY, "train.steps=3"])  # fmt: skip
    assert path.name == "step-0000003.safetensors"
    path = train_prior("digits", MiniClip(), out, clip_sha256="x", cache=cache,
                       overrides=[*TINY, "train.steps=5"], resume=True)  # fmt: skip
    assert path.name == "step-0000005.safetensors"
    config = ckpt.read_metadata(path)["config"]
    assert config["model"]["parameterization"] == "x0" and config["model"]["shape"] == [384]
    assert config["model"]["cond"]["dataset"] == "digits"  # digits' caption templates
    held_out = load_dataset({"name": "clip_embeddings", "path": str(cache), "split": "test"})
    scores = prior_cosine(load(path), held_out, n=6, steps=4)
    assert scores["n"] == 6 and -1 <= scores["prior"] <= 1 and -1 <= scores["baseline"] <= 1


def test_a_clip_whose_texts_are_not_its_text_encoder_is_refused(tmp_path):
    class Other(MiniClip):
        def embed_texts(self, prompts):
            return -super().embed_texts(prompts)

    with pytest.raises(UsageError, match="not the pooled vectors of its text encoder 'minilm'"):
        train_prior("digits", Other(), tmp_path / "run", clip_sha256="x",
                    cache=tmp_path / "emb.safetensors")  # fmt: skip


def test_cli_train_prior_refuses_a_file_that_is_no_clip(tmp_path):
    model = tmp_path / "m.safetensors"
    ckpt.save_tensors(model, {"w": torch.zeros(1)}, {"kind": "classifier"})
    r = subprocess.run([sys.executable, "-m", "difflab", "train-prior", "digits", "--clip",
                        str(model), "--out", str(tmp_path / "run"), "--quiet"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("difflab: error: "), r.stderr
    assert "not a Clip; train one with" in r.stderr and "difflab train-encoder" in r.stderr
