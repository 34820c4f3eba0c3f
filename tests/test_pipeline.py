"""The Pipeline: one inference path (codec + denoiser + conditioner + the config's defaults), codecs
with a latent shape of their own, and checkpoint formats as plug-ins."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from test_train import TINY_UNET

import difflab
from difflab.codecs import CODECS
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.core.imageio import pixels_to_uint8
from difflab.core.schedules import build_schedule, discretize
from difflab.inference.generate import generate
from difflab.inference.pipeline import Pipeline
from difflab.inference.request import request
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import build_codec
from difflab.storage.formats import FORMATS, CheckpointFormat
from difflab.storage.models import build_denoiser, load_denoiser
from oracles import GaussianData, perfect_denoiser

SAMPLE = ["sample.sampler={name='euler'}", "sample.steps=3", "sample.n=6",
          "sample.batch_size=4", "sample.seed=3"]  # fmt: skip


@CODECS.register("toy_down2")
class Down2:
    """A toy latent codec: 2×2 average pooling down, nearest-neighbour up (latent = image / 2)."""

    def encode(self, pixels):
        return F.avg_pool2d(pixels, 2)

    def decode(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def latent_shape(self, image_shape):
        c, h, w = image_shape
        return (c, h // 2, w // 2)

    def image_shape(self, latent_shape):
        c, h, w = latent_shape
        return (c, 2 * h, 2 * w)

    def to(self, device):
        return self


@FORMATS.register("toy-foreign")
class ToyForeign(CheckpointFormat):
    """A foreign format: tensors under "model.<key>", the config as JSON under "toy_config"."""

    def detect(self, path):
        if not path.is_file():
            return False
        meta = ckpt.read_header(path).get("__metadata__") or {}
        return meta.get("format") == "toy-foreign"

    def read(self, path):
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())

    def key_map(self, key):
        return key.removeprefix("model.") if key.startswith("model.") else None

    def translate(self, meta):
        return {"model": json.loads(meta["toy_config"]), "sample": {}}, {"step": 7}


def _config(*extra):
    cfg = load_config("digits", [TINY_UNET, *SAMPLE, *extra])
    cfg.model.shape = [1, 8, 8]
    return cfg


def _save(path, cfg, step=1, drop_codec=False):
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.model)
    config = cfg.to_dict()
    if drop_codec:  # a checkpoint from before codecs existed
        del config["model"]["codec"]
    ckpt.save_model(path, denoiser.state_dict(), config, {"step": step})
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run dir holding one random-weight tiny U-Net checkpoint (no training needed)."""
    run = tmp_path_factory.mktemp("pipe") / "run"
    _save(ckpt.model_path(run, 1), _config())
    return run


def _old_path(run, n, seed, **over):
    """What the CLI did before the Pipeline: request + generate with the config's settings."""
    denoiser, config, _ = load_denoiser(run)
    s = {**config["sample"], **over}
    cond, chain, _ = request(denoiser, config, n)
    return torch.cat(list(generate(
        denoiser, tuple(config["model"]["shape"]), n=n, seed=seed, batch_size=s["batch_size"],
        sampler=s["sampler"], steps=s["steps"], discretization=s["discretization"], cond=cond,
        guidance=chain,
    )))  # fmt: skip


def test_pipeline_equals_the_old_generate_path_bit_exactly(run):
    pipe = difflab.load(run)
    x = _old_path(run, 5, seed=11)
    assert torch.equal(pipe.sample(5, seed=11).x, x)
    images = pipe(5, seed=11)
    assert images.dtype == torch.uint8 and images.shape == (5, 1, 8, 8)
    assert torch.equal(images, pixels_to_uint8(x))


def test_samples_depend_on_their_seed_not_on_the_batch_size(run):
    pipe = difflab.load(run)
    whole = pipe(5, seed=7, batch_size=5)
    assert torch.equal(whole, pipe(5, seed=7, batch_size=2))
    assert torch.equal(whole[2:], pipe(3, seed=9, batch_size=1))  # sample i ← seed + i
    assert not torch.equal(whole[:1], pipe(1, seed=8))


def test_config_defaults_are_used_and_user_arguments_win(run):
    pipe = difflab.load(run)
    s = pipe.settings()
    assert (s.sampler, s.steps, s.discretization, s.batch_size, s.seed) == (
        {"name": "euler"}, 3, {"name": "karras"}, 4, 3)  # fmt: skip
    calls = []
    x = pipe.sample(callback=calls.append).x  # n=6 in batches of 4: 2 batches × 3 steps
    assert len(x) == 6 and len(calls) == 6 and [c["start"] for c in calls[::3]] == [0, 4]
    assert torch.equal(x, _old_path(run, 6, seed=3))
    calls.clear()
    y = pipe.sample(2, seed=0, steps=2, sampler="heun", batch_size=1, callback=calls.append).x
    assert len(calls) == 4
    assert torch.equal(y, _old_path(run, 2, seed=0, steps=2, sampler={"name": "heun"}))
    over = pipe.settings(sampler={"s_churn": 1.0}, discretization="uniform", guidance="cfg")
    assert over.sampler == {"name": "euler", "s_churn": 1.0}  # no name: the default's options
    assert over.discretization == {"name": "uniform"} and over.guidance == ["cfg"]
    assert pipe.settings(sampler={"name": "heun"}).sampler == {"name": "heun"}
    for bad in ({"steps": 0}, {"batch_size": -1}, {"sampler": 3}):
        with pytest.raises(UsageError, match=f"`{next(iter(bad))}`"):
            pipe.settings(**bad)


def test_an_explicit_grid_equals_the_grid_of_steps_and_discretization(run):
    pipe = difflab.load(run)
    sigmas = discretize(pipe.denoiser.schedule, {"name": "karras"}, 3)
    assert torch.equal(pipe(3, seed=1, sigmas=sigmas), pipe(3, seed=1))


def _oracle_pipe():
    data = GaussianData(mu=0.3, s=0.5)
    config = {"model": {"shape": [1, 4, 4]}, "sample": {"sampler": {"name": "heun"}}}
    return Pipeline(perfect_denoiser(data, build_schedule("edm"), "edm"), config), data


def test_start_with_a_partial_grid_is_sdedit_close_to_the_start_at_small_sigma():
    """x enters at σ₀ = sigmas[0]; with the exact denoiser the result is the exact ODE solution."""
    pipe, data = _oracle_pipe()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 1, 4, 4), generator=g, dtype=torch.uint8)
    x0 = pipe.encode(images)  # [4, 1, 4, 4] in [-1, 1]
    results = {}
    for sigma0 in (0.05, 20.0):
        start = x0 + sigma0 * torch.randn(x0.shape, generator=g)
        sigmas = torch.linspace(sigma0, 0, 33, dtype=torch.float64)
        if sigma0 < 1:  # the grid is fine enough for Heun to be exact to 1e-4 here
            x = pipe.sample(4, start=start, sigmas=sigmas).x
            exact = data.ode_solution(start.double(), sigma0, 0.0).float()
            torch.testing.assert_close(x, exact, atol=1e-4, rtol=0)
        results[sigma0] = (pipe(4, start=start, sigmas=sigmas).int() - images.int()).abs()
    assert results[0.05].float().mean() < 8 and results[0.05].max() <= 32  # of 255: the noise
    assert results[20.0].float().mean() > 40  # from high σ the start is forgotten
    with pytest.raises(UsageError, match="`start`"):
        pipe.sample(3, start=x0, sigmas=sigmas)


def test_step_hook_reaches_the_sampler(run):
    """A hook that replaces x after the last step decides the output (RePaint-style edits)."""
    pipe = difflab.load(run)
    seen = []

    def hook(x, i, sigma_next):
        seen.append(i)
        return torch.full_like(x, 0.5) if i == 2 else None

    x = pipe.sample(2, seed=0, batch_size=2, step_hook=hook).x
    assert seen == [0, 1, 2] and torch.equal(x, torch.full_like(x, 0.5))


def codec_spec_for(name: str, tmp_path) -> dict:
    """A buildable spec of codec `name` (a codec reading a saved model gets a tiny one)."""
    if name == "diffusers_vae":
        from diffusers_models import vae_folder

        return {"name": name, "path": str(vae_folder(tmp_path / "vae"))}
    return {"name": name}


@pytest.mark.parametrize("name", CODECS.names())
def test_codec_contract(name, tmp_path):
    """encode → latent_shape, decode → image_shape, the two shape maps invert each other."""
    codec = build_codec(codec_spec_for(name, tmp_path))
    image_shape = (3, 8, 8)
    latent = codec.latent_shape(image_shape)
    assert codec.image_shape(latent) == image_shape
    pixels = torch.rand(2, *image_shape) * 2 - 1
    x = codec.encode(pixels)
    assert tuple(x.shape) == (2, *latent)
    assert tuple(codec.decode(x).shape) == (2, *image_shape)
    assert codec.to("cpu") is not None


def test_identity_codec_round_trips_bit_exactly(run):
    codec = build_codec(None)  # no spec (old configs): identity
    pixels = torch.rand(3, 1, 8, 8) * 2 - 1
    assert torch.equal(codec.decode(codec.encode(pixels)), pixels)
    pipe = difflab.load(run)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(pipe.to_images(pipe.encode(images)), images)
    points = torch.randn(4, 2)
    assert torch.equal(codec.decode(codec.encode(points)), points)


def test_a_latent_codec_separates_the_net_shape_from_the_image_shape(tmp_path):
    """A 2× downsampling codec: the net works on [1, 4, 4], the images are [1, 8, 8]."""
    cfg = _config("model.codec={name='toy_down2'}")
    denoiser = build_denoiser(cfg.model)
    assert denoiser.net(torch.zeros(2, 1, 4, 4), torch.zeros(2), {}).shape == (2, 1, 4, 4)
    pipe = difflab.load(_save(tmp_path / "latent.safetensors", cfg))
    assert (pipe.shape, pipe.image_shape) == ((1, 4, 4), (1, 8, 8))
    result = pipe.sample(3, seed=0)
    assert result.x.shape == (3, 1, 4, 4)
    images = pipe(3, seed=0)
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images, pixels_to_uint8(F.interpolate(result.x, scale_factor=2)))
    assert pipe.encode(images).shape == (3, 1, 4, 4)
    with pytest.raises(UsageError, match="resize them"):
        pipe.encode(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


def test_training_feeds_the_objective_codec_encoded_batches(tmp_path):
    """With a latent codec the loop trains on encode(x0): the net sees [1, 4, 4], the run samples
    [1, 8, 8] images, and the encoded batches resume with the loader's position."""
    from difflab.data.datasets import load_dataset
    from difflab.data.loader import InfiniteLoader
    from difflab.training.encoded import EncodedBatches

    cfg = _config("model.codec={name='toy_down2'}", "train.steps=2", "train.batch_size=4",
                  "train.log_every=1")  # fmt: skip
    pipe = difflab.load(difflab.train(cfg, tmp_path / "run"))
    assert (pipe.shape, pipe.image_shape) == ((1, 4, 4), (1, 8, 8))
    assert pipe(2, seed=0).shape == (2, 1, 8, 8)
    data = load_dataset("digits")
    batches = EncodedBatches(InfiniteLoader(data, 4, seed=0), Down2())
    x0, _ = next(batches)
    assert x0.shape == (4, 1, 4, 4)
    state = batches.state_dict()
    again = EncodedBatches(InfiniteLoader(data, 4, seed=0), Down2())
    again.load_state_dict(state)
    assert torch.equal(next(again)[0], next(batches)[0])


def test_a_checkpoint_without_a_codec_spec_loads_as_identity(tmp_path):
    pipe = difflab.load(_save(tmp_path / "old.safetensors", _config(), drop_codec=True))
    assert pipe.config["model"]["codec"] == {"name": "identity"}
    assert pipe.shape == pipe.image_shape == (1, 8, 8)


def test_load_takes_a_run_dir_or_a_safetensors_file(run):
    by_dir, by_file = difflab.load(run), difflab.load(ckpt.latest_checkpoint(run))
    assert by_dir.info["step"] == by_file.info["step"] == 1
    assert torch.equal(by_dir(2, seed=5), by_file(2, seed=5))
    assert isinstance(by_dir, difflab.Pipeline) and "euler" in repr(by_dir)


def test_unknown_checkpoint_formats_are_clear_errors(tmp_path):
    newer, foreign = tmp_path / "newer.safetensors", tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(newer), metadata={"format": "difflab-9"})
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UsageError, match="format 'difflab-9'.*reads: difflab-1"):
        difflab.load(newer)
    with pytest.raises(UsageError, match="not a difflab checkpoint.*FORMATS"):
        difflab.load(foreign)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UsageError, match="holds no checkpoint"):
        difflab.load(tmp_path / "empty_run")


def test_a_foreign_format_plug_in_maps_keys_and_translates_its_config(run, tmp_path):
    """A registered format's detect / key_map / translate load the same model as difflab-1."""
    state, config, _ = ckpt.load_model_file(run)
    path = tmp_path / "foreign.safetensors"
    tensors = {f"model.{k}": v.contiguous() for k, v in state.items()} | {"extra": torch.ones(1)}
    save_file(tensors, str(path),
              metadata={"format": "toy-foreign", "toy_config": json.dumps(config["model"])})  # fmt: skip
    pipe = difflab.load(path)
    assert pipe.info == {"step": 7} and pipe.settings().sampler == {"name": "heun"}  # defaults
    native = difflab.load(run)
    assert torch.equal(pipe(2, seed=1, sampler="euler", steps=3, batch_size=4),
                       native(2, seed=1))  # fmt: skip


def test_noise_aware_and_feature_files_share_the_kind_checked_reader(run):
    from difflab.evaluation.features import load_feature_net
    from difflab.storage.noise_aware import load_classifier

    model_file = ckpt.latest_checkpoint(run)
    with pytest.raises(
        UsageError, match="diffusion model checkpoint.*not a noise-aware classifier"
    ):
        load_classifier(model_file)
    with pytest.raises(UsageError, match="diffusion model checkpoint.*not a domain feature net"):
        load_feature_net({"name": "domain", "path": str(model_file)})


def test_naming_the_configs_grid_keeps_its_options():
    """`discretization="karras"` on a model whose config samples on {karras, sigma_max = 80}
    keeps sigma_max (it used to be dropped silently); another name replaces the spec; the CLI's
    --discretization also takes an inline table."""
    from difflab.cli.main import build_parser
    from difflab.core.config import Config
    from difflab.inference.pipeline import Pipeline

    cfg = Config().to_dict()
    cfg["model"]["shape"] = [2]
    cfg["sample"]["discretization"] = {"name": "karras", "sigma_max": 80.0}
    pipe = Pipeline(torch.nn.Identity(), cfg)
    assert pipe.settings(discretization="karras").discretization == cfg["sample"]["discretization"]
    assert pipe.settings(discretization="uniform").discretization == {"name": "uniform"}
    assert pipe.settings(discretization={"rho": 5}).discretization == {
        "name": "karras", "sigma_max": 80.0, "rho": 5}  # fmt: skip
    args = build_parser().parse_args(
        ["sample", "run", "--out", "s", "--discretization", "{name='karras', sigma_max=80}"]
    )
    assert args.discretization == {"name": "karras", "sigma_max": 80}
