"""Re-create session 18's unfinished ship of `model-10k` in a fresh clone (delete this folder once shipped).

    python data/stages/sd-mini-v2/model-10k/ship-wip/apply.py

1. the stage's weights into sdlearn/data/sd-mini (with the stages' loss curves), the variants' UNets
   into sdlearn/data/sd-mini-depth and -inpaint;
2. its benchmark results into benchmarks/results;
3. the edited notebook cells (notebook_sources.json: cell index -> new source, checked against the
   old source) and the text edits (text.patch: Makefile, README.md, recipe.py, the model card).
Then re-execute the notebooks (their outputs were not saved here) and finish the list in
data/stages/sd-mini-v2/README.md, session 18.
"""
import json
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[4]
STAGES = ROOT / "data/stages/sd-mini-v2"
MODEL = ROOT / "sdlearn/data/sd-mini"

for sub in ("unet", "vae", "text_encoder", "scheduler"):
    shutil.rmtree(MODEL / sub, ignore_errors=True)
    shutil.copytree(STAGES / "model-10k" / sub, MODEL / sub)
shutil.copy(STAGES / "model-10k/model_index.json", MODEL / "model_index.json")
for old in ("unet_loss_leg1.png", "unet_loss_leg2.png"):
    (MODEL / old).unlink(missing_ok=True)
for src, dst in [("model-10k/unet_loss.png", "unet_loss.png"), ("vae-blur/vae_loss.png", "vae_blur_loss.png"),
                 ("vae-blur-ft/vae_ft_loss.png", "vae_blur_ft_loss.png"), ("model-10k/clip_loss.png", "clip_loss.png")]:
    shutil.copy(STAGES / src, MODEL / dst)
for v in ("depth", "inpaint"):
    stage, out = STAGES / f"model-10k-{v}", ROOT / f"sdlearn/data/sd-mini-{v}"
    if stage.exists():
        shutil.rmtree(out / "unet")
        shutil.copytree(stage / "unet", out / "unet")
        shutil.copy(stage / f"unet_{v}_loss.png", out / f"unet_{v}_loss.png")
for f in (STAGES / "model-10k/results").glob("*.json"):
    shutil.copy(f, ROOT / "benchmarks/results" / f.name)
edits = json.loads((HERE / "notebook_sources.json").read_text())
for rel, e in edits.items():
    path = ROOT / rel
    nb = json.loads(path.read_text())
    for i, new in e["new_sources"].items():
        cell = nb["cells"][int(i)]
        assert "".join(cell["source"]) == e["head_sources"][i], (rel, i, "the cell changed since session 18")
        lines = new.split("\n")
        cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
subprocess.run(["git", "apply", str(HERE / "text.patch")], cwd=ROOT, check=True)
print("applied; now re-execute the notebooks (make notebooks) and follow the stage README, session 18")
