"""Guidance: wrappers from a denoiser D(x; σ, cond) to the DenoiseFn a sampler calls.

A guidance chain is one *bridge* Denoiser → DenoiseFn (`plain` or `cfg`) followed by any number of
*terms* DenoiseFn → DenoiseFn, applied in order: gradient terms add s·σ²·∇_x F(x, σ) to x̂0 (the
score form: score = (D − x)/σ², so adding s·∇F to the score adds s·σ²·∇F to D), thresholds
post-process x̂0. Several gradient terms add up, which makes their weighted sum a chain.

Gradient terms by noise-aware nets (classifier, semantic) on latent models: guidance.noise_aware.
CLI specs
("cfg:scale=3+classifier:ckpt=c.safetensors,scale=2") are parsed by `parse_guidance` and resolved
(checkpoints loaded, reference images read) by `build_guidance` before sampling starts.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from difflab.codecs.base import Codec
from difflab.codecs.identity import IdentityCodec
from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.core.types import Cond, bcast, net_cond, null_cond
from difflab.samplers.base import variance_head, with_variance

GUIDANCES = Registry("guidance")  # meta: kind ("bridge" | "term"), options {name: one-line meaning}
DenoiseFn = Callable[[Tensor, Tensor], Tensor]
Bridge = Callable[[Any, Cond], DenoiseFn]  # (denoiser, cond) -> fn
Term = Callable[[DenoiseFn, Cond], DenoiseFn]  # (fn, cond) -> fn


def wrap(fn: DenoiseFn, modify: Callable[[Tensor, Tensor, Tensor], Tensor]) -> DenoiseFn:
    """fn' with x̂0' = modify(x, σ, fn(x, σ)); forwards fn's learned variance (same head)."""

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        return modify(x, sigma, fn(x, sigma))

    head = variance_head(fn)
    if head is None:
        return guided

    def with_extra(x: Tensor, sigma: Tensor):
        denoised, extra = head(x, sigma)
        return modify(x, sigma, denoised), extra

    return with_variance(guided, with_extra)


# ---------------------------------------------------------------- bridges


def model_variance(denoiser, cond: Cond):
    """The model's learned-variance head with cond bound, or None (Precond.learned_variance)."""
    if not getattr(denoiser, "learned_variance", False):
        return None
    return lambda x, sigma: denoiser.forward_with_extra(x, sigma, cond)


def plain(denoiser, cond: Cond) -> DenoiseFn:
    """The unguided DenoiseFn: D(x; σ, cond) with cond bound, declaring the model's learned
    variance when it has one."""
    fn = lambda x, sigma: denoiser(x, sigma, cond)  # noqa: E731
    return with_variance(fn, model_variance(denoiser, cond))


def cfg(
    denoiser, cond: Cond, *, scale: float = 1.0, sigma_min: float = 0.0,
    sigma_max: float = math.inf,
) -> DenoiseFn:  # fmt: skip
    """Classifier-free guidance D̃ = D(x|∅) + w·(D(x|c) − D(x|∅)) (Ho & Salimans 2022, Eq. 6).

    Written on x̂0 (equal to writing it on ε, v or u: D is affine in F); w = 1 + the paper's w.

    Both branches run in one batched forward; outside [sigma_min, sigma_max] the conditional D
    alone is used (Kynkäänniemi et al. 2024, guidance in a limited interval).
    """
    if not net_cond(cond):
        raise UsageError(
            "classifier-free guidance needs a condition; pass `classes` or `prompts`, or drop cfg"
        )
    uncond = null_cond(cond)
    both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}  # [2B, ...] per slot

    def combine(x: Tensor, sigma: Tensor, d_u: Tensor, d_c: Tensor) -> Tensor:
        inside = (sigma >= sigma_min) & (sigma <= sigma_max)  # [B]
        guided = d_u + scale * (d_c - d_u)  # [B, ...]
        return torch.where(bcast(inside, x), guided, d_c)

    def active(sigma: Tensor) -> bool:
        return bool(((sigma >= sigma_min) & (sigma <= sigma_max)).any())

    def fn(x: Tensor, sigma: Tensor) -> Tensor:
        if not active(sigma):
            return denoiser(x, sigma, cond)
        d_u, d_c = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        return combine(x, sigma, d_u, d_c)

    if not getattr(denoiser, "learned_variance", False):
        return fn

    def with_extra(x: Tensor, sigma: Tensor):
        """Guided x̂0 with the conditional branch's variance head (GLIDE §3 / ADM)."""
        if not active(sigma):
            return denoiser.forward_with_extra(x, sigma, cond)
        d, extra = denoiser.forward_with_extra(torch.cat([x, x]), torch.cat([sigma, sigma]), both)
        (d_u, d_c), (_, extra_c) = d.chunk(2), extra.chunk(2)
        return combine(x, sigma, d_u, d_c), extra_c

    return with_variance(fn, with_extra)


# ---------------------------------------------------------------- terms


def gradient_term(
    fn: DenoiseFn, objective: Callable[[Tensor, Tensor], Tensor], scale: float
) -> DenoiseFn:
    """D̃ = D + s·σ²·∇_x F(x, σ) for F [B] (score form of Dhariwal & Nichol 2021, Eq. 10–11).

    The gradient is taken with autograd even inside `torch.inference_mode` (as in `generate`).
    """

    def modify(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)  # [B, ...], out of inference mode
            (grad,) = torch.autograd.grad(objective(x_in, sigma.detach().clone()).sum(), x_in)
        return denoised + scale * bcast(sigma, x) ** 2 * grad.to(denoised.dtype)

    return wrap(fn, modify)


def classifier_guidance(fn: DenoiseFn, cond: Cond, classifier, *, scale: float = 1.0,
                        label: int | None = None,
                        through: Callable | None = None) -> DenoiseFn:  # fmt: skip
    """D̃ = D + s·σ²·∇_x log p(y | x_σ, σ) with a noise-aware classifier (Dhariwal & Nichol 2021).

    `classifier.log_prob(x, sigma, labels) -> [B]`; y is `label` or else cond["labels"] [B].
    `through(fn, objective, scale)` builds the term (default `gradient_term`; guidance.noise_aware
    `net_term` picks `decoded_gradient_term` for a pixel classifier on a latent model).
    """
    if label is not None:
        labels = torch.full((1,), int(label), dtype=torch.long)  # broadcast to the batch
    elif "labels" in cond:
        labels = cond["labels"].detach().clone()  # [B]
    else:
        raise UsageError("classifier guidance needs a class; pass `classes` or label=N")
    num = getattr(classifier, "num_classes", None)
    if num is not None and (labels.min() < 0 or labels.max() >= num):
        raise UsageError(
            f"class {labels.tolist()} is out of range for this classifier; pass 0..{num - 1}"
        )

    def log_prob(x: Tensor, sigma: Tensor) -> Tensor:
        y = labels.to(x.device).clone().expand(len(x))  # [B]
        return classifier.log_prob(x, sigma, y)  # [B]

    return (through or gradient_term)(fn, log_prob, scale)


def static_threshold(denoised: Tensor) -> Tensor:
    """Clip x̂0 to [−1, 1] (Saharia et al. 2022, §2.3, static thresholding)."""
    return denoised.clamp(-1.0, 1.0)


def dynamic_threshold(denoised: Tensor, p: float = 0.995) -> Tensor:
    """s = max(1, percentile_p |x̂0|) per sample; x̂0 ← clip(x̂0, −s, s)/s (Saharia et al. 2022, §2.3)."""
    s = torch.quantile(denoised.detach().abs().flatten(1).float(), p, dim=1)  # [B]
    s = bcast(s.clamp(min=1.0).to(denoised.dtype), denoised)  # [B, 1, ...]
    return torch.minimum(torch.maximum(denoised, -s), s) / s


# ---------------------------------------------------------------- registry entries


@dataclass
class Context:
    """What resolving a spec needs: the sample shape [C, H, W] or [D], device, and the request's
    prompts (sample i asks for prompts[cond["prompt_index"][i]])."""

    shape: tuple[int, ...]
    device: torch.device = torch.device("cpu")
    prompts: list[str] = field(default_factory=list)
    cache: dict[Any, Any] = field(default_factory=dict)  # loaded checkpoints by (kind, path)
    codec: Codec | None = None  # the model's codec (None: pixels)

    @property
    def latent(self) -> bool:
        """True when the model works in a learned codec's space (not pixels)."""
        return self.codec is not None and not isinstance(self.codec, IdentityCodec)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The pixel shape the model's samples decode to (`shape` itself for pixel models)."""
        return tuple(self.codec.image_shape(self.shape)) if self.latent else self.shape


def finite(name: str, option: str, value: float) -> float:
    if not math.isfinite(value):
        raise UsageError(f"guidance {name!r} option {option}={value} must be a finite number")
    return value


def require(name: str, option: str, value: Any, hint: str) -> Any:
    if value is None:
        raise UsageError(f"guidance {name!r} needs {option}=; {hint}")
    return value


@GUIDANCES.register("plain", kind="bridge", options={})
def _plain(ctx: Context) -> Bridge:
    """No guidance: the conditional (or unconditional) denoiser as it is."""
    return plain


@GUIDANCES.register("cfg", kind="bridge", options={
    "scale": "guidance weight w: D(x|∅) + w·(D(x|c) − D(x|∅)); 1 = the conditional model",
    "sigma_min": "guide only for σ >= sigma_min (limited-interval guidance)",
    "sigma_max": "guide only for σ <= sigma_max"})  # fmt: skip
def _cfg(ctx: Context, *, scale: float = 1.0, sigma_min: float = 0.0,
         sigma_max: float = math.inf) -> Bridge:  # fmt: skip
    """Classifier-free guidance with scale w, applied for σ in [sigma_min, sigma_max]."""
    finite("cfg", "scale", scale)
    if not 0 <= sigma_min <= sigma_max:
        raise UsageError(
            f"cfg needs 0 <= sigma_min <= sigma_max, got sigma_min={sigma_min}, "
            f"sigma_max={sigma_max}; fix the interval"
        )
    return lambda denoiser, cond: cfg(
        denoiser, cond, scale=scale, sigma_min=sigma_min, sigma_max=sigma_max
    )


@GUIDANCES.register("static_threshold", kind="term", options={})
def _static(ctx: Context) -> Term:
    """Clip x̂0 to [−1, 1]."""
    return lambda fn, cond: wrap(fn, lambda x, sigma, d: static_threshold(d))


@GUIDANCES.register("dynamic_threshold", kind="term", options={
    "p": "percentile of |x̂0| per sample that sets the clipping bound s >= 1"})  # fmt: skip
def _dynamic(ctx: Context, *, p: float = 0.995) -> Term:
    """Dynamic thresholding of x̂0 at percentile p."""
    if not 0 < p <= 1:
        raise UsageError(f"dynamic_threshold p={p} is invalid; pass a percentile in (0, 1]")
    return lambda fn, cond: wrap(fn, lambda x, sigma, d: dynamic_threshold(d, p))


# ---------------------------------------------------------------- specs


def parse_guidance(specs: str | list[str] | None) -> list[dict[str, Any]]:
    """["cfg:scale=3", "style:ref=a.png,scale=50+text:prompt=x"] → [{"name": "cfg", "scale": "3"}, ...]."""
    if isinstance(specs, str):
        specs = [specs]
    out = []
    for spec in specs or []:
        for part in spec.split("+"):
            name, _, rest = part.strip().partition(":")
            if not name:
                raise UsageError(
                    f"empty guidance in {spec!r}; write NAME[:KEY=VALUE,...] joined by '+' "
                    f"(names: {', '.join(GUIDANCES.names())})"
                )
            entry: dict[str, Any] = {"name": name.strip()}
            for item in filter(None, (s.strip() for s in rest.split(","))):
                key, eq, value = item.partition("=")
                if not eq or not key.strip():
                    raise UsageError(
                        f"guidance option {item!r} in {spec!r} is not KEY=VALUE; write e.g. "
                        f"{name}:scale=2"
                    )
                if key.strip() in entry:
                    raise UsageError(f"guidance option {key.strip()!r} given twice in {spec!r}")
                entry[key.strip()] = value.strip()
            GUIDANCES.check_options(
                entry["name"], {k: v for k, v in entry.items() if k != "name"}, skip=1
            )
            out.append(entry)
    return out


def _coerce(name: str, option: str, value: Any, hint: Any) -> Any:
    """Convert a CLI string, or check a config value, to the factory's annotated type (bool,
    int, float or str); anything else is a UsageError naming the term and option."""
    types = typing.get_args(hint) or (hint,)
    kind = next((t for t in (bool, int, float, str) if t in types), str)
    try:
        if isinstance(value, str) and kind is not str:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return kind(value)
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise ValueError
    except ValueError:
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise UsageError(
            f"guidance {name!r} option {option}={value!r} must be {article} {kind.__name__}; "
            "fix the value"
        ) from None


def resolve(spec: Mapping[str, Any], ctx: Context) -> tuple[str, Callable]:
    """(kind, bridge or term) for one spec {"name": ..., **options}: options checked and typed."""
    name = spec["name"]
    options = {k: v for k, v in spec.items() if k != "name"}
    GUIDANCES.check_options(name, options, skip=1)
    factory = GUIDANCES.get(name)
    hints = typing.get_type_hints(factory)
    options = {k: _coerce(name, k, v, hints.get(k, str)) for k, v in options.items()}
    return GUIDANCES.meta(name)["kind"], factory(ctx, **options)


class Guidance:
    """A resolved chain, called by `generate` as guidance(denoiser, cond) -> DenoiseFn."""

    def __init__(self, bridge: Bridge, terms: list[Term], specs: list[dict[str, Any]]):
        self.bridge, self.terms, self.specs = bridge, terms, specs

    def __call__(self, denoiser, cond: Cond) -> DenoiseFn:
        fn = self.bridge(denoiser, cond)
        for term in self.terms:
            fn = term(fn, cond)
        return fn


def build_guidance(
    specs: str | list[str] | list[dict[str, Any]] | None,
    *,
    shape: tuple[int, ...],
    device: str | torch.device = "cpu",
    prompt: str | None = None,
    prompts: list[str] = (),
    codec: Codec | None = None,
) -> Guidance:
    """Resolve guidance specs (CLI strings or dicts) for samples of `shape`; fails before sampling.

    At most one bridge (plain or cfg, default plain); terms apply in the order given, so put
    thresholds last. `prompts` are the request's prompts, which the text term follows per sample
    (cond["prompt_index"]); `prompt` is one default prompt for every sample. `codec` is the
    model's (None: pixels; `shape` is then its latent shape): reference images are read at its
    pixel shape and pixel-space nets guide through its decoder. Checkpoints and references load
    outside inference mode, so gradient terms work in `torch.inference_mode`.
    """
    if isinstance(specs, str) or (specs and isinstance(specs[0], str)):
        specs = parse_guidance(specs)
    specs = [dict(s) for s in specs or []]
    ctx = Context(tuple(shape), torch.device(device), list(prompts) or ([prompt] if prompt else []),
                  codec=codec)  # fmt: skip
    bridges, terms = [], []
    for spec in specs:
        if "name" not in spec:
            raise UsageError(f"guidance spec {spec!r} has no 'name'; add name = \"...\"")
        with torch.inference_mode(False):  # loaded weights must not be inference tensors
            kind, built = resolve(spec, ctx)
        (bridges if kind == "bridge" else terms).append((spec["name"], built))
    if len(bridges) > 1:
        raise UsageError(
            f"guidance combines {', '.join(n for n, _ in bridges)}; use at most one of "
            f"{', '.join(n for n in GUIDANCES.names() if GUIDANCES.meta(n)['kind'] == 'bridge')}"
        )
    bridge = bridges[0][1] if bridges else plain
    return Guidance(bridge, [t for _, t in terms], specs)
