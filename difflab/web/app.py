"""The page: Gradio Blocks over a `Session` — model, inputs, sampling settings, live x̂0
preview with a progress bar, cancel, a gallery, and settings loaded from a dropped PNG."""

from __future__ import annotations

import gradio as gr

from difflab.web.callbacks import Session
from difflab.web.models import capabilities

CSS = ".pixels img, #preview img { image-rendering: pixelated; } progress { width: 70%; }"
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")  # no font file fetched from anywhere
MONO_FONTS = ("ui-monospace", "Consolas", "monospace")


def theme() -> gr.themes.Base:
    """Gradio's base theme with system fonts only (the default pulls in web fonts)."""
    return gr.themes.Base(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def build_app(session: Session) -> gr.Blocks:
    """The Blocks app of `session` (launch it with `serve.launch`)."""
    labels = list(session.models.paths)
    _, pipe = session.models.get(labels[0])
    cap = capabilities(pipe)
    guidance_help = ", ".join(f"{n} ({k})" for n, k in cap["guidances"].items())
    with gr.Blocks(title="difflab", analytics_enabled=False) as app:
        gr.Markdown("## difflab · sample, guide and edit")
        with gr.Row():
            with gr.Column(scale=1):
                model = gr.Dropdown(labels, value=labels[0], label="model")
                about = gr.Markdown(f"{labels[0]}: {pipe!r}")
                classes = gr.Dropdown(cap["classes"], multiselect=True, label="class (empty: every "
                                      "class in turn)", visible=bool(cap["classes"]))  # fmt: skip
                prompt = gr.Textbox(label="prompt (one per line, cycled)", lines=2,
                                    visible=cap["prompt"])  # fmt: skip
                negative = gr.Textbox(label="negative prompt (one per line, cycled)",
                                      visible=cap["negative"])  # fmt: skip
                with gr.Group(visible=cap["edit"]) as edit:
                    editor = gr.ImageEditor(label="init image (SDEdit), or the model's input "
                                            "image; paint a mask to inpaint", type="numpy",
                                            height=260, elem_classes="pixels")  # fmt: skip
                    mask = gr.Image(label="or upload a mask (white = repaint)", type="numpy",
                                    image_mode="L", height=140)  # fmt: skip
                    strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="strength (SDEdit)")
                    with gr.Row(visible=not cap["image_cond"]) as travel:
                        jump = gr.Number(1, precision=0, minimum=1, label="RePaint jump length")
                        resample = gr.Number(1, precision=0, minimum=1, label="RePaint resample "
                                             "(1 = replace only)")  # fmt: skip
                    aug = gr.Slider(0.0, max(cap["aug_max"], 1e-3), value=cap["aug_level"],
                                    label="noise augmentation of the low-res input (aug_level)",
                                    visible=cap["aug_max"] > 0)  # fmt: skip
                with gr.Row():
                    sampler = gr.Dropdown(cap["samplers"], value=cap["sampler"], label="sampler",
                                          allow_custom_value=True)  # checked by the callback
                    options = gr.Textbox(label="sampler options (key=value, ...)", value=", ".join(
                        f"{k}={v}" for k, v in cap["sampler_options"].items()))  # fmt: skip
                with gr.Row():
                    steps = gr.Number(cap["steps"], precision=0, minimum=1, label="steps")
                    discretization = gr.Dropdown(cap["discretizations"], value=cap["discretization"],
                                                 label="σ grid")  # fmt: skip
                guidance = gr.Textbox(label="guidance chain (e.g. cfg:scale=3; join with +)",
                                      info=f"registered: {guidance_help}")  # fmt: skip
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="seed (sample i uses seed + i)")
                    n = gr.Number(4, precision=0, minimum=1, label="batch size")
                    every = gr.Number(2, precision=0, minimum=1, label="preview every N steps")
                refs = gr.File(label="reference images (ref= of guidance terms "
                               f"{', '.join(cap['references'])} that name none)",
                               file_count="multiple", file_types=["image"], type="filepath",
                               height=90)  # fmt: skip
                png = gr.File(label="load settings from a difflab PNG", file_types=[".png"],
                              type="filepath", height=90)  # fmt: skip
            with gr.Column(scale=1):
                with gr.Row():
                    run = gr.Button("Generate", variant="primary")
                    stop = gr.Button("Cancel", variant="stop")
                progress = gr.HTML(label="progress")
                preview = gr.Image(label="x̂0 preview", elem_id="preview", height=280,
                                   interactive=False)  # fmt: skip
                gallery = gr.Gallery(session.recent, label="gallery (PNGs carry their settings)",
                                     columns=4,
                                     height=300, elem_classes="pixels", format="png")  # fmt: skip
                status = gr.Markdown()
        form = [model, sampler, options, steps, discretization, guidance, seed, n, classes,
                prompt, negative, editor, mask, strength, every, jump, resample, aug, refs]  # fmt: skip
        model.change(session.model_inputs, model, [classes, prompt, negative, edit, sampler,
                                                   options, steps, discretization, about, travel,
                                                   aug])  # fmt: skip
        run.click(session.generate, form, [preview, progress, gallery], api_name="generate",
                  concurrency_limit=1, concurrency_id="sampling")  # fmt: skip
        stop.click(session.cancel, None, status, queue=False, api_name="cancel")
        png.upload(session.settings_from_png, png, [model, sampler, options, steps,
                   discretization, guidance, seed, n, classes, prompt, negative, strength, jump,
                   resample, aug, status])  # fmt: skip
    return app
