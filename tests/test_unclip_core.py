"""unCLIP's pieces without training: slerp and text diffs on the sphere, the Clip's unit
embeddings, retrieval over golden numbers, the embedding conditioner's slots (vector + extra
tokens + mask) through a U-Net, and CFG dropout under a fixed seed."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_clip

from difflab.conditioning import CONDITIONERS
from difflab.conditioning.base import drop
from difflab.conditioning.embedding import embedding_tokens
from difflab.core.errors import UsageError
from difflab.core.spherical import slerp, text_diff, text_diff_direction
from difflab.nets.base import NETS
from difflab.storage.clip import load_clip
from difflab.training.clip import retrieval

D = 384


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_slerp_hits_its_ends_keeps_the_norm_and_moves_at_constant_angular_speed():
    a, b = _unit(D), _unit(D, seed=1)
    t = torch.linspace(0, 1, 9)
    path = slerp(a, b, t)  # [9, D]
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(9))
    theta = math.acos(float(a @ b))
    torch.testing.assert_close(path @ a, torch.cos(t * theta), atol=1e-5, rtol=0)


def test_text_diff_starts_at_the_image_and_turns_toward_the_normalised_difference():
    z_i, z_t0, z_t = _unit(D), _unit(D, seed=1), _unit(D, seed=2)
    z_d = F.normalize(z_t - z_t0, dim=-1)
    torch.testing.assert_close(text_diff_direction(z_t0, z_t), z_d)
    path = text_diff(z_i, z_t0, z_t, torch.tensor([0.0, 0.25, 0.5, 1.0]))  # [4, D]
    torch.testing.assert_close(path[0], z_i)
    torch.testing.assert_close(path[-1], z_d)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(4))
    assert (path @ z_d).diff().gt(0).all()  # ever closer to the text diff
    with pytest.raises(UsageError, match="give different `source` and `target`"):
        text_diff_direction(z_t, z_t)


def test_clip_embeddings_are_unit_vectors_of_its_width():
    clip = load_clip(tiny_clip(shape=(1, 8, 8)))
    assert clip.dim == D and clip.meta["clip_sigma"] == 0.002 and clip.shape == (1, 8, 8)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    zi = clip.embed_images(x)
    torch.testing.assert_close(zi.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(clip.embed_images(((x + 1) * 127.5).round().to(torch.uint8)), zi,
                               atol=2e-2, rtol=0)  # uint8 = the same pixels, rounded  # fmt: skip
    assert clip.embed_images(torch.rand(2, 1, 16, 16)).shape == (2, D)  # resized, as CLIP does
    zt = clip.embed_texts(["a handwritten two", "the digit zero"])
    torch.testing.assert_close(zt.norm(dim=-1), torch.ones(2))
    with pytest.raises(UsageError, match="is a noise-aware"):
        load_clip_of_other_kind()


def load_clip_of_other_kind():
    """A noise-aware encoder file is not a clip: UsageError naming both kinds."""
    import tempfile
    from pathlib import Path

    from difflab.nets.noise_aware import NoiseAwareEncoder
    from difflab.storage.noise_aware import save_net

    clip = load_clip(tiny_clip(shape=(1, 8, 8)))
    path = Path(tempfile.mkdtemp()) / "enc.safetensors"
    save_net(path, NoiseAwareEncoder(clip.encoder.net, clip.meta))
    load_clip(path)


def test_retrieval_over_golden_numbers():
    classes = torch.eye(4)  # [K, D] caption embeddings of 4 classes
    labels = torch.tensor([0, 1, 2, 2])
    image = torch.stack([classes[0], classes[1], classes[3], 0.6 * classes[2] + 0.8 * classes[1]])
    # class 3 is absent from labels: 3 candidates; image 2 ranks none of 0, 1, 2 above the rest
    # (all tie at 0 → rank 0, a hit); image 3 ranks class 1 (0.8) above its own class 2 (0.6)
    r = retrieval(image, labels, classes, ks=(1, 2))
    assert r == {"candidates": 3, "top1": 0.75, "chance_top1": 1 / 3, "top2": 1.0,
                 "chance_top2": 2 / 3}  # fmt: skip


def _conditioner(extra_tokens=4, p_uncond=0.1):
    clip = str(tiny_clip(shape=(1, 8, 8)))
    return CONDITIONERS.build({"name": "embedding", "clip": clip, "extra_tokens": extra_tokens,
                               "p_uncond": p_uncond})  # fmt: skip


def test_embeddings_are_normalised_and_each_extra_token_gets_its_own_projection():
    cond = _conditioner().from_embeddings(3.0 * _unit(2, D))
    torch.testing.assert_close(cond["vector"].norm(dim=-1), torch.ones(2))
    z = _unit(2, 5)
    tokens = embedding_tokens(z, 3)  # [2, 3, 15]
    proj = torch.nn.Linear(15, 7)  # a cross-attention key projection of the tokens
    for j in range(3):  # W·token_j = W_j·z: one learned D → Dt map per token (unCLIP §2.1)
        w_j = proj.weight[:, 5 * j : 5 * (j + 1)]
        torch.testing.assert_close(proj(tokens[:, j]), z @ w_j.T + proj.bias)


def test_decoder_condition_shapes_through_a_unet_and_their_null():
    conditioner = _conditioner(extra_tokens=4)
    assert conditioner.net_options() == {"cond_vector_dim": D, "cond_token_dim": 4 * D}
    cond = conditioner.for_training(torch.rand(5, 1, 8, 8) * 2 - 1, None)
    assert cond["vector"].shape == (5, D) and cond["tokens"].shape == (5, 4, 4 * D)
    assert cond["tokens_mask"].shape == (5, 4) and cond["tokens_mask"].all()
    net = NETS.build({"name": "unet", "model_channels": 8, "channel_mult": [1],
                      "num_res_blocks": 1, "attention_resolutions": [8], "num_heads": 1},
                     in_channels=1, out_channels=1, resolution=8,
                     **conditioner.net_options())  # fmt: skip
    x, c_noise = torch.randn(5, 1, 8, 8), torch.zeros(5)
    assert net(x, c_noise, cond).shape == (5, 1, 8, 8)
    null = drop(cond, 1.0, torch.Generator())
    assert not null["tokens_mask"].any() and not null["vector"].any()
    assert net(x, c_noise, null).shape == (5, 1, 8, 8)
    assert set(_conditioner(extra_tokens=0).from_embeddings(_unit(2, D))) == {"vector"}
    assert _conditioner(extra_tokens=0).net_options() == {"cond_vector_dim": D}


def test_embedding_dropout_is_deterministic_under_a_fixed_seed():
    conditioner = _conditioner(p_uncond=0.5)
    cond = conditioner.from_embeddings(_unit(64, D))
    a, b = (drop(cond, conditioner.p_uncond, torch.Generator().manual_seed(7)) for _ in "ab")
    c = drop(cond, conditioner.p_uncond, torch.Generator().manual_seed(8))
    for key in cond:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    kept = a["tokens_mask"].all(1)  # [B] True = this sample keeps its embedding
    assert 10 < int(kept.sum()) < 54 and not torch.equal(kept, c["tokens_mask"].all(1))
    torch.testing.assert_close(a["vector"][kept], cond["vector"][kept])
    assert not a["vector"][~kept].any()


def test_a_changed_or_missing_clip_file_is_refused(tmp_path):
    path = tiny_clip(tmp_path / "c.safetensors", shape=(1, 8, 8))
    spec = {"name": "embedding", "clip": str(path),
            "clip_sha256": "0" * 64, "dim": D}  # fmt: skip
    with pytest.raises(UsageError, match="changed since this model was trained"):
        CONDITIONERS.build(spec).for_training(torch.zeros(1, 1, 8, 8), None)
    with pytest.raises(UsageError, match="needs `clip`"):
        CONDITIONERS.build({"name": "embedding"})
    path.unlink()
    with pytest.raises(UsageError, match="does not exist"):
        CONDITIONERS.build({**spec, "clip_sha256": ""}).for_training(torch.zeros(1, 1, 8, 8), None)
