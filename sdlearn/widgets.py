"""Interactive widgets for the sampling notebooks: a guidance explorer and a step scrubber.

The only sdlearn module that imports ipywidgets. Only APIs that ipywidgets 7 and 8 share are
used (``IntSlider``, ``FloatSlider``, ``Text``, ``Label``, ``Image(value=png_bytes)``, ``VBox``,
``HBox``, ``observe(handler, names="value")``), so the widgets run on Colab and JupyterLab alike.
Each function returns the widget with its controls as attributes, so tests (and curious readers)
can drive it from code: ``w.guidance.value = 12`` re-renders exactly as dragging the slider does.

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import torch
from PIL import Image

from .device import make_generator
from .plotting import to_pil
from .sampling import StepRecorder, decode, guidance_norms, sample

__all__ = ["png_bytes", "guidance_explorer", "step_scrubber"]


def png_bytes(image: Any, size: int = 256) -> bytes:
    """A picture (anything ``to_pil`` takes) as PNG bytes, scaled so its longer side is ``size``.

    Nearest-neighbour scaling: a 64 px sd-mini picture stays crisp instead of blurry.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    pil = to_pil(image)
    scale = size / max(pil.size)
    if scale != 1:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
                         Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _text(value: str, description: str) -> widgets.Text:
    # continuous_update=False: render once on release/enter, not on every keystroke or pixel.
    return widgets.Text(value=value, description=description, continuous_update=False)


def _steps_and_seed(num_inference_steps: int, seed: int) -> tuple[widgets.IntSlider, widgets.IntSlider]:
    steps = widgets.IntSlider(value=num_inference_steps, min=1, max=100, description="steps",
                              continuous_update=False)
    return steps, widgets.IntSlider(value=seed, min=0, max=999, description="seed", continuous_update=False)


def _wire(render: Any, controls: Sequence[Any]) -> None:
    """Re-render whenever a control's value changes, and draw the first picture now."""
    for control in controls:
        control.observe(render, names="value")
    render()


def guidance_explorer(pipe: Any, prompt: str = "a red circle on a blue background",
                      negative_prompt: str = "", guidance_scale: float = 7.5,
                      num_inference_steps: int = 25, seed: int = 0, size: int = 256) -> widgets.VBox:
    """Sliders for guidance, steps and seed, text boxes for the prompts, and the picture
    ``sdlearn.sampling.sample`` makes from them, re-rendered when a control is released.

    The returned box has the controls as attributes ``prompt``, ``negative_prompt``,
    ``guidance``, ``steps``, ``seed``, the ``image`` (a ``widgets.Image`` of PNG bytes), an
    ``info`` label, ``renders`` (how many pictures were made) and ``render()``.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    box_prompt, box_neg = _text(prompt, "prompt"), _text(negative_prompt, "negative")
    guidance = widgets.FloatSlider(value=guidance_scale, min=0.0, max=20.0, step=0.5,
                                   description="guidance", continuous_update=False)
    steps, seed_slider = _steps_and_seed(num_inference_steps, seed)
    image = widgets.Image(value=b"", format="png")
    info = widgets.Label(value="")
    box = widgets.VBox([widgets.HBox([box_prompt, box_neg]),
                        widgets.HBox([guidance, steps, seed_slider]), image, info])

    def render(change: Any = None) -> None:
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                pic = sample(pipe, box_prompt.value, negative_prompt=box_neg.value or None,
                             num_inference_steps=steps.value, guidance_scale=guidance.value,
                             generator=make_generator(seed_slider.value))[0]
        except ValueError as err:  # bad input: say so in the widget instead of a traceback
            info.value = f"error: {err}"
            return
        image.value = png_bytes(pic, size)
        box.renders += 1
        cfg = "one UNet pass per step (no guidance)" if guidance.value <= 1 else "2 UNet passes per step"
        info.value = f"{time.perf_counter() - t0:.2f} s; {cfg}"

    box.prompt, box.negative_prompt, box.guidance, box.steps, box.seed = (
        box_prompt, box_neg, guidance, steps, seed_slider)
    box.image, box.info, box.renders, box.render = image, info, 0, render
    _wire(render, (box_prompt, box_neg, guidance, steps, seed_slider))
    return box


def _step_png(pipe: Any, steps: Sequence[dict], i: int, key: str, size: int, cache: dict, box: Any) -> bytes:
    """Step ``i``'s latent ``key`` (``model_input`` or ``pred_x0``) decoded to PNG bytes, first
    image of the batch only; decoded once, then served from ``cache`` (``box.decodes`` counts)."""
    if (i, key) not in cache:
        lat = steps[i][key][:1].to(pipe._execution_device, pipe.vae.dtype)
        with torch.inference_mode():
            cache[i, key] = png_bytes(decode(pipe, lat, "pil")[0], size)
        box.decodes += 1
    return cache[i, key]


def step_scrubber(pipe: Any, record: StepRecorder | Sequence[dict], size: int = 192) -> widgets.VBox:
    """Scrub through a recorded sampling run: x_t (left) and the predicted x0 (right), decoded.

    ``record`` is a ``StepRecorder`` (or its ``.steps``) from ``sample(..., callback=rec)``.
    x_t is shown as the UNet sees it (``model_input``: sigma-space schedulers divide by
    sqrt(sigma^2 + 1)), so every scheduler's x_t decodes on the same scale. Pictures are
    decoded when first shown and cached. The box has ``slider``, ``x_t``, ``x0`` (Images),
    ``info`` and ``decodes`` (VAE decodes done so far).

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    steps = list(record.steps if isinstance(record, StepRecorder) else record)
    if not steps:
        raise ValueError("the record is empty: pass a StepRecorder used as sample()'s callback")
    norms = guidance_norms(steps)
    slider = widgets.IntSlider(value=0, min=0, max=len(steps) - 1, description="step",
                               continuous_update=False)
    x_t, x0 = widgets.Image(value=b"", format="png"), widgets.Image(value=b"", format="png")
    info = widgets.Label(value="")
    box = widgets.VBox([slider, widgets.HBox([widgets.VBox([widgets.Label(value="x_t"), x_t]),
                                              widgets.VBox([widgets.Label(value="predicted x0"), x0])]),
                        info])
    cache: dict[tuple[int, str], bytes] = {}

    def picture(i: int, key: str) -> bytes:
        return _step_png(pipe, steps, i, key, size, cache, box)

    def show(change: Any = None) -> None:
        i = slider.value
        x_t.value, x0.value = picture(i, "model_input"), picture(i, "pred_x0")
        g = "no guidance" if norms[i] is None else f"||eps_text - eps_uncond|| = {norms[i]:.3f}"
        info.value = f"step {i + 1}/{len(steps)}, t = {float(steps[i]['t']):.1f}, {g}"

    box.slider, box.x_t, box.x0, box.info, box.decodes, box.show = slider, x_t, x0, info, 0, show
    slider.observe(show, names="value")
    show()
    return box


__all__ += ["strength_explorer"]


def strength_explorer(pipe: Any, image: Any, prompt: str = "a red circle on the right",
                      strength: float = 0.6, num_inference_steps: int = 25,
                      guidance_scale: float = 7.5, seed: int = 0, size: int = 256) -> widgets.VBox:
    """Img2img with sliders: ``strength``, steps and seed, a prompt box, the input picture next to
    ``sdlearn.img2img.img2img``'s output, re-rendered when a control is released.

    The info line says how many of the steps run and from which timestep (diffusers' rule:
    ``int(steps * strength)`` steps run). Bad settings (strength x steps < 1) are reported there
    instead of raising. The box has ``prompt``, ``strength``, ``steps``, ``seed``, ``input``,
    ``image``, ``info``, ``renders`` and ``render()``.

    Introduced in notebooks/06_img2img.ipynb.
    """
    from .img2img import as_rgb, get_timesteps, img2img

    source = as_rgb(image)
    box_prompt = _text(prompt, "prompt")
    strength_slider = widgets.FloatSlider(value=strength, min=0.05, max=1.0, step=0.05,
                                          description="strength", continuous_update=False)
    steps, seed_slider = _steps_and_seed(num_inference_steps, seed)
    shown_input = widgets.Image(value=png_bytes(source, size), format="png")
    image_out = widgets.Image(value=b"", format="png")
    info = widgets.Label(value="")
    box = widgets.VBox([box_prompt, widgets.HBox([strength_slider, steps, seed_slider]),
                        widgets.HBox([widgets.VBox([widgets.Label(value="input"), shown_input]),
                                      widgets.VBox([widgets.Label(value="img2img"), image_out])]),
                        info])

    def render(change: Any = None) -> None:
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                pic = img2img(pipe, box_prompt.value, source, strength=strength_slider.value,
                              num_inference_steps=steps.value, guidance_scale=guidance_scale,
                              generator=make_generator(seed_slider.value))[0]
        except ValueError as err:
            info.value = f"error: {err}"
            return
        image_out.value = png_bytes(pic, size)
        box.renders += 1
        n_run, n_skip = get_timesteps(steps.value, strength_slider.value)
        t_first = float(pipe.scheduler.timesteps[n_skip * pipe.scheduler.order])
        info.value = (f"{time.perf_counter() - t0:.2f} s; ran {n_run} of {steps.value} steps "
                      f"from t = {t_first:.0f} (skipped {n_skip})")

    box.prompt, box.strength, box.steps, box.seed = box_prompt, strength_slider, steps, seed_slider
    box.input, box.image, box.info, box.renders, box.render = shown_input, image_out, info, 0, render
    _wire(render, (box_prompt, strength_slider, steps, seed_slider))
    return box


__all__ += ["explorer"]


def explorer(pipe: Any, settings: Any = None, init_image: Any = None, size: int = 256) -> widgets.VBox:
    """The playground: every sampling setting as a control, and side by side the picture, the
    step scrubber (x_t and predicted x0 of any step) and the attention map of a chosen token.

    Controls (attributes of the returned box): ``prompt``, ``negative_prompt``, ``guidance``,
    ``steps``, ``seed``, ``scheduler``, ``size``, ``mode`` (txt2img / img2img), ``strength``
    (img2img only), ``auto`` (re-render on every change; else only on ``generate``), the
    ``generate`` button (disabled while a picture is being made), ``status`` (time, or the error
    of a bad setting — nothing is computed then). Outputs: ``image``, ``step``, ``x_t``, ``x0``,
    ``token``, ``attention``; counters ``renders``, ``callbacks`` (callback dicts of the last run)
    and ``decodes``; ``result`` is the last ``sdlearn.explorer.Result``.

    Introduced in notebooks/10_explorer.ipynb.
    """
    from .attention import overlay
    from .explorer import MODES, Explorer, Settings, size_options

    ex = Explorer(pipe, init_image)
    s = settings or Settings(scheduler=ex.own_scheduler())
    cu = dict(continuous_update=False)
    prompt, negative = _text(s.prompt, "prompt"), _text(s.negative_prompt, "negative")
    guidance = widgets.FloatSlider(value=s.guidance_scale, min=0.0, max=20.0, step=0.5,
                                   description="guidance", **cu)
    steps, seed = _steps_and_seed(s.num_inference_steps, s.seed)
    scheduler = widgets.Dropdown(options=ex.scheduler_names(), value=s.scheduler, description="scheduler")
    sizes = size_options(ex.pipe)
    size_dd = widgets.Dropdown(options=sizes, value=s.size or ex.native, description="size")
    mode = widgets.Dropdown(options=list(MODES), value=s.mode, description="mode")
    strength = widgets.FloatSlider(value=s.strength, min=0.05, max=1.0, step=0.05,
                                   description="strength", disabled=s.mode != "img2img", **cu)
    auto = widgets.Checkbox(value=True, description="render on change")
    generate = widgets.Button(description="Generate", button_style="primary")
    status = widgets.Label(value="")
    small = size * 2 // 3

    def picture_box(px: int) -> widgets.Image:  # a fixed size: ipywidgets 8 would stretch it
        return widgets.Image(value=b"", format="png", layout=widgets.Layout(width=f"{px}px", height=f"{px}px"))

    image, x_t, x0, attention = picture_box(size), picture_box(small), picture_box(small), picture_box(small)
    step = widgets.IntSlider(value=0, min=0, max=1, description="step", **cu)
    token = widgets.Dropdown(options=[], description="token", layout=widgets.Layout(width=f"{small}px"))
    for w, name in ((guidance, "guidance"), (auto, "auto"), (generate, "generate"), (status, "status"),
                    (image, "picture"), (step, "step"), (attention, "attention")):
        w.add_class(f"sdlearn-{name}")  # stable CSS hooks for the browser test (ipywidgets 7 and 8)

    def column(title: str, *children: Any) -> widgets.VBox:
        return widgets.VBox([widgets.Label(value=title), *children])

    box = widgets.VBox([
        widgets.HBox([prompt, negative]), widgets.HBox([guidance, steps, seed]),
        widgets.HBox([scheduler, size_dd, mode, strength]), widgets.HBox([generate, auto, status]),
        widgets.HBox([column("picture", image),
                      column("steps: x_t | predicted x0", step, widgets.HBox([x_t, x0])),
                      column("cross-attention of a token", token, attention)]),
    ])
    box.renders, box.callbacks, box.decodes, box.result = 0, 0, 0, None
    state = {"busy": False, "quiet": False, "cache": {}}

    def show_step(change: Any = None) -> None:
        r = box.result
        if state["quiet"] or r is None:
            return
        for key, target in (("model_input", x_t), ("pred_x0", x0)):
            target.value = _step_png(ex.pipe, r.steps, step.value, key, small, state["cache"], box)

    def show_token(change: Any = None) -> None:
        r = box.result
        if state["quiet"] or r is None or token.value not in r.maps:
            return
        attention.value = png_bytes(overlay(r.image, r.maps[token.value]), small)

    def render(change: Any = None) -> None:
        if state["busy"]:
            return  # a click or change while a picture is being made is ignored, not queued
        settings_now = Settings(prompt.value, negative.value, guidance.value, steps.value, seed.value,
                                scheduler.value, size_dd.value, mode.value, strength.value)
        try:
            ex.check(settings_now)
        except ValueError as err:
            status.value = f"error: {err}"
            return
        state["busy"], generate.disabled, generate.description = True, True, "Generating..."
        status.value = "generating..."
        try:
            r = ex.run(settings_now)
        except ValueError as err:
            status.value = f"error: {err}"
            return
        finally:
            state["busy"], generate.disabled, generate.description = False, False, "Generate"
        box.result, box.renders, box.callbacks, state["cache"] = r, box.renders + 1, len(r.steps), {}
        image.value = png_bytes(r.image, size)
        state["quiet"] = True  # update ranges and options without a redraw per change
        step.value = 0
        step.max = len(r.steps) - 1
        step.value = step.max
        keep = token.value
        token.options = list(r.maps)
        nouns = [t for t in r.maps if t not in ("a", "an", "the", "on", "in", "of", "and")]
        token.value = keep if keep in r.maps else (nouns or list(r.maps))[0]
        state["quiet"] = False
        show_step(), show_token()
        passes = "2 UNet passes per step" if r.unet_passes_per_step == 2 else "1 UNet pass per step"
        status.value = "; ".join([f"render {box.renders}: {r.seconds:.2f} s", f"{len(r.steps)} UNet calls",
                                  passes, *r.notes])

    def on_change(change: Any) -> None:
        strength.disabled = mode.value != "img2img"
        if auto.value:
            render()

    for control in (prompt, negative, guidance, steps, seed, scheduler, size_dd, mode, strength):
        control.observe(on_change, names="value")
    generate.on_click(lambda _button: render())
    step.observe(show_step, names="value")
    token.observe(show_token, names="value")
    (box.prompt, box.negative_prompt, box.guidance, box.steps, box.seed, box.scheduler, box.size,
     box.mode, box.strength, box.auto, box.generate, box.status) = (
        prompt, negative, guidance, steps, seed, scheduler, size_dd, mode, strength, auto, generate, status)
    box.image, box.step, box.x_t, box.x0, box.token, box.attention = image, step, x_t, x0, token, attention
    box.explorer, box.render = ex, render
    render()
    return box
