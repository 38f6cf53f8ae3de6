"""Interactive widgets for the sampling notebooks: a guidance explorer, a step scrubber, a
strength slider for img2img, the explorer dashboard and a personalisation explorer (a LoRA's
strength and a prompt that may use a learnt token).

The only sdlearn module that imports ipywidgets. Only APIs that ipywidgets 7 and 8 share are
used (``IntSlider``, ``FloatSlider``, ``Text``, ``Label``, ``Image(value=png bytes)``, ``VBox``,
``HBox``, ``observe(handler, names="value")``), so the widgets run on Colab and JupyterLab alike.
Each function returns the widget with its controls as attributes, so tests (and curious readers)
can drive it from code: ``w.guidance.value = 12`` re-renders exactly as dragging the slider does.

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import torch
from PIL import Image

from .attention import overlay
from .device import make_generator
from .explorer import MODES, Explorer, Settings, size_options
from .images import as_rgb
from .img2img import get_timesteps, img2img
from .plotting import to_pil
from .sampling import StepRecorder, decode, guidance_norms, sample, uses_cfg

if TYPE_CHECKING:
    from .models import Pipeline

__all__ = ["guidance_explorer", "step_scrubber", "strength_explorer", "explorer", "personalisation_explorer"]


def _png_bytes(image: Any, size: int = 256) -> bytes:
    """A picture (anything ``to_pil`` takes) as PNG bytes, scaled so its longer side is ``size``.

    Nearest-neighbour scaling: a 128 px sd-mini picture stays crisp instead of blurry.
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


def _guidance_slider(value: float) -> widgets.FloatSlider:
    return widgets.FloatSlider(value=value, min=0.0, max=20.0, step=0.5, description="guidance",
                               continuous_update=False)


def _strength_slider(value: float, disabled: bool = False) -> widgets.FloatSlider:
    return widgets.FloatSlider(value=value, min=0.05, max=1.0, step=0.05, description="strength",
                               disabled=disabled, continuous_update=False)


def _steps_and_seed(num_inference_steps: int, seed: int) -> tuple[widgets.IntSlider, widgets.IntSlider]:
    steps = widgets.IntSlider(value=num_inference_steps, min=1, max=100, description="steps",
                              continuous_update=False)
    return steps, widgets.IntSlider(value=seed, min=0, max=999, description="seed", continuous_update=False)


def _render_into(box: widgets.VBox, target: widgets.Image, size: int, make: Callable[[], Image.Image]) -> bool:
    """Make a picture (no autograd), show it in ``target`` and count it in ``box.renders``. A bad
    setting's ``ValueError`` goes to ``box.info`` instead of a traceback, and the last picture stays."""
    try:
        with torch.inference_mode():
            pic = make()
    except ValueError as err:
        box.info.value = f"error: {err}"
        return False
    target.value = _png_bytes(pic, size)
    box.renders += 1
    return True


def _wire(render: Callable[..., None], controls: Sequence[widgets.Widget]) -> None:
    """Re-render whenever a control's value changes, and draw the first picture now."""
    for control in controls:
        control.observe(render, names="value")
    render()


def guidance_explorer(pipe: Pipeline, prompt: str = "a red circle on a blue background",
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
    guidance = _guidance_slider(guidance_scale)
    steps, seed_slider = _steps_and_seed(num_inference_steps, seed)
    image = widgets.Image(value=b"", format="png")
    info = widgets.Label(value="")
    box = widgets.VBox([widgets.HBox([box_prompt, box_neg]),
                        widgets.HBox([guidance, steps, seed_slider]), image, info])

    def render(change: Any = None) -> None:
        t0 = time.perf_counter()
        if not _render_into(box, image, size, lambda: sample(
                pipe, box_prompt.value, negative_prompt=box_neg.value or None, num_inference_steps=steps.value,
                guidance_scale=guidance.value, generator=make_generator(seed_slider.value))[0]):
            return
        passes = ("2 rows per UNet call (prompt + unconditional)" if uses_cfg(pipe, guidance.value)
                  else "one row per UNet call (no guidance)")
        info.value = f"{time.perf_counter() - t0:.2f} s; {passes}"

    box.prompt, box.negative_prompt, box.guidance, box.steps, box.seed = (
        box_prompt, box_neg, guidance, steps, seed_slider)
    box.image, box.info, box.renders, box.render = image, info, 0, render
    _wire(render, (box_prompt, box_neg, guidance, steps, seed_slider))
    return box


def _step_png(pipe: Pipeline, steps: Sequence[dict], i: int, key: str, size: int, cache: dict, box: Any) -> bytes:
    """Step ``i``'s latent ``key`` (``model_input`` or ``pred_x0``) decoded to PNG bytes, first
    image of the batch only; decoded once, then served from ``cache`` (``box.decodes`` counts)."""
    if (i, key) not in cache:
        lat = steps[i][key][:1].to(pipe._execution_device, pipe.vae.dtype)
        with torch.inference_mode():
            cache[i, key] = _png_bytes(decode(pipe, lat, "pil")[0], size)
        box.decodes += 1
    return cache[i, key]


def step_scrubber(pipe: Pipeline, record: StepRecorder | Sequence[dict], size: int = 192) -> widgets.VBox:
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


def strength_explorer(pipe: Pipeline, image: Any, prompt: str = "a red circle on the right",
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
    source = as_rgb(image)
    box_prompt = _text(prompt, "prompt")
    strength_slider = _strength_slider(strength)
    steps, seed_slider = _steps_and_seed(num_inference_steps, seed)
    shown_input = widgets.Image(value=_png_bytes(source, size), format="png")
    image_out = widgets.Image(value=b"", format="png")
    info = widgets.Label(value="")
    box = widgets.VBox([box_prompt, widgets.HBox([strength_slider, steps, seed_slider]),
                        widgets.HBox([widgets.VBox([widgets.Label(value="input"), shown_input]),
                                      widgets.VBox([widgets.Label(value="img2img"), image_out])]),
                        info])

    def render(change: Any = None) -> None:
        t0 = time.perf_counter()
        if not _render_into(box, image_out, size, lambda: img2img(
                pipe, box_prompt.value, source, strength=strength_slider.value, num_inference_steps=steps.value,
                guidance_scale=guidance_scale, generator=make_generator(seed_slider.value))[0]):
            return
        n_run, n_skip = get_timesteps(steps.value, strength_slider.value)
        t_first = float(pipe.scheduler.timesteps[n_skip * pipe.scheduler.order])
        info.value = (f"{time.perf_counter() - t0:.2f} s; ran {n_run} of {steps.value} steps "
                      f"from t = {t_first:.0f} (skipped {n_skip})")

    box.prompt, box.strength, box.steps, box.seed = box_prompt, strength_slider, steps, seed_slider
    box.input, box.image, box.info, box.renders, box.render = shown_input, image_out, info, 0, render
    _wire(render, (box_prompt, strength_slider, steps, seed_slider))
    return box


def _thumb(size: int) -> int:
    return size * 2 // 3  # the side of the scrubber's and the attention map's pictures


def _picture_box(px: int) -> widgets.Image:  # a fixed size: ipywidgets 8 would stretch it
    return widgets.Image(value=b"", format="png", layout=widgets.Layout(width=f"{px}px", height=f"{px}px"))


def _explorer_controls(ex: Explorer, s: Settings, size: int) -> SimpleNamespace:
    """Every widget of the dashboard, named as the attributes of the box ``explorer`` returns."""
    steps, seed = _steps_and_seed(s.num_inference_steps, s.seed)
    small = _thumb(size)
    c = SimpleNamespace(
        prompt=_text(s.prompt, "prompt"), negative_prompt=_text(s.negative_prompt, "negative"),
        guidance=_guidance_slider(s.guidance_scale), steps=steps, seed=seed,
        scheduler=widgets.Dropdown(options=ex.scheduler_names(), value=s.scheduler, description="scheduler"),
        size=widgets.Dropdown(options=size_options(ex.pipe), value=s.size or ex.native, description="size"),
        mode=widgets.Dropdown(options=list(MODES), value=s.mode, description="mode"),
        strength=_strength_slider(s.strength, disabled=s.mode != "img2img"),
        auto=widgets.Checkbox(value=True, description="render on change"),
        generate=widgets.Button(description="Generate", button_style="primary"),
        status=widgets.Label(value=""),
        image=_picture_box(size), x_t=_picture_box(small), x0=_picture_box(small),
        step=widgets.IntSlider(value=0, min=0, max=1, description="step", continuous_update=False),
        token=widgets.Dropdown(options=[], description="token", layout=widgets.Layout(width=f"{small}px")),
        attention=_picture_box(small),
    )
    for w, name in ((c.guidance, "guidance"), (c.auto, "auto"), (c.generate, "generate"), (c.status, "status"),
                    (c.image, "picture"), (c.step, "step"), (c.attention, "attention")):
        w.add_class(f"sdlearn-{name}")  # stable CSS hooks for the browser test (ipywidgets 7 and 8)
    return c


def _explorer_layout(c: SimpleNamespace) -> widgets.VBox:
    """Settings in four rows, then the picture, the step scrubber and the attention map side by side."""
    def column(title: str, *children: widgets.Widget) -> widgets.VBox:
        return widgets.VBox([widgets.Label(value=title), *children])

    return widgets.VBox([
        widgets.HBox([c.prompt, c.negative_prompt]), widgets.HBox([c.guidance, c.steps, c.seed]),
        widgets.HBox([c.scheduler, c.size, c.mode, c.strength]), widgets.HBox([c.generate, c.auto, c.status]),
        widgets.HBox([column("picture", c.image),
                      column("steps: x_t | predicted x0", c.step, widgets.HBox([c.x_t, c.x0])),
                      column("cross-attention of a token", c.token, c.attention)]),
    ])


class _ExplorerHandlers:
    """What the dashboard does when its controls change: render a picture, show a step, show a
    token's map. Reads the controls from ``box`` and counts on it (``renders``, ``decodes``...)."""

    SETTINGS = ("prompt", "negative_prompt", "guidance", "steps", "seed", "scheduler", "size", "mode", "strength")

    def __init__(self, box: widgets.VBox, size: int) -> None:
        self.box, self.size, self.small = box, size, _thumb(size)
        self.busy = False  # a picture is being made
        self.quiet = False  # ranges and options are being updated: no redraw per change
        self.cache: dict[tuple[int, str], bytes] = {}  # decoded steps of the last result

    def wire(self) -> None:
        b = self.box
        for name in self.SETTINGS:
            getattr(b, name).observe(self.on_change, names="value")
        b.generate.on_click(lambda _button: self.render())
        b.step.observe(self.show_step, names="value")
        b.token.observe(self.show_token, names="value")

    def settings(self) -> Settings:
        b = self.box
        return Settings(prompt=b.prompt.value, negative_prompt=b.negative_prompt.value,
                        guidance_scale=b.guidance.value, num_inference_steps=b.steps.value, seed=b.seed.value,
                        scheduler=b.scheduler.value, size=b.size.value, mode=b.mode.value,
                        strength=b.strength.value)

    def on_change(self, change: Any) -> None:
        self.box.strength.disabled = self.box.mode.value != "img2img"
        if self.box.auto.value:
            self.render()

    def render(self, change: Any = None) -> None:
        b = self.box
        if self.busy:
            return  # a click or change while a picture is being made is ignored, not queued
        self.busy, b.generate.disabled, b.generate.description = True, True, "Generating..."
        b.status.value = "generating..."
        try:
            r = b.explorer.run(self.settings())  # checks every setting before computing anything
        except ValueError as err:  # a bad setting: say why, keep the last picture
            b.status.value = f"error: {err}"
            return
        finally:
            self.busy, b.generate.disabled, b.generate.description = False, False, "Generate"
        b.result, b.renders, b.callbacks, self.cache = r, b.renders + 1, len(r.steps), {}
        b.image.value = _png_bytes(r.image, self.size)
        self.quiet = True
        b.step.value = 0
        b.step.max = len(r.steps) - 1
        b.step.value = b.step.max
        keep = b.token.value
        b.token.options = list(r.maps)
        nouns = [t for t in r.maps if t not in ("a", "an", "the", "on", "in", "of", "and")]
        b.token.value = keep if keep in r.maps else (nouns or list(r.maps))[0]
        self.quiet = False
        self.show_step(), self.show_token()
        passes = "2 rows per call (guidance)" if r.unet_passes_per_step == 2 else "1 row per call (no guidance)"
        b.status.value = "; ".join([f"render {b.renders}: {r.seconds:.2f} s", f"{len(r.steps)} UNet calls",
                                    passes, *r.notes])

    def show_step(self, change: Any = None) -> None:
        b, r = self.box, self.box.result
        if self.quiet or r is None:
            return
        for key, target in (("model_input", b.x_t), ("pred_x0", b.x0)):
            target.value = _step_png(b.explorer.pipe, r.steps, b.step.value, key, self.small, self.cache, b)

    def show_token(self, change: Any = None) -> None:
        b, r = self.box, self.box.result
        if self.quiet or r is None or b.token.value not in r.maps:
            return
        b.attention.value = _png_bytes(overlay(r.image, r.maps[b.token.value]), self.small)


def explorer(pipe: Pipeline, settings: Settings | None = None, init_image: Any = None,
             size: int = 256) -> widgets.VBox:
    """The playground: every sampling setting as a control, and side by side the picture, the
    step scrubber (x_t and predicted x0 of any step) and the attention map of a chosen token.

    Controls (attributes of the returned box): ``prompt``, ``negative_prompt``, ``guidance``,
    ``steps``, ``seed``, ``scheduler``, ``size``, ``mode`` (txt2img / img2img), ``strength``
    (img2img only), ``auto`` (re-render on every change; else only on ``generate``), the
    ``generate`` button (disabled while a picture is being made), ``status`` (time, or the error
    of a bad setting — nothing is computed then, and the last picture stays). Outputs: ``image``,
    ``step``, ``x_t``, ``x0``, ``token``, ``attention``; counters ``renders``, ``callbacks``
    (callback dicts of the last run) and ``decodes``; ``result`` is the last
    ``sdlearn.explorer.Result``, ``explorer`` the ``sdlearn.explorer.Explorer`` that makes them.

    Introduced in notebooks/10_explorer.ipynb.
    """
    ex = Explorer(pipe, init_image)
    controls = _explorer_controls(ex, settings or Settings(scheduler=ex.own_scheduler()), size)
    box = _explorer_layout(controls)
    for name, w in vars(controls).items():
        setattr(box, name, w)
    box.explorer, box.renders, box.callbacks, box.decodes, box.result = ex, 0, 0, 0, None
    handlers = _ExplorerHandlers(box, size)
    handlers.wire()
    box.render = handlers.render
    box.render()
    return box


def _learnt_tokens(pipe: Pipeline) -> list[str]:
    """The tokens added to the tokenizer after training (textual inversion's ``<heart>``), not its
    own special tokens."""
    special = set(pipe.tokenizer.all_special_tokens)
    return sorted(t for t in pipe.tokenizer.get_added_vocab() if t not in special)


def personalisation_explorer(pipe: Pipeline, adapter: str | None = "heart", prompt: str = "a red heart",
                             weight: float = 1.0, num_inference_steps: int = 25, guidance_scale: float = 7.5,
                             seed: int = 0, size: int = 256) -> widgets.VBox:
    """A LoRA's strength as a slider and a prompt box, and the picture ``sdlearn.sampling.sample``
    makes from them, re-rendered when a control is released. A textual-inversion token loaded
    into ``pipe`` (``"<heart>"``) can be typed into the prompt like any word.

    ``adapter`` is the name given to ``pipe.load_lora_weights(..., adapter_name=...)``; before each
    picture ``pipe.set_adapters([adapter], adapter_weights=[w])`` sets its strength (0: exactly the
    base model; the setting stays on ``pipe`` afterwards). ``adapter=None``: no LoRA, the slider is
    disabled. The info line says the time, the strength and which learnt tokens the prompt uses.
    The box has ``prompt``, ``weight``, ``seed``, ``image``, ``info``, ``renders`` and ``render()``.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    if adapter is not None:
        loaded = sorted({name for names in pipe.get_list_adapters().values() for name in names})
        if adapter not in loaded:
            raise ValueError(f"no LoRA adapter {adapter!r} on this pipeline (loaded: {loaded or 'none'}); "
                             "load one with pipe.load_lora_weights(folder, adapter_name=...)")
    box_prompt = _text(prompt, "prompt")
    weight_slider = widgets.FloatSlider(value=weight, min=0.0, max=2.0, step=0.1, description="LoRA weight",
                                        disabled=adapter is None, continuous_update=False)
    _, seed_slider = _steps_and_seed(num_inference_steps, seed)
    image = widgets.Image(value=b"", format="png")
    info = widgets.Label(value="")
    box = widgets.VBox([box_prompt, widgets.HBox([weight_slider, seed_slider]), image, info])

    def make() -> Image.Image:
        if adapter is not None:
            pipe.set_adapters([adapter], adapter_weights=[weight_slider.value])
        return sample(pipe, box_prompt.value, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, generator=make_generator(seed_slider.value))[0]

    def render(change: Any = None) -> None:
        t0 = time.perf_counter()
        if not _render_into(box, image, size, make):
            return
        lora = "no LoRA" if adapter is None else f"LoRA {adapter!r} at {weight_slider.value:g}"
        used = [t for t in _learnt_tokens(pipe) if t in box_prompt.value]
        info.value = f"{time.perf_counter() - t0:.2f} s; {lora}; learnt tokens in the prompt: {', '.join(used) or 'none'}"

    box.prompt, box.weight, box.seed = box_prompt, weight_slider, seed_slider
    box.image, box.info, box.renders, box.render = image, info, 0, render
    _wire(render, (box_prompt, weight_slider, seed_slider))
    return box
