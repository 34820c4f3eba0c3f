"""The UI's event handlers: plain methods of `Session` (the tests call them directly).

Sampling runs in a worker thread; `generate` yields x̂0 previews and a progress bar as the
steps come, the gallery at the end. Library errors become `gr.Error` messages in the page.
"""

from __future__ import annotations

import html
import logging
import queue
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

from difflab.core.config import parse_value
from difflab.core.errors import UsageError
from difflab.core.pngmeta import read_png_meta
from difflab.inference.provenance import checkpoint_sha256, model_file
from difflab.web import jobs
from difflab.web.models import Models, capabilities
from difflab.web.references import spec_text, with_references

EDIT_FIELDS = ("strength", "jump_length", "resample", "aug_level")  # edit options a PNG restores
PNG_FIELDS = 12 + len(EDIT_FIELDS)  # form fields `settings_from_png` updates

log = logging.getLogger("difflab.web")


def progress_html(done: int, total: int, note: str = "") -> str:
    """A <progress> bar with 'step done/total'."""
    text = f"step {done}/{total}" + (f" · {html.escape(note)}" if note else "")
    return f'<progress value="{done}" max="{max(total, 1)}"></progress> <span>{text}</span>'


def parse_options(text: str) -> dict:
    """'eta=0.5, s_churn=10' → {"eta": 0.5, "s_churn": 10}."""
    out = {}
    for item in (p.strip() for p in (text or "").split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"sampler option {item!r} is not key=value; write e.g. eta=0.5")
        out[key.strip()] = parse_value(value.strip())
    return out


def lines(text: str | None) -> list[str]:
    """The non-empty lines of a text box, stripped."""
    return [p.strip() for p in (text or "").splitlines() if p.strip()]


def editor_parts(editor) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(init image [H, W, C], painted mask [H, W] bool or None) of an ImageEditor value."""
    if not editor or editor.get("background") is None:
        return None, None
    image = np.asarray(editor["background"])
    painted = [np.asarray(layer)[..., -1] > 0 for layer in editor.get("layers") or []
               if layer is not None and np.asarray(layer).ndim == 3]  # fmt: skip
    mask = np.any(painted, axis=0) if painted else None
    return image[..., :3] if image.ndim == 3 else image, mask if mask is not None and mask.any() else None


class Session:
    """The models of a folder, where results go, and the running job of each browser session."""

    def __init__(self, root: str | Path, out: str | Path):
        self.models = Models(root)
        self.out = Path(out)
        self.running: dict[str, jobs.Job] = {}
        self.preview_seconds = 0.25  # at most ~4 previews a second (the last step always)

    def recent(self, limit: int = 24) -> list[str]:
        """The newest result PNGs (the gallery when a page opens), newest run first."""
        runs = sorted((p for p in self.out.glob("[0-9]" * 5) if p.is_dir()), reverse=True)
        return [str(f) for run in runs for f in sorted(run.glob("*.png"))][:limit]

    # -------------------------------------------------------------- model choice
    def model_inputs(self, label: str) -> tuple:
        """Updates of the inputs that depend on the model (visibility, choices, defaults)."""
        _, pipe = self.models.get(label)
        cap = capabilities(pipe)
        opts = ", ".join(f"{k}={v}" for k, v in cap["sampler_options"].items())
        return (
            gr.update(choices=cap["classes"], value=[], visible=bool(cap["classes"])),
            gr.update(visible=cap["prompt"]),
            gr.update(visible=cap["negative"]),
            gr.update(visible=cap["edit"]),
            gr.update(choices=cap["samplers"], value=cap["sampler"]),
            gr.update(value=opts),
            gr.update(value=cap["steps"]),
            gr.update(choices=cap["discretizations"], value=cap["discretization"]),
            f"{label}: {pipe!r}",
            gr.update(visible=not cap["image_cond"]),
            gr.update(visible=cap["aug_max"] > 0, maximum=max(cap["aug_max"], 1e-3),
                      value=cap["aug_level"]),
        )

    # -------------------------------------------------------------- sampling
    def job(self, label, sampler, options, steps, discretization, guidance, seed, n, classes,
            prompt, negative, editor, mask_image, strength, preview_every, jump_length=1,
            resample=1, aug_level=None, refs=None) -> tuple:  # fmt: skip
        """(model path, pipeline, Job) of the form's values; UsageError on bad input."""
        path, pipe = self.models.get(label)
        cap = capabilities(pipe)
        if sampler not in cap["samplers"]:
            raise UsageError(f"unknown sampler {sampler!r}; choose one of: {', '.join(cap['samplers'])}")
        prompts = lines(prompt)
        if cap["prompt"] and not prompts and not classes:
            raise UsageError("this model is text-conditional and the prompt is empty; write a prompt")
        negatives = lines(negative) if cap["negative"] else []
        given = {k: v for k, v in (("classes", [int(c) for c in classes or []]),
                                   ("prompts", prompts), ("negative_prompts", negatives)) if v}  # fmt: skip
        image, mask = editor_parts(editor)
        if mask_image is not None:
            if image is None:
                raise UsageError("a mask was given without an init image; upload the image to edit")
            mask_arr = np.asarray(mask_image)
            mask = (mask_arr[..., :3].mean(-1) if mask_arr.ndim == 3 else mask_arr) > 127
            jobs.check_mask(image, mask)
        refs = [getattr(f, "name", f) for f in refs or []]
        guidance = with_references(guidance or "", refs, self.out / "references")
        job = jobs.Job(n=int(n), seed=int(seed), sampler={"name": sampler, **parse_options(options)},
                       steps=int(steps), discretization=discretization, guidance=guidance,
                       given=given, image=image, mask=mask, strength=float(strength),
                       jump_length=int(jump_length or 1), resample=int(resample or 1),
                       aug_level=None if aug_level is None or not cap["aug_max"] else float(aug_level),
                       preview_every=max(1, int(preview_every)),
                       preview_seconds=self.preview_seconds)  # fmt: skip
        return path, pipe, job

    def generate(self, *form, request: gr.Request | None = None):
        """Yields (preview, progress, gallery files) while sampling; the gallery last."""
        try:
            path, pipe, job = self.job(*form)
        except UsageError as err:
            raise gr.Error(str(err), print_exception=False) from None
        key = getattr(request, "session_hash", None) or "local"
        self.running[key] = job
        events: queue.Queue = queue.Queue()

        def work():
            try:
                paths = jobs.run(pipe, path, job, self.out,
                                 on_step=lambda d, t, p: events.put(("step", d, t, p)))
                events.put(("done", paths))
            except BaseException as err:  # noqa: B036 (handed to the generator below)
                events.put(("error", err))

        threading.Thread(target=work, daemon=True).start()
        done, total, last, sent = 0, 0, None, -float("inf")
        try:
            while True:
                kind, *rest = events.get()
                if kind == "step":
                    done, total, image = rest
                    while not events.empty() and events.queue[0][0] == "step":  # catch up
                        done, total, newer = events.get()[1:]
                        image = newer if newer is not None else image
                    last = image if image is not None else last
                    if image is None and time.perf_counter() - sent < self.preview_seconds:
                        continue  # progress alone: at the previews' pace (each yield costs)
                    sent = time.perf_counter()
                    yield (gr.skip() if image is None else image), progress_html(done, total), gr.skip()
                elif kind == "done":
                    # the last step's preview was sent with it: not encoded and sent again
                    shown = gr.skip() if last is not None else None
                    yield shown, progress_html(total, total, "done"), [str(p) for p in rest[0]]
                    return
                else:
                    yield from self._failed(rest[0], last, done, total)
                    return
        finally:
            job.cancel.set()  # the page went away, or gradio cancelled the event: stop the thread
            self.running.pop(key, None)

    @staticmethod
    def _failed(err: BaseException, last, done: int, total: int):
        if isinstance(err, jobs.Cancelled):
            yield last, progress_html(done, total, "cancelled"), gr.skip()
            return
        if isinstance(err, UsageError):
            raise gr.Error(str(err), print_exception=False)
        log.error("sampling failed", exc_info=err)
        raise gr.Error(f"sampling failed: {type(err).__name__}: {err}", print_exception=False)

    def cancel(self, request: gr.Request | None = None) -> str:
        """Stop this session's job at its next step."""
        job = self.running.get(getattr(request, "session_hash", None) or "local")
        if job is None:
            return "nothing is running"
        job.cancel.set()
        return "cancelling at the next step"

    # -------------------------------------------------------------- settings from a PNG
    # the form fields a PNG fills: model, sampler, options, steps, σ grid, guidance, seed, n,
    # classes, prompt, negative prompt, the EDIT_FIELDS, and the status line
    def settings_from_png(self, file) -> tuple:
        """Form updates from the settings a dropped difflab PNG carries."""
        if file is None:
            return tuple(gr.skip() for _ in range(PNG_FIELDS))
        try:
            meta = read_png_meta(getattr(file, "name", file))
        except UsageError as err:
            raise gr.Error(str(err), print_exception=False) from None
        label = self.find_model(meta)
        inputs, edit = meta.get("inputs", {}), meta.get("edit", {})
        sampler = dict(meta["sampler"])
        return (
            gr.update(value=label) if label else gr.skip(),
            gr.update(value=sampler.pop("name")),
            ", ".join(f"{k}={v}" for k, v in sampler.items()),
            meta["steps"],
            gr.update(value=(meta.get("discretization") or {}).get("name")),
            spec_text(meta.get("guidance", [])),
            int(meta["seed"]) + int(meta.get("index", 0)),
            int(meta.get("n", 1)),
            gr.update(value=inputs.get("classes", [])),
            "\n".join(inputs.get("prompts", [])),
            "\n".join(inputs.get("negative_prompts", [])),
            *(gr.update(value=edit[k]) if k in edit else gr.skip() for k in EDIT_FIELDS),
            f"loaded settings of a {meta.get('edit', {}).get('kind', 'sample')} "
            f"from {'model ' + label if label else 'an unknown model (sha256 ' + meta['sha256'][:12] + '…)'}",
        )

    def find_model(self, meta: dict) -> str | None:
        """The label of the listed model that made the image (path first, then sha256)."""
        for label, path in self.models.paths.items():
            if str(model_file(path)) == meta.get("checkpoint"):
                return label
        for label, path in self.models.paths.items():
            if checkpoint_sha256(model_file(path)) == meta.get("sha256"):
                return label
        return None
