"""Session 25's probe: does a UNet *trained from scratch* with cross-attention at 16x16 learn maps
that sit on their objects, and bind colours better? Two layouts, the same recipe and steps:

- ``shipped``: sd-mini's own layout (ResNets only at 16x16, cross-attention at 8x8 and 4x4);
- ``sd16``: SD 1.5's arrangement at sd-mini's size, cross-attention at the two finer levels
  (16x16, 8x8), a plain lowest level and a mid block without attention (UNetMidBlock2D), so that
  no 4x4 map enters the average that row 9 reads.

The recipe is the base run's (``recipe unet``'s step: batch 64, AdamW, 200 warm-up steps, cosine,
EMA 0.999, captions dropped 10 %, offset noise 0.1, plain MSE, the shipped mini CLIP frozen), on
the variants' 12,000-latent cache, one thread. Not part of the package or the recipe.

    python data/stages/sd-mini-v2/probes/scratch.py WORK LAYOUT STEPS OUT [LR]

WORK holds ``latents.pt`` as ``recipe latents`` writes it; OUT becomes a copy of sdlearn/data/sd-mini
with the new UNet (fp32, EMA weights), for ``benchmarks/behaviour.py --model OUT``.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from sdlearn.mini import recipe
from sdlearn.training import copy_ema, diffusion_loss, fit, noise_scheduler, resume

LAYOUTS = {
    "shipped": {},
    "sd16": {"down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
             "mid_block_type": "UNetMidBlock2D"},
}


def main() -> None:
    work, layout, steps, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else 2e-3
    if layout not in LAYOUTS:
        raise SystemExit(f"layout must be one of {sorted(LAYOUTS)}")
    torch.set_num_threads(1)
    mini = Path("sdlearn/data/sd-mini")
    cfg = {k: v for k, v in UNet2DConditionModel.load_config(mini, subfolder="unet").items() if not k.startswith("_")}
    cfg.update(LAYOUTS[layout])
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(cfg)
    te = CLIPTextModel.from_pretrained(mini, subfolder="text_encoder").float().requires_grad_(False)
    print(f"{layout}: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters", flush=True)
    latents, input_ids, uncond = recipe.load_latents(work)
    sched = noise_scheduler()

    def step_fn(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(step)
        _, x0, ids = recipe.caption_batch(latents, input_ids, uncond, 64, 0.1, gen)
        return diffusion_loss(unet, te, x0, ids, sched, gen, snr_gamma=None, noise_offset=0.1)

    fit(step_fn, list(unet.parameters()), steps, lr=lr, ema_decay=0.999, modules={"unet": unet},
        ckpt=work / "unet.pt", ckpt_every=250, progress=True, desc=layout)
    st = resume(work / "unet.pt")
    unet.load_state_dict(st["unet"])
    copy_ema(list(unet.parameters()), st["ema"])
    log = st["log"]
    print("loss first 100 / last 200:", np.mean([r["loss"] for r in log[:100]]),
          np.mean([r["loss"] for r in log[-200:]]), flush=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(mini, out)
    shutil.rmtree(out / "unet")
    unet.save_pretrained(out / "unet")
    print("wrote", out)


if __name__ == "__main__":
    main()
