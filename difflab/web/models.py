"""The models a folder holds and what each can take: the UI's inputs come from here, discovered
from the Pipeline and the registries (samplers, σ grids, guidance terms), never listed by hand."""

from __future__ import annotations

import inspect
from pathlib import Path

from difflab.core.errors import UsageError
from difflab.core.schedules import DISCRETIZATIONS
from difflab.guidance.chain import GUIDANCES
from difflab.inference.pipeline import Pipeline, load
from difflab.samplers.base import SAMPLERS
from difflab.storage import checkpoint as ckpt
from difflab.storage.formats import find_format
from difflab.web.references import reference_terms


def loadable(path: Path) -> bool:
    """True for a run dir with checkpoints, or a file/folder a registered format reads."""
    if path.is_dir() and ckpt.latest_checkpoint(path) is not None:
        return True
    try:
        find_format(path)
    except (UsageError, OSError):
        return False
    return True


def find_models(root: str | Path, depth: int = 2) -> dict[str, Path]:
    """{label: path} of the models in `root` (itself, or run dirs, model files and folder-format
    models up to `depth` levels down); files inside a run's checkpoints/ count as their run."""
    root = Path(root).resolve()
    if loadable(root) and not root.is_dir() or (root / "checkpoints").is_dir():
        return {root.name: root}
    found, level = {}, [root]
    for _ in range(depth):
        nxt = []
        for folder in level:
            for p in sorted(folder.iterdir()):
                if p.name.startswith(".") or p.name == "checkpoints":
                    continue
                if (p.is_file() and p.suffix == ".safetensors" or p.is_dir()) and loadable(p):
                    found[str(p.relative_to(root))] = p
                elif p.is_dir():
                    nxt.append(p)
        level = nxt
    if not found:
        raise UsageError(
            f"{root} holds no model (no run dir with checkpoints/, no model file a registered "
            "format reads); give a run dir, a model file or a folder of them"
        )
    return dict(sorted(found.items()))


class Models:
    """The models of a folder, with the last one loaded kept in memory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.paths = find_models(root)
        self._loaded: tuple[str, Pipeline] | None = None

    def get(self, label: str) -> tuple[Path, Pipeline]:
        if label not in self.paths:
            raise UsageError(f"unknown model {label!r}; choose one of: {', '.join(self.paths)}")
        if self._loaded is None or self._loaded[0] != label:
            self._loaded = (label, load(self.paths[label]))
        return self.paths[label], self._loaded[1]


def takes_option(registry, name: str, option: str) -> bool:
    """True when registry entry `name` exists and its factory takes keyword `option`."""
    return name in registry and option in inspect.signature(registry.get(name)).parameters


def capabilities(pipe: Pipeline) -> dict:
    """What the UI offers for `pipe`: its inputs, choices and defaults."""
    cond = pipe.conditioner
    takes = tuple(getattr(cond, "takes", ()))
    names = getattr(cond, "class_names", None) or []
    n_classes = getattr(cond, "num_classes", None) or len(names)
    d = pipe.defaults
    return {
        "classes": [(names[k] if k < len(names) else str(k), k) for k in range(n_classes)]
        if "classes" in takes else [],  # fmt: skip
        "prompt": "prompts" in takes,
        "negative": "negative_prompts" in takes,  # CFG's null condition (text models)
        "image_cond": "images" in takes,  # the editor's image conditions the model
        "masks": "masks" in takes,  # a trained inpainting model: the painted mask is `masks`
        "aug_max": float(getattr(cond, "aug_max", 0.0) or 0.0),  # SR noise augmentation
        "aug_level": float(getattr(cond, "aug_level", 0.0) or 0.0),
        "edit": pipe.is_image,  # SDEdit / RePaint on any image model (or its image condition)
        "references": reference_terms(),
        "samplers": SAMPLERS.names(),
        "discretizations": DISCRETIZATIONS.names(),
        "guidances": {n: GUIDANCES.meta(n).get("kind", "") for n in GUIDANCES.names()},
        "sampler": d["sampler"]["name"],
        "sampler_options": {k: v for k, v in d["sampler"].items() if k != "name"},
        "steps": d["steps"],
        "discretization": d["discretization"]["name"],
        "shape": list(pipe.image_shape),
    }
