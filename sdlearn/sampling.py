"""The Stable Diffusion sampling loop, written out by hand with diffusers' public parts.

It is the loop of ``StableDiffusionPipeline.__call__`` without its many options, in six steps::

    # 1. encode prompt   c, c_uncond = pipe.encode_prompt(...)                  # (B, 77, D) each
    # 2. timesteps       scheduler.set_timesteps(N)                             # (N,) (Heun: 2N-1)
    # 3. initial noise   x_T = randn(...) * scheduler.init_noise_sigma          # (B, 4, H/8, W/8)
    # 4. predict noise   eps = unet(scheduler.scale_model_input(x_t, t), t, c)  # 2B rows with CFG
    # 5. step            x_{t-1} = scheduler.step(eps_guided, t, x_t)
    # 6. decode          image = vae.decode(x_0 / scaling_factor)                # (B, 3, H, W)

Code names and the symbols of the papers (DDPM, Ho et al. 2020; classifier-free guidance, Ho &
Salimans 2022; latent diffusion, Rombach et al. 2022):

=============================  ===========================================================
code                           paper
=============================  ===========================================================
``latents``                    x_t (``x_T`` pure noise, ``x_0`` the clean latent z)
``t = timesteps[i]``           t, counting down from ~T = 1000
``prompt_embeds``              c = tau_theta(y), the text encoder's output for prompt y
``noise_pred_text``            eps_theta(x_t, t, c)
``noise_pred_uncond``          eps_theta(x_t, t, ∅) (∅: the empty or the negative prompt)
``guidance_scale``             w
``noise_pred``                 eps~ = eps_uncond + w * (eps_text - eps_uncond)
``scheduler.betas``            beta_t
``scheduler.alphas_cumprod``   alpha-bar_t = prod_s (1 - beta_s)
``sigma``                      sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t)
``pred_x0``                    x^_0 = (x_t - sqrt(1 - alpha-bar_t) eps~) / sqrt(alpha-bar_t)
``vae.config.scaling_factor``  the latent scale (0.18215 for SD 1.x): z has unit variance
=============================  ===========================================================

``sample`` reproduces the pipeline's pictures exactly: same seed, same scheduler, same image.
Its parts (``encode_text``, ``initial_latents``, ``denoise``, ``decode``) are public so that
img2img and inpainting reuse the one loop: start ``denoise`` part-way (``start_step``), add
channels to the UNet input (``extra_channels``) or edit the latents after each step (``step_hook``).

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from .text import cfg_batch

if TYPE_CHECKING:  # for the signatures only: importing models would load every pipeline class
    from .models import Pipeline

__all__ = ["sample", "check_args", "uses_cfg", "encode_text", "initial_latents", "denoise", "decode",
           "predict_x0", "StepRecorder", "guidance_norms"]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
Callback = Callable[[dict], Any]
StepHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
GuideHook = Callable[[dict], torch.Tensor]


def uses_cfg(pipe: Pipeline, guidance_scale: float) -> bool:
    """Does sampling at ``guidance_scale`` run classifier-free guidance, two UNet rows per picture?

    The pipeline's rule: ``guidance_scale > 1`` and a UNet without a guidance embedding
    (``unet.config.time_cond_proj_dim``). At w <= 1 the guided prediction is the prompt's alone,
    so the unconditional pass is skipped; UNets with a guidance embedding (LCM) take w as an
    input instead of a second pass.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    return guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None


def check_args(pipe: Pipeline, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None,
               height: int | None, width: int | None, num_inference_steps: int,
               guidance_scale: float, generator: Any = None,
               output_type: str = "pil") -> tuple[int, int, int]:
    """Validate ``sample``'s arguments before any compute; return (batch, height, width).

    ``height``/``width`` default to the model's native size, ``unet.config.sample_size`` times
    ``pipe.vae_scale_factor``, and must be multiples of that factor. Raises ``ValueError``.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    if isinstance(prompt, str):
        batch = 1
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        batch = len(prompt)
    else:
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if negative_prompt is not None:
        if isinstance(prompt, str) != isinstance(negative_prompt, str):
            raise ValueError("negative_prompt must be a string when prompt is, a list when prompt is")
        if not isinstance(negative_prompt, str) and len(negative_prompt) != batch:
            raise ValueError(f"got {batch} prompts but {len(negative_prompt)} negative prompts")
    factor = pipe.vae_scale_factor
    native = pipe.unet.config.sample_size * factor
    height = native if height is None else height
    width = native if width is None else width
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, numbers.Integral) or v <= 0 or v % factor:
            raise ValueError(f"{name} must be a positive multiple of {factor} (the VAE's "
                             f"downsampling factor), got {v!r}")
    if not isinstance(num_inference_steps, numbers.Integral) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if not isinstance(guidance_scale, numbers.Real) or not guidance_scale >= 0:  # catches NaN too
        raise ValueError(f"guidance_scale must be a number >= 0 (<= 1: no guidance), "
                         f"got {guidance_scale!r}")
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for {batch} prompts")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    return batch, int(height), int(width)


def encode_text(pipe: Pipeline, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None,
                guidance_scale: float = 7.5, device: torch.device | None = None) -> torch.Tensor:
    """Step 1: the text embeddings for the UNet, ``[uncond; cond]`` stacked (2B, 77, D) with
    guidance, or just ``cond`` (B, 77, D) without (``guidance_scale <= 1``).

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    cfg = uses_cfg(pipe, guidance_scale)
    prompt = prompt if isinstance(prompt, str) else list(prompt)
    negative_prompt = negative_prompt if negative_prompt is None or isinstance(negative_prompt, str) \
        else list(negative_prompt)
    # encode_prompt returns a (cond, uncond) tuple; uncond is None without guidance. An absent
    # negative prompt means the empty prompt "", which is what "unconditional" is in SD.
    device = device or pipe._execution_device
    cond, uncond = pipe.encode_prompt(prompt, device, 1, cfg, negative_prompt)
    return cfg_batch(cond, uncond) if cfg else cond  # [uncond; cond], as the pipeline does


def initial_latents(pipe: Pipeline, batch: int, height: int, width: int, dtype: torch.dtype,
                    generator: Any = None, latents: torch.Tensor | None = None,
                    device: torch.device | None = None) -> torch.Tensor:
    """Step 3: x_T = N(0, I) noise of shape (B, 4, H/8, W/8) times ``scheduler.init_noise_sigma``.

    The noise is drawn with diffusers' ``randn_tensor`` on the *generator's* device, then moved,
    so a CPU generator gives the same x_T on any machine (and the pipeline's x_T exactly). Given
    ``latents`` are used instead of fresh noise, and scaled the same way.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    device = device or pipe._execution_device
    # VAE latent channels, not unet.config.in_channels: an inpainting UNet takes 9 channels, but
    # only 4 of them are latents (equal for a txt2img UNet, where the pipeline reads in_channels).
    shape = (batch, pipe.vae.config.latent_channels, height // pipe.vae_scale_factor,
             width // pipe.vae_scale_factor)
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
    else:
        latents = latents.to(device=device, dtype=dtype)
    # DDPM-style schedulers start at unit variance (1.0); sigma-space ones (Euler, LMS, Heun) at
    # x_T = x_0 + sigma_max * eps, whose std is about sigma_max ~ 14.6 for SD's betas.
    return latents * pipe.scheduler.init_noise_sigma


def predict_x0(scheduler: Any, latents: torch.Tensor, noise_pred: torch.Tensor,
               t: torch.Tensor | float) -> torch.Tensor:
    """The clean latent x^_0 the current noise prediction points at (what the scheduler aims for).

    DDPM-style latents are x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps (ab = alpha-bar_t); sigma-space
    schedulers (``init_noise_sigma > 1``) keep x = x_0 + sigma eps, which is the same up to the
    factor sqrt(sigma^2 + 1) that ``scale_model_input`` divides out. Handles ``epsilon``,
    ``v_prediction`` and ``sample`` models. (Notebook 03's ``sdlearn.unet.pred_x0`` is the
    DDPM-style epsilon case.)

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    acp = scheduler.alphas_cumprod.double().cpu()
    sigma_table = ((1 - acp) / acp).sqrt()
    sigma_space = float(scheduler.init_noise_sigma) > 1
    step_index = getattr(scheduler, "step_index", None)
    if sigma_space and step_index is not None and hasattr(scheduler, "sigmas"):
        sigma = float(scheduler.sigmas[step_index])  # exact, also for Karras-style sigma spacing
    else:  # sigma_t at a (possibly fractional) timestep, interpolated as Euler's set_timesteps does
        tf = float(t)
        lo = min(int(tf), len(acp) - 1)
        hi = min(lo + 1, len(acp) - 1)
        sigma = float(sigma_table[lo] + (tf - lo) * (sigma_table[hi] - sigma_table[lo]))
    x = latents / (sigma ** 2 + 1) ** 0.5 if sigma_space else latents
    a, s = (1 / (sigma ** 2 + 1)) ** 0.5, (sigma ** 2 / (sigma ** 2 + 1)) ** 0.5  # sqrt(ab), sqrt(1-ab)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x - s * noise_pred) / a
    if kind == "v_prediction":
        return a * x - s * noise_pred
    if kind == "sample":
        return noise_pred
    raise ValueError(f"unknown prediction_type {kind!r}")


@torch.no_grad()
def denoise(pipe: Pipeline, latents: torch.Tensor, prompt_embeds: torch.Tensor, guidance_scale: float,
            start_step: int = 0, generator: Any = None, eta: float = 0.0,
            extra_channels: torch.Tensor | None = None, callback: Callback | None = None,
            step_hook: StepHook | None = None, guidance_rescale: float = 0.0,
            guide: GuideHook | None = None) -> torch.Tensor:
    """Steps 4-5, the loop: predict the noise, guide, step; for ``scheduler.timesteps`` from
    ``start_step`` on (call ``scheduler.set_timesteps`` first). Returns the final latents x_0.

    * ``start_step``: skip the first steps (img2img/inpainting start from a partly noised picture,
      the pipeline's ``t_start``); counted in scheduler steps, as ``set_begin_index`` wants.
    * ``extra_channels``: (B, k, h, w) appended to the scaled UNet input (inpainting's mask and
      masked-image latents, depth2img's depth), duplicated for the guidance batch.
    * ``callback(dict)``: called once per UNet evaluation, before the step, with ``i``, ``t``,
      ``latents`` (x_t), ``model_input`` (x_t as the UNet sees it), ``noise_pred_uncond`` (None
      without guidance), ``noise_pred_text``, ``noise_pred`` (guided) and ``pred_x0``.
    * ``step_hook(i, t, latents) -> latents``: after each step, may replace the latents
      (inpainting pastes the known region back).
    * ``guidance_rescale``: diffusers' ``rescale_noise_cfg`` (Lin et al. 2023, arXiv:2305.08891,
      section 3.4) after guidance, as the pipeline applies it: mixes in eps~ rescaled to eps_c's std.
    * ``guide(dict) -> latents``: before each step, with the callback's dict, may move the latents
      the step starts from (loss guidance, ``sdlearn.guidance``).

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    scheduler, unet = pipe.scheduler, pipe.unet
    cfg = uses_cfg(pipe, guidance_scale)
    begin = start_step * scheduler.order
    timesteps = scheduler.timesteps[begin:]
    if start_step and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)  # sigma-space schedulers look up their position by it
    # Only DDIM-like schedulers take eta, only stochastic ones (Euler a, DDPM...) a generator:
    # they draw fresh noise inside step(), which is why the generator is passed on.
    params = inspect.signature(scheduler.step).parameters
    step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}
    if guidance_rescale > 0:  # diffusers' own function; its module loads the pipeline, so only now
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
    if extra_channels is not None and cfg:
        extra_channels = torch.cat([extra_channels] * 2)
    for i, t in enumerate(timesteps):
        # 4. predict noise: one batch holds [uncond; cond] rows, so one UNet call does both.
        model_input = torch.cat([latents] * 2) if cfg else latents  # (2B, 4, H/8, W/8)
        model_input = scheduler.scale_model_input(model_input, t)  # sigma-space: / sqrt(s^2+1)
        unet_input = model_input if extra_channels is None else torch.cat([model_input, extra_channels], 1)
        noise_pred = unet(unet_input, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
        if cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            # eps~ = eps_uncond + w (eps_text - eps_uncond): w = 1 is the prompt alone, w > 1
            # extrapolates away from the unconditional prediction.
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            if guidance_rescale > 0:  # eps~ pulled back towards eps_c's std (over-exposure fix)
                noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=guidance_rescale)
        else:
            noise_pred_uncond, noise_pred_text = None, noise_pred
        if callback is not None or guide is not None:
            info = {"i": i, "t": t, "latents": latents, "model_input": model_input[:len(latents)],
                    "noise_pred_uncond": noise_pred_uncond, "noise_pred_text": noise_pred_text,
                    "noise_pred": noise_pred, "pred_x0": predict_x0(scheduler, latents, noise_pred, t)}
            if callback is not None:
                callback(info)
            if guide is not None:
                latents = guide(info)
        # 5. step: x_t -> x_{t-1}
        latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
        if step_hook is not None:
            latents = step_hook(i, t, latents)
    return latents


@torch.no_grad()
def decode(pipe: Pipeline, latents: torch.Tensor, output_type: str = "pil") -> Any:
    """Step 6: latents -> pictures via ``vae.decode(latents / scaling_factor)`` and
    ``pipe.image_processor.postprocess``. ``output_type``: "pil" (list of PIL images), "np"
    ((B, H, W, 3) floats in [0, 1]), "pt" ((B, 3, H, W) tensor) or "latent" (latents as is).

    The pipeline's safety checker, where it has one (SD 1.5), is applied as in the pipeline.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if output_type == "latent":
        return latents
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]  # [-1, 1]
    nsfw = None
    if getattr(pipe, "safety_checker", None) is not None:
        image, nsfw = pipe.run_safety_checker(image, latents.device, latents.dtype)
    denorm = [True] * len(image) if nsfw is None else [not n for n in nsfw]
    return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=denorm)


def sample(pipe: Pipeline, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None,
           height: int | None = None, width: int | None = None, num_inference_steps: int = 25,
           guidance_scale: float = 7.5, generator: Any = None, latents: torch.Tensor | None = None,
           callback: Callback | None = None, output_type: str = "pil", *, eta: float = 0.0,
           guidance_rescale: float = 0.0) -> Any:
    """Text to image with our own loop; the same pictures as ``pipe(...).images``, bit for bit
    on the CPU, for every scheduler (same seed and scheduler object settings).

    ``callback`` gets one dict per step (see ``denoise``); ``StepRecorder`` keeps them.
    ``guidance_scale <= 1`` skips guidance (one UNet pass), exactly as the pipeline does.
    ``guidance_rescale`` (0..1) is the pipeline's fix for over-exposure at high w (see ``denoise``).

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    batch, height, width = check_args(pipe, prompt, negative_prompt, height, width,
                                      num_inference_steps, guidance_scale, generator, output_type)
    if not isinstance(guidance_rescale, numbers.Real) or not 0 <= guidance_rescale <= 1:
        raise ValueError(f"guidance_rescale must be a number in [0, 1], got {guidance_rescale!r}")
    # Where the models compute (the GPU even under CPU offload). Looked up once: it is a property
    # that walks all components, ~2 ms a call, which alone would make us 1 % slower than diffusers.
    device = pipe._execution_device
    with torch.no_grad():
        embeds = encode_text(pipe, prompt, negative_prompt, guidance_scale, device)  # 1. (2B, 77, D)
        pipe.scheduler.set_timesteps(int(num_inference_steps), device=device)  # 2.
        x = initial_latents(pipe, batch, height, width, embeds.dtype, generator, latents, device)  # 3.
        x = denoise(pipe, x, embeds, guidance_scale, generator=generator, eta=eta,
                    callback=callback, guidance_rescale=guidance_rescale)  # 4.-5.
        images = decode(pipe, x, output_type)  # 6.
    pipe.maybe_free_model_hooks()  # a no-op unless CPU offloading is on, as in the pipeline
    return images


class StepRecorder:
    """A ``callback`` that keeps a CPU copy of every step's dict in ``.steps``.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def __call__(self, step: dict) -> None:
        self.steps.append({k: v.detach().float().cpu().clone() if torch.is_tensor(v) else v
                           for k, v in step.items()})

    def __len__(self) -> int:
        return len(self.steps)

    def guidance_norms(self) -> list[float | None]:
        """``guidance_norms`` of the recorded steps."""
        return guidance_norms(self.steps)


def guidance_norms(steps: Sequence[dict]) -> list[float | None]:
    """||eps_text - eps_uncond|| per recorded step (mean over the batch); None without guidance.

    How far the prompt moves the noise prediction: the quantity guidance multiplies by w.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    return [None if s["noise_pred_uncond"] is None else
            float((s["noise_pred_text"] - s["noise_pred_uncond"]).flatten(1).norm(dim=1).mean())
            for s in steps]
