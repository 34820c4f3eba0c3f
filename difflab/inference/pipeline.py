"""The Pipeline: codec + denoiser + conditioner + the config's sampling defaults, one way to sample.

    pipe = difflab.load("runs/x")                  # a run dir or a model checkpoint file
    images = pipe(16, seed=0, steps=20)            # uint8 [16, C, H, W]

Every caller (CLI `sample` and `eval`, the in-loop FD, the demo, the benches) samples through
`Pipeline.sample`: settings the caller leaves as None come from the config's `sample` section,
the condition and guidance chain come from `request`, the states from `generate`, and pixels
from the codec. Sample i depends on seed + i only, never on the batch size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.codecs.base import Codec
from difflab.core.config import SampleConfig
from difflab.core.errors import UsageError
from difflab.core.imageio import pixels_to_uint8, uint8_to_pixels
from difflab.inference.generate import generate
from difflab.inference.request import request
from difflab.storage.codecs import build_codec
from difflab.storage.models import load_denoiser


@dataclass(frozen=True)
class Settings:
    """Resolved sampling settings: the config's defaults with the caller's choices on top."""

    sampler: dict  # {"name": ..., **options}
    steps: int
    discretization: dict  # {"name": ..., **options}
    guidance: list  # the caller's guidance specs; `request` appends the config's defaults
    batch_size: int
    seed: int


@dataclass
class Samples:
    """Model-space samples x [n, *shape] (CPU), what each asked for, and the settings used."""

    x: Tensor
    asked: dict
    settings: Settings


def _spec(value: str | Mapping[str, Any] | None, default: Mapping[str, Any], what: str) -> dict:
    """None → the default spec; "name" → {"name": name}, or the default itself when it has that
    name (its options, e.g. a Karras grid's sigma_max, are kept); a table without a name updates
    the default's options (e.g. {"eta": 0.5}); a table with a name replaces it."""
    if value is None:
        return dict(default)
    if isinstance(value, str):
        return dict(default) if value == default.get("name") else {"name": value}
    if not isinstance(value, Mapping):
        raise UsageError(f"`{what}` must be a name or a dict of options, got {value!r}")
    return dict(value) if "name" in value else {**default, **value}


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"`{what}` must be an integer >= 1, got {value!r}")
    return value


class Pipeline:
    """codec + denoiser (with its conditioner) + the sampling defaults of its config."""

    def __init__(self, denoiser, config: Mapping | Any, *, codec: Codec | None = None,
                 info: dict | None = None):  # fmt: skip
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        self.denoiser = denoiser
        self.config = config
        self.info = dict(info or {})  # step, metrics ... of the checkpoint
        self.codec = codec or build_codec(config["model"].get("codec"))
        self.image_shape = tuple(config["model"]["shape"])  # pixels [C, H, W] (or points [D])
        self.shape = self.codec.latent_shape(self.image_shape)  # the net's, model space
        self.defaults = {**dataclasses.asdict(SampleConfig()), **config.get("sample", {})}

    @property
    def conditioner(self):
        """The denoiser's conditioner (None for an unconditional model)."""
        return getattr(self.denoiser, "conditioner", None)

    @property
    def is_image(self) -> bool:
        """True for image models; 2-D point models give float arrays instead of uint8 images."""
        return len(self.image_shape) == 3

    @property
    def device(self) -> torch.device:
        """Where the denoiser's weights are (CPU for a denoiser without parameters)."""
        params = getattr(self.denoiser, "parameters", lambda: iter(()))()
        first = next(iter(params), None)
        return first.device if first is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Pipeline:
        """Move the denoiser and the codec to `device`."""
        if hasattr(self.denoiser, "to"):
            self.denoiser.to(device)
        self.codec = self.codec.to(device)
        return self

    def settings(
        self,
        *,
        sampler: str | dict | None = None,
        steps: int | None = None,
        discretization: str | dict | None = None,
        guidance: str | Sequence[str | dict] | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> Settings:
        """The config's defaults with every argument that is not None on top."""
        d = self.defaults
        return Settings(
            sampler=_spec(sampler, d["sampler"], "sampler"),
            steps=_count(d["steps"] if steps is None else steps, "steps"),
            discretization=_spec(discretization, d["discretization"], "discretization"),
            guidance=[guidance] if isinstance(guidance, str) else list(guidance or []),
            batch_size=_count(d["batch_size"] if batch_size is None else batch_size, "batch_size"),
            seed=int(d["seed"] if seed is None else seed),
        )

    def stream(
        self,
        n: int | None = None,
        *,
        seed: int | None = None,
        classes: Sequence[int] = (),
        prompts: Sequence[str] = (),
        negative_prompts: Sequence[str] = (),
        images: Sequence[str | Path] | Tensor = (),
        masks: Sequence[str | Path] | Tensor = (),
        aug_level: float | None = None,
        sampler: str | dict | None = None,
        steps: int | None = None,
        discretization: str | dict | None = None,
        guidance: str | Sequence[str | dict] | None = None,
        callback: Callable[[dict], None] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        start: Tensor | None = None,
        sigmas: Tensor | Sequence[float] | None = None,
        step_hook: Callable | None = None,
        aug_noise: bool = True,
        embeddings: Tensor | None = None,
    ) -> tuple[Iterator[Tensor], dict, Settings]:
        """(model-space batches [b, *shape] generated lazily, what each sample asked for, the
        settings): `sample` without holding every sample in memory.

        Arguments left as None take the config's `sample` defaults (n, seed, sampler, steps,
        discretization, batch_size); `guidance` specs ("cfg:scale=3", {"name": ...}) come before
        the config's default guidance. `sampler` / `discretization` is a name, a dict with a
        name, or a dict of options for the default (e.g. {"eta": 0.5}). `classes`, `prompts` and
        `images` (files, or a tensor of uint8 images or pixels in [-1, 1]) condition the
        samples, cycled over n; an inpainting model also takes `masks` (files, white = known, or
        a tensor [n, 1, H, W] in {0, 1}) and pastes the known region back exactly; an SR model
        trained with noise augmentation takes the `aug_level` of its low-res input (default: its
        config's cond.aug_level); `negative_prompts` replace the null condition of CFG (text
        models). `start` [n, *shape] is the model-space state at σ =
        sigmas[0] (editing, e.g. SDEdit: encode(images) + σ₀·noise);
        `sigmas` an explicit grid (samplers.base: it may end above 0); `step_hook(x, i,
        sigma_next)` may return a replacement for x after step i; `callback(info)` sees every
        step; `aug_noise=False` says `images` already carry the noise of `aug_level` (CDM's
        truncated cascade); an unCLIP decoder takes image `embeddings` [k, D] (e.g. a prior's
        samples) in place of `images`. Sample i depends on seed + i only.
        """
        n = _count(self.defaults["n"] if n is None else n, "n")
        s = self.settings(sampler=sampler, steps=steps, discretization=discretization,
                          guidance=guidance, batch_size=batch_size, seed=seed)  # fmt: skip
        cond, chain, asked = self.conditions(
            n, s, device, classes=classes, prompts=prompts, images=_files(images),
            masks=_files(masks), aug_level=aug_level, aug_noise=aug_noise, seed=s.seed,
            negative_prompts=negative_prompts, embeddings=embeddings,
        )  # fmt: skip
        device = self.device
        batches = generate(
            self.denoiser, self.shape, n=n, seed=s.seed, batch_size=s.batch_size,
            sampler=s.sampler, steps=s.steps, discretization=s.discretization, cond=cond,
            guidance=chain, callback=callback, device=device, start=start, sigmas=sigmas,
            step_hook=step_hook,
        )  # fmt: skip
        return self._pasted(batches, cond), asked, s

    def conditions(self, n: int, s: Settings, device: str | torch.device | None = None,
                   **inputs) -> tuple[dict, Any, dict]:  # fmt: skip
        """(cond, guidance chain, what each sample asked for) of n samples under settings `s`
        and request `inputs` (classes, prompts, ...), with the model moved to `device` first."""
        if device is not None:
            self.to(device)
        return request(self.denoiser, self.config, n, guidance=s.guidance, device=self.device,
                       codec=self.codec, **inputs)  # fmt: skip

    def _pasted(self, batches: Iterable[Tensor], cond: dict) -> Iterator[Tensor]:
        """Each batch on the CPU; a Palette model's known region pasted back exactly as given."""
        paste, first = getattr(self.conditioner, "paste", None), 0
        for b in batches:
            b = b.cpu()  # [b, *shape]
            if paste is not None:
                b = paste(b, {k: v[first : first + len(b)].cpu() for k, v in cond.items()})
            first += len(b)
            yield b

    def sample(self, n: int | None = None, **options: Any) -> Samples:
        """Model-space samples with what each asked for (the arguments are `stream`'s)."""
        batches, asked, s = self.stream(n, **options)
        return Samples(torch.cat(list(batches)), asked, s)

    @torch.inference_mode()
    def decode(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Model-space x [n, *shape] → float pixels [n, C, H, W] in [-1, 1] (CPU), in batches."""
        size = batch_size or self.defaults["batch_size"]
        device = self.device
        parts = [self.codec.decode(x[i : i + size].to(device)).cpu()
                 for i in range(0, len(x), size)]  # fmt: skip
        return torch.cat(parts) if parts else x.new_zeros((0, *self.image_shape))

    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        """uint8 images or float pixels in [-1, 1] [n, C, H, W] → model-space x0 [n, *shape]."""
        pixels = uint8_to_pixels(images) if images.dtype == torch.uint8 else images.float()
        if tuple(pixels.shape[1:]) != self.image_shape:
            raise UsageError(
                f"images are {list(pixels.shape[1:])} but this model makes "
                f"{list(self.image_shape)}; resize them to the model's image shape"
            )
        return self.codec.encode(pixels.to(self.device)).cpu()

    def to_images(self, x: Tensor) -> Tensor:
        """Model-space x → uint8 images [n, C, H, W] (point models: float points [n, D])."""
        pixels = self.decode(x)
        return pixels_to_uint8(pixels) if self.is_image else pixels

    def __call__(self, n: int | None = None, **options: Any) -> Tensor:
        """n samples as uint8 images [n, C, H, W] (point models: float [n, D]); the arguments
        are `stream`'s."""
        return self.to_images(self.sample(n, **options).x)

    def __repr__(self) -> str:
        codec = self.config["model"].get("codec") or {"name": "identity"}
        return (
            f"Pipeline(image_shape={list(self.image_shape)}, shape={list(self.shape)}, "
            f"codec={codec.get('name', 'file')!r}, cond={type(self.conditioner).__name__}, "
            f"sampler={self.defaults['sampler']['name']!r}, steps={self.defaults['steps']})"
        )


def _files(items: Sequence[str | Path] | Tensor) -> list[str] | Tensor:
    """File names as strings; a tensor as is."""
    return items if isinstance(items, Tensor) else [str(p) for p in items]


def load(path: str | Path, *, device: str | torch.device | None = None,
         allow_pickle: bool = False) -> Pipeline:  # fmt: skip
    """The Pipeline of a model checkpoint (any registered format: a difflab file, a diffusers
    model or pipeline folder) or of a run dir's newest one; `allow_pickle=True` lets a foreign
    folder's pickled weights be read with torch.load(weights_only=True)."""
    denoiser, config, info = load_denoiser(path, allow_pickle=allow_pickle)
    pipe = Pipeline(denoiser, config, info=info)
    return pipe if device is None else pipe.to(device)
