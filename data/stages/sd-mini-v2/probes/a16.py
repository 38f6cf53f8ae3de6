"""Session 24's probe a16 (stage README, "Two probes"): sd-mini's shipped UNet with cross-attention
added at the 16x16 level (`both`: the first down and last up block; `down`, `up`: one of them), the
new blocks' proj_out zero-initialised so that step 0 computes the shipped UNet exactly, then
fine-tuned as the caption-noise leg (`recipe unet --caption-noise 0.5`'s step, plain MSE). Not part of
the package or the recipe: kept so the probe can be re-run.

    python data/stages/sd-mini-v2/probes/a16.py WORK STEPS OUT both

WORK holds `latents.pt` (and `vae.pt`) as `recipe latents` writes them; OUT becomes a copy of
sdlearn/data/sd-mini with the widened UNet (fp32), for `benchmarks/behaviour.py --model OUT`.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel
from sdlearn.mini import recipe
from sdlearn.training import fit, diffusion_loss, noise_scheduler, copy_ema, resume
torch.set_num_threads(1)
work = Path(sys.argv[1]); steps = int(sys.argv[2]); out = Path(sys.argv[3]); mode = sys.argv[4]
MINI = Path("sdlearn/data/sd-mini")
old = UNet2DConditionModel.from_pretrained(MINI, subfolder="unet").float()
cfg = dict(old.config)
if mode in ("both", "down"): cfg["down_block_types"] = ["CrossAttnDownBlock2D"] * 3
if mode in ("both", "up"): cfg["up_block_types"] = ["CrossAttnUpBlock2D"] * 3
torch.manual_seed(0)
unet = UNet2DConditionModel.from_config(cfg)
missing, unexpected = unet.load_state_dict(old.state_dict(), strict=False)
assert not unexpected and all(".attentions." in k for k in missing), (missing, unexpected)
for name, m in unet.named_modules():
    if name.endswith("proj_out") and any(k.startswith(name) for k in missing):
        torch.nn.init.zeros_(m.weight); torch.nn.init.zeros_(m.bias)
te = CLIPTextModel.from_pretrained(MINI, subfolder="text_encoder").float().requires_grad_(False)
x = torch.randn(2, 4, 16, 16); c = torch.randn(2, 77, 48)
with torch.no_grad():
    assert torch.equal(old(x, 500, encoder_hidden_states=c).sample, unet(x, 500, encoder_hidden_states=c).sample)
print("new params", len(missing), "same output at step 0: yes", flush=True)
latents, input_ids, uncond = recipe.load_latents(work)
sched = noise_scheduler()
def step_fn(step):
    gen = torch.Generator().manual_seed(step)
    idx, x0, ids = recipe.caption_batch(latents, input_ids, uncond, 64, 0.1, gen, 0.5)
    return diffusion_loss(unet, te, x0, ids, sched, gen, snr_gamma=None, noise_offset=0.1)  # the recipe's plain MSE
fit(step_fn, list(unet.parameters()), steps, lr=3e-4, ema_decay=0.999, modules={"unet": unet, "text_encoder": te},
    ckpt=work / "unet.pt", ckpt_every=250, progress=True, desc="a16")
st = resume(work / "unet.pt")
unet.load_state_dict(st["unet"]); copy_ema(list(unet.parameters()), st["ema"])
log = st["log"]
print("loss first 50 / last 50:", np.mean([r["loss"] for r in log[:50]]), np.mean([r["loss"] for r in log[-50:]]))
if out.exists(): shutil.rmtree(out)
shutil.copytree(MINI, out); shutil.rmtree(out / "unet"); unet.save_pretrained(out / "unet")
print("wrote", out)
