"""Networks: shapes, zero-init, conditioning slots, gradients, errors, bf16, checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from difflab.core.errors import UsageError
from difflab.nets import layers
from difflab.nets.base import NETS
from difflab.nets.layers import ada_group_norm, num_groups, positional_embedding

TINY = dict(
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    head_channels=8,
    attention_resolutions=(),
)
ALL_SLOTS = dict(cond_vector_dim=5, cond_token_dim=6, cond_channels=2)


def build(**kw):
    spec = {"name": "unet", "in_channels": 3, "out_channels": 3, "resolution": 8, **TINY}
    spec.update(kw)
    torch.manual_seed(0)
    return NETS.build(spec)


def perturb(net: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Add noise to every parameter so that zero-initialised layers stop hiding the inputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * std)
    return net


def make_cond(B: int, H: int, W: int, seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "vector": torch.randn(B, 5, generator=g),
        "tokens": torch.randn(B, 4, 6, generator=g),
        "tokens_mask": torch.tensor([[True, True, False, True]] * B),
        "channels": torch.randn(B, 2, H, W, generator=g),
    }


def test_registry_lists_nets():
    assert {"unet", "mlp"} <= set(NETS.names())
    with pytest.raises(UsageError, match="takes no option"):
        NETS.build({"name": "unet", "in_channels": 1, "out_channels": 1, "resolution": 8, "x": 1})


@pytest.mark.parametrize(
    "res, ch, mult, attn, kw",
    [
        (8, 1, (1, 2), (4,), {}),
        (8, 3, (1, 2, 2), (), {"resblock_updown": False}),
        (16, 3, (1, 2), (8,), {"num_res_blocks": 2, "dropout": 0.1}),
        (16, 1, (1, 2, 2), (16, 4), ALL_SLOTS),
        (32, 3, (1, 2, 2), (16,), {"channels_last": False}),
    ],
)
def test_unet_shapes(res, ch, mult, attn, kw):
    net = build(in_channels=ch, out_channels=2 * ch, resolution=res, channel_mult=mult,
                attention_resolutions=attn, **kw)  # fmt: skip
    x = torch.randn(2, ch, res, res)
    cond = make_cond(2, res, res) if kw is ALL_SLOTS else None
    y = net(x, torch.rand(2), cond)
    assert y.shape == (2, 2 * ch, res, res)
    assert y.is_contiguous()


def test_unet_zero_init_gives_zero_output():
    net = build(**ALL_SLOTS)
    y = net(torch.randn(2, 3, 8, 8), torch.rand(2), make_cond(2, 8, 8))
    assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("slot", ["c_noise", "vector", "tokens", "tokens_mask", "channels"])
def test_unet_output_depends_on_each_input(slot):
    net = perturb(build(attention_resolutions=(4,), **ALL_SLOTS)).eval()
    x, c_noise, cond = torch.randn(2, 3, 8, 8), torch.rand(2), make_cond(2, 8, 8)
    y = net(x, c_noise, cond)
    if slot == "c_noise":
        c_noise = c_noise + 0.5
    elif slot == "tokens_mask":
        cond["tokens_mask"] = torch.ones(2, 4, dtype=torch.bool)
    else:
        cond[slot] = cond[slot] + torch.randn_like(cond[slot])
    assert (net(x, c_noise, cond) - y).abs().max() > 1e-4


def test_unet_missing_slots_are_unconditional_and_masked_tokens_are_ignored():
    net = perturb(build(attention_resolutions=(4,), **ALL_SLOTS)).eval()
    x, c_noise, cond = torch.randn(2, 3, 8, 8), torch.rand(2), make_cond(2, 8, 8)
    y = net(x, c_noise, cond)
    # A token whose mask is False has no effect
    cond2 = dict(cond, tokens=cond["tokens"].clone())
    cond2["tokens"][:, 2] += 10.0
    torch.testing.assert_close(net(x, c_noise, cond2), y)
    # Absent slots act as their null value (null_cond): zero channels/vector, all tokens masked
    from difflab.core.types import null_cond

    for slot in ("channels", "vector", "tokens"):
        absent = {k: v for k, v in cond.items() if not k.startswith(slot)}
        nulled = {**cond, **{k: v for k, v in null_cond(cond).items() if k.startswith(slot)}}
        torch.testing.assert_close(net(x, c_noise, absent), net(x, c_noise, nulled), msg=slot)
    torch.testing.assert_close(net(x, c_noise, {}), net(x, c_noise, null_cond(cond)))
    assert net(x, c_noise, {}).shape == y.shape
    assert net(x, c_noise).shape == y.shape


def test_unet_samples_are_independent_of_the_batch():
    net = perturb(build(attention_resolutions=(4,))).eval()
    x, c_noise = torch.randn(3, 3, 8, 8), torch.rand(3)
    torch.testing.assert_close(net(x, c_noise)[:1], net(x[:1], c_noise[:1]), atol=1e-5, rtol=1e-4)


def test_unet_gradient_reaches_every_parameter():
    net = perturb(build(resolution=16, attention_resolutions=(16, 8), **ALL_SLOTS))
    net(torch.randn(2, 3, 16, 16), torch.rand(2), make_cond(2, 16, 16)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_unet_channels_last_matches_contiguous_path():
    a = perturb(build(resolution=16, attention_resolutions=(8,)))
    b = build(resolution=16, attention_resolutions=(8,), channels_last=False)
    b.load_state_dict(a.state_dict())
    x, c_noise = torch.randn(2, 3, 16, 16), torch.rand(2)
    ya, yb = a(x, c_noise), b(x, c_noise)
    torch.testing.assert_close(ya, yb, atol=1e-4, rtol=1e-4)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        # fp32 sums in another order: tolerance relative to the gradient's scale, not elementwise
        scale = pb.grad.abs().max().item()
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5 * scale, rtol=1e-3, msg=name)


def test_unet_bf16_autocast_close_to_fp32():
    net = perturb(build(resolution=16, attention_resolutions=(8,), **ALL_SLOTS))
    x, c_noise, cond = torch.randn(2, 3, 16, 16), torch.rand(2), make_cond(2, 16, 16)
    y32 = net(x, c_noise, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = net(x, c_noise, cond)
        y16.float().square().mean().backward()  # bf16 training step runs
    assert y16.dtype == torch.bfloat16
    assert (y16.float() - y32).abs().max() < 0.05 * y32.abs().max()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert (net(x, c_noise, cond).float() - y32).abs().max() < 0.05 * y32.abs().max()
    # bf16 gradients match fp32 gradients
    g16 = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    y32.square().mean().backward()
    for (name, p), g in zip(net.named_parameters(), g16):
        assert (g - p.grad).norm() < 0.1 * p.grad.norm() + 1e-6, name


def test_unet_checkpointing_gives_same_gradients():
    a = perturb(build(attention_resolutions=(4,), dropout=0.0))
    b = copy.deepcopy(a)
    for m in b.modules():
        if hasattr(m, "checkpointing"):
            m.checkpointing = True
    assert build(checkpointing=True).down[0][0].checkpointing
    x, c_noise = torch.randn(2, 3, 8, 8), torch.rand(2)
    a(x, c_noise).square().mean().backward()
    b(x, c_noise).square().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_unet_usage_errors():
    with pytest.raises(UsageError, match="multiple of 4"):
        build(resolution=10, channel_mult=(1, 2, 2))
    with pytest.raises(UsageError, match="attention_resolutions"):
        build(resolution=8, attention_resolutions=(16,))
    with pytest.raises(UsageError, match="num_heads"):
        build(head_channels=-1, num_heads=3)
    net = build(cond_vector_dim=5)
    x, c_noise = torch.randn(2, 3, 8, 8), torch.rand(2)
    with pytest.raises(UsageError, match="cond_token_dim=0"):
        net(x, c_noise, {"tokens": torch.randn(2, 4, 6)})
    with pytest.raises(UsageError, match="cond_channels=0"):
        net(x, c_noise, {"channels": torch.randn(2, 2, 8, 8)})
    with pytest.raises(UsageError, match="unknown cond slot"):
        net(x, c_noise, {"labels": torch.zeros(2)})
    with pytest.raises(UsageError, match=r"must be \[2, 5\]"):
        net(x, c_noise, {"vector": torch.randn(2, 4)})
    with pytest.raises(UsageError, match="multiples of 2"):
        net(torch.randn(2, 3, 7, 8), c_noise)
    with pytest.raises(UsageError, match="in_channels=3"):
        net(torch.randn(2, 1, 8, 8), c_noise)
    with pytest.raises(UsageError, match="c_noise"):
        net(x, torch.rand(3))
    with pytest.raises(UsageError, match="without cond"):
        build(cond_token_dim=6)(x, c_noise, {"tokens_mask": torch.ones(2, 4, dtype=torch.bool)})


def test_unet_accepts_scalar_c_noise_and_other_sizes():
    net = perturb(build(attention_resolutions=(4,))).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net(x, torch.tensor(0.3)), net(x, torch.full((2,), 0.3)))
    assert net(torch.randn(1, 3, 16, 8), torch.rand(1)).shape == (1, 3, 16, 8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_ada_group_norm_matches_reference(dtype, affine, fused, monkeypatch):
    monkeypatch.setattr(layers, "_FUSED_MIN_PIXELS", {} if fused else {dtype: 10**9})
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(2, 4)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(2, 4, 5, 6) * 2 + 5).to(memory_format=torch.channels_last)
    scale, shift = (torch.randn(2, 4), torch.randn(2, 4)) if affine else (None, None)

    def ref(x, norm, scale, shift):
        h = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        return h if scale is None else h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]

    norm64 = copy.deepcopy(norm).double()
    s64 = None if scale is None else scale.double()
    t64 = None if shift is None else shift.double()
    x64 = x.double().requires_grad_()
    y_ref = ref(x64, norm64, s64, t64)
    g = torch.randn_like(y_ref)
    (gx_ref,) = torch.autograd.grad(y_ref, x64, g)
    xd = x.to(dtype).requires_grad_()
    nd = norm64 if dtype == torch.float64 else norm
    sd = s64 if dtype == torch.float64 else scale
    td = t64 if dtype == torch.float64 else shift
    y = ada_group_norm(xd, nd, sd, td)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    (gx,) = torch.autograd.grad(y, xd, g.to(dtype))
    tol = 1e-10 if dtype == torch.float64 else 0.05
    assert (y.double() - y_ref).abs().max() < tol * y_ref.abs().max()
    assert (gx.double() - gx_ref).abs().max() < tol * gx_ref.abs().max()
    if dtype == torch.float64:
        args = (x64.detach().requires_grad_(), norm64, s64, t64)
        if affine:
            args[2].requires_grad_()
            args[3].requires_grad_()
        assert torch.autograd.gradcheck(lambda *a: ada_group_norm(*a), args)


def test_layers_helpers():
    assert [num_groups(c) for c in (1, 8, 16, 48, 64, 256)] == [1, 4, 8, 24, 32, 32]
    emb = positional_embedding(torch.tensor([0.0, 1.0]), 7)
    assert emb.shape == (2, 7)
    torch.testing.assert_close(emb[0, :3], torch.ones(3))  # cos(0) = 1 in the first half


def test_mlp():
    torch.manual_seed(0)
    net = NETS.build({"name": "mlp", "hidden": 32, "depth": 2, "cond_vector_dim": 3})
    x, c_noise, v = torch.randn(5, 2), torch.rand(5), torch.randn(5, 3)
    y = net(x, c_noise, {"vector": v})
    assert y.shape == (5, 2) and torch.equal(y, torch.zeros_like(y))
    perturb(net)
    y = net(x, c_noise, {"vector": v})
    assert (net(x, c_noise + 0.5, {"vector": v}) - y).abs().max() > 1e-4
    assert (net(x, c_noise, {"vector": v + 1}) - y).abs().max() > 1e-4
    assert net(x, c_noise).shape == (5, 2)
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in net.parameters())
    with pytest.raises(UsageError, match="cond_vector_dim=0"):
        NETS.build("mlp")(x, c_noise, {"vector": v})
    with pytest.raises(UsageError, match="only cond"):
        net(x, c_noise, {"tokens": torch.randn(5, 2, 3)})
    with pytest.raises(UsageError, match=r"x must be \[B, 2\]"):
        net(torch.randn(5, 3), c_noise)


@pytest.mark.parametrize("masked", [False, True])
def test_explicit_attention_equals_sdpa(masked):
    """The CPU bf16 path (two matmuls, fp32 softmax) computes the same attention as SDPA: equal
    in fp32 to float precision, within bf16 rounding in bf16; masked keys get no weight."""
    from difflab.nets.layers import explicit_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))  # [B, h, N, d]
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])[:, None, None, :] if masked else None
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, h, N, d]
    assert torch.allclose(explicit_attention(q, k, v, mask), want, atol=1e-6)
    got = explicit_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert got.dtype == torch.bfloat16 and torch.allclose(got.float(), want, atol=3e-2)
    if masked:  # the last two keys of item 0 are ignored: changing their values changes nothing
        v2 = v.clone()
        v2[0, :, 3:] = 100.0
        assert torch.equal(explicit_attention(q, k, v2, mask)[0], explicit_attention(q, k, v, mask)[0])
