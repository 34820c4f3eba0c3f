"""Frozen text encoders: MiniLM loads offline with the network blocked, its pooled vectors carry
the class, masking makes encodings batch-invariant; CLIP / T5 load from local directories only."""

import os
import subprocess
import sys

import pytest
import torch

from difflab.conditioning.captions import captions
from difflab.conditioning.text_encoder import load_text_encoder
from difflab.core.errors import UsageError
from difflab.data.datasets import FASHION_MNIST_CLASSES

OFFLINE_SCRIPT = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from difflab.conditioning.text_encoder import load_text_encoder
enc = load_text_encoder("minilm")
out = enc.encode(["a photo of a sneaker", "a handwritten seven"])
print(enc.name, enc.dim, enc.max_length, tuple(out["tokens"].shape), tuple(out["pooled"].shape))
"""


def test_minilm_loads_and_encodes_with_the_network_blocked():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"  # any request would fail
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["minilm", "384", "32", "(2,", "32,", "384)", "(2,", "384)"]


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def test_encoding_shapes_mask_and_unit_norm(minilm):
    out = minilm.encode(["a bag", "a photo of an ankle boot on a white background"])
    assert out["tokens"].shape == (2, minilm.max_length, minilm.dim)
    assert out["tokens_mask"].dtype == torch.bool and out["tokens_mask"][:, 0].all()
    assert out["tokens_mask"][0].sum() < out["tokens_mask"][1].sum()  # shorter prompt, fewer tokens
    assert not out["tokens"][~out["tokens_mask"]].any()  # padding states zeroed
    torch.testing.assert_close(out["pooled"].norm(dim=-1), torch.ones(2))
    assert not any(p.requires_grad for p in minilm.model.parameters()) and not minilm.model.training
    assert load_text_encoder("minilm") is minilm  # cached per process


def test_padding_does_not_change_an_encoding(minilm):
    """The mask keeps padding out: a prompt encodes the same alone and next to a longer one."""
    alone = minilm.encode(["a dress"])
    batch = minilm.encode(["a dress", "a picture of a pair of trousers folded on a chair"])
    torch.testing.assert_close(batch["pooled"][:1], alone["pooled"], atol=1e-5, rtol=0)
    mask = alone["tokens_mask"][0]
    torch.testing.assert_close(
        batch["tokens"][0, mask], alone["tokens"][0, mask], atol=1e-5, rtol=0
    )


def test_pooled_vectors_carry_the_class(minilm):
    """Each Fashion-MNIST caption is closer to the same class under every other template than to
    any other class under that template (a real check that the encoder embeds meaning)."""
    table = captions("fashion_mnist", list(FASHION_MNIST_CLASSES))  # [K][T]
    pooled = [minilm.encode([c[t] for c in table])["pooled"] for t in range(len(table[0]))]
    for a, ea in enumerate(pooled):
        for b, eb in enumerate(pooled):
            if a != b:
                sim = ea @ eb.T  # [K, K] cosine similarities
                assert (sim.argmax(1) == torch.arange(len(table))).all(), (a, b, sim.argmax(1))


def _save_tiny(kind: str, path):
    """A tiny randomly initialised CLIP / T5 text model next to MiniLM's tokenizer (no downloads)."""
    import transformers

    tokenizer = load_text_encoder("minilm").tokenizer
    vocab = len(tokenizer)
    if kind == "clip":
        config = transformers.CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2,
                                             max_position_embeddings=77)  # fmt: skip
        model = transformers.CLIPTextModel(config)
    else:
        config = transformers.T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                       num_heads=2)  # fmt: skip
        model = transformers.T5EncoderModel(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_clip_and_t5_text_models_load_from_a_local_directory(kind, tmp_path):
    _save_tiny(kind, tmp_path / kind)
    enc = load_text_encoder(f"{kind}:{tmp_path / kind}")
    out = enc.encode(["a sneaker", "a photo of a bag"])
    assert enc.dim == 16 and out["tokens"].shape == (2, enc.max_length, 16)
    torch.testing.assert_close(out["pooled"].norm(dim=-1), torch.ones(2))
    assert not any(p.requires_grad for p in enc.model.parameters())


@pytest.mark.parametrize(
    ("name", "message"),
    [("clip:/nonexistent/dir", "no config.json"), ("t5:", "unknown text encoder"),
     ("bert", "unknown text encoder")],
)  # fmt: skip
def test_missing_or_unknown_encoders_are_usage_errors(name, message):
    with pytest.raises(UsageError, match=message):
        load_text_encoder(name)
