# The course's single entry point. On a fresh machine:
#   make lab    - set up and open the course in JupyterLab (default model: the bundled sd-mini)
#   make test   - set up and run every test and every notebook
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch lies on local disk on the course machines; an unpinned torch would pull a
# multi-GB CUDA build. Override elsewhere, e.g. `make TORCH=torch test`. Never install torchvision.
TORCH  ?= torch==2.13.0
JOBS   ?= 2
# One torch thread per process: with JOBS workers on a small machine, torch's default thread
# pool oversubscribes the cores and its spin-waits make small models 10x slower.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadfile

.PHONY: setup lab test test-fast test-browser dashboard-figure notebooks sd-mini sd-mini-clip sd-mini-vae sd-mini-variants bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Containers often run as root, which JupyterLab refuses unless told.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: setup
	$(VENV)/bin/jupyter lab $(LAB_ARGS) notebooks/

# Unit tests and every notebook under nbval (outputs not compared except `# NBVAL_CHECK_OUTPUT` cells).
test: setup
	$(PYTEST) tests/ --nbval-lax --nbval-current-env notebooks/
	@echo "model-agnostic guard: notebooks again on random weights with SD 1.5's sizes (06 and 07"
	@echo "check printed timestep tables that are the default model's scheduler's, so they are left out)"
	SDLEARN_MODEL=tiny $(PYTEST) --nbval-lax --nbval-current-env notebooks/0[1-5]_*.ipynb \
		notebooks/0[89]_*.ipynb notebooks/10_*.ipynb
	@echo "ipywidgets 7.7 (Colab's) instead of 8: the widget tests again"
	rm -rf .ipywidgets7 && $(PY) -m pip install -q --target .ipywidgets7 --no-deps "ipywidgets==7.7.5" \
		ipython_genutils "jupyterlab_widgets<3" "widgetsnbextension<4"
	PYTHONPATH=.ipywidgets7 $(PYTEST) tests/test_explorer.py tests/test_widgets.py tests/test_widgets_img2img.py \
		tests/test_widgets_personalisation.py

test-fast: setup
	$(PYTEST) tests/ -m "not browser"

# The dashboard in a real browser alone (also part of `make test`); needs Debian's chromium:
#   sudo apt-get install chromium
test-browser: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -s -m browser tests/

# Notebook 10's picture of the dashboard for readers without a kernel: drive the real dashboard in
# chromium, then embed its screenshot (test-output/browser/10_dashboard.png) as a cell attachment.
dashboard-figure: setup
	OMP_NUM_THREADS=1 CI=true $(PY) -m pytest -s -m browser tests/test_explorer_browser.py
	$(PY) tests/test_explorer_browser.py

# Re-execute every notebook top to bottom on the default model and CPU, then normalise it.
notebooks: setup
	OMP_NUM_THREADS=1 $(PY) scripts/run_notebooks.py notebooks/*.ipynb

# sd-mini v2, in stages that each fit a working session (resumable: re-run to continue).
# Stage 1, the VAE, is committed (data/stages/sd-mini-v2/vae-blur-ft, weights only; `make
# sd-mini-vae` remakes it, and data/stages/sd-mini-v2/README.md has what each leg measured).
# Stage 2 starts from it: its encoder makes the cached latents of 40,000 world pictures at 128 px
# (16x16 latents), and its decoder ships. On those latents a mini CLIP text encoder is pretrained
# contrastively (`make sd-mini-clip`, committed in data/stages/sd-mini-v2/clip); then the UNet
# from scratch under it, frozen, as SD 1.5 kept CLIP's frozen: offset noise (without it the
# starting noise, not the caption, picks the background at 128 px), lr 2e-3, 10,000 steps; then the
# same run taken on to 18,000, then 26,000 steps, each leg on a longer cosine (it resumes where the
# last leg stopped, and the new schedule's learning rate is back near 9e-4, then 5e-4: two warm
# restarts; shapes 16 % -> 24 % -> 31 % at w = 7.5); last, 1,000 steps from those weights with half
# the kept captions swapped for another picture's (`--caption-noise 0.5`: web captions often miss
# their picture; it loosens the caption's hold, so guidance does the work and PNDM's step is near
# stable again), whose UNet alone ships (stage data/stages/sd-mini-v2/model-captions50).
# (The v1 weights were made by this Makefile's target as of commit c0e20b6, on world v1 at 64 px;
# the first v2 weights, in two legs on the stage-1 VAE `vae/`, as of commit fcf8ee7.)
STAGES ?= data/stages/sd-mini-v2
STAGE1 ?= $(STAGES)/vae-blur-ft
CLIP   ?= $(STAGES)/clip
WORK   ?= data/train-work
LATENTS = test -f $(WORK)/vae.pt || $(PY) -m sdlearn.mini.recipe vae-load --init $(STAGE1) --work $(WORK); \
	test -f $(WORK)/latents.pt || $(PY) -m sdlearn.mini.recipe latents --n 40000 --size 128 --threads 2 --work $(WORK)
sd-mini: setup
	$(LATENTS)
	for n in 10000 18000 26000; do $(PY) -m sdlearn.mini.recipe unet --text-init $(CLIP) --freeze-text \
		--noise-offset 0.1 --lr 2e-3 --steps $$n --threads 2 --work $(WORK) || exit 1; done
	$(PY) -m sdlearn.mini.recipe export --work $(WORK)
	mkdir -p $(WORK)/captions && ln -sf ../latents.pt $(WORK)/captions/latents.pt && ln -sf ../vae.pt $(WORK)/captions/vae.pt
	$(PY) -m sdlearn.mini.recipe unet --init $(MINI) --freeze-text --noise-offset 0.1 --lr 3e-4 \
		--steps 1000 --caption-noise 0.5 --threads 2 --work $(WORK)/captions
	$(PY) -m sdlearn.mini.recipe export --work $(WORK)/captions --out $(WORK)/captions/out
	rm -rf $(MINI)/unet && cp -r $(WORK)/captions/out/unet $(MINI)/unet
	cp $(WORK)/captions/unet_loss.png $(MINI)/unet_captions_loss.png

sd-mini-clip: setup
	$(LATENTS)
	$(PY) -m sdlearn.mini.recipe clip --steps 1200 --threads 2 --work $(WORK) --out $(CLIP)

# Stage 1 itself: v1's VAE (sdlearn/data/sd-mini/vae as of commit c0e20b6, checked out to
# V1_VAE) fine-tuned on world v2 pictures (+10 % photo crops) in two legs, then its decoder alone
# on full pictures (`vae/`); then 1,000 steps on 64 px crops of 128 px pictures whose latents the
# decoder reads half blurred now and then (`vae-blur/`: a smoothed latent still decodes to the
# shape), and its decoder alone with 30 % photo crops (`vae-blur-ft/`, what ships).
V1_VAE ?= $(WORK)/v1-vae
BLUR_VAE = --steps 1000 --batch 8 --crop 64 --pool 40000 --size 128 --latent-blur 0.5
sd-mini-vae: setup
	mkdir -p $(V1_VAE) && for f in config.json diffusion_pytorch_model.safetensors; do \
		git show c0e20b6:sdlearn/data/sd-mini/vae/$$f > $(V1_VAE)/$$f || exit 1; done
	$(PY) -m sdlearn.mini.recipe vae --init $(V1_VAE) --steps 2000 --lr 3e-4 --threads 1 --work $(WORK)/vae-leg1
	$(PY) -m sdlearn.mini.recipe vae-save --work $(WORK)/vae-leg1 --out $(WORK)/vae-leg1/out
	$(PY) -m sdlearn.mini.recipe vae --init $(WORK)/vae-leg1/out --steps 4000 --stop-at 2500 --lr 1e-3 --threads 1 --work $(WORK)/vae-leg2
	$(PY) -m sdlearn.mini.recipe vae-ft --steps 2000 --threads 1 --work $(WORK)/vae-leg2
	$(PY) -m sdlearn.mini.recipe vae-save --work $(WORK)/vae-leg2 --out $(STAGES)/vae
	$(PY) -m sdlearn.mini.recipe vae --init $(STAGES)/vae $(BLUR_VAE) --lr 3e-4 --work $(WORK)/vae-blur
	$(PY) -m sdlearn.mini.recipe vae-save --work $(WORK)/vae-blur --out $(STAGES)/vae-blur
	$(PY) -m sdlearn.mini.recipe vae-load --init $(STAGES)/vae-blur --work $(WORK)/vae-blur-ft
	$(PY) -m sdlearn.mini.recipe vae-ft $(BLUR_VAE) --lr 1e-4 --photo-frac 0.3 --work $(WORK)/vae-blur-ft
	$(PY) -m sdlearn.mini.recipe vae-save --work $(WORK)/vae-blur-ft --out $(STAGE1)

# sd-mini's depth (5-channel) and inpainting (9-channel) UNets, fine-tuned from the shipped
# weights (sdlearn/data/sd-mini) on the latents of the first 12,000 training pictures, scaled as
# the shipped VAE scales them (depth about 13 min on one CPU core, inpainting about 45, after
# 4 + 6 min of encoding; resumable). Their own work folder, so they never pick up a leg's unet.pt by mistake.
# Steps: depth 1,000; inpainting 3,000 (at 1,000 its UNet had not yet learnt to copy the kept
# region: 18 dB outside the mask; the shipped one ran 1,000 steps, then resumed under this schedule).
DEPTH_STEPS ?= 1000
INPAINT_STEPS ?= 3000
VWORK ?= $(WORK)/variants
MINI  ?= sdlearn/data/sd-mini
sd-mini-variants: setup
	mkdir -p $(VWORK)
	test -f $(VWORK)/vae.pt || $(PY) -m sdlearn.mini.recipe vae-load --init $(STAGE1) --work $(VWORK)
	test -f $(VWORK)/latents.pt || $(PY) -m sdlearn.mini.recipe latents --n 12000 --size 128 --threads 2 --work $(VWORK)
	for v in depth:$(DEPTH_STEPS) inpaint:$(INPAINT_STEPS); do n=$${v#*:}; v=$${v%:*}; \
		$(PY) -m sdlearn.mini.variants prepare $$v --threads 1 --init $(MINI) --work $(VWORK) && \
		$(PY) -m sdlearn.mini.variants train $$v --steps $$n --threads 1 --init $(MINI) --work $(VWORK) && \
		$(PY) -m sdlearn.mini.variants export $$v --init $(MINI) --work $(VWORK) || exit 1; \
	done

bench: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/behaviour.py --model mini --threads 1 --out benchmarks/results/behaviour.json
	OMP_NUM_THREADS=1 $(PY) benchmarks/edits.py --n 100 --threads 1
	OMP_NUM_THREADS=1 $(PY) benchmarks/sd_mini.py --out benchmarks/results/sd_mini.json
	OMP_NUM_THREADS=1 $(PY) benchmarks/explorer_latency.py --model mini --threads 1

clean:
	rm -rf $(VENV) build *.egg-info
