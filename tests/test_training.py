"""The training core, one test per formula: the LR schedule, EMA, checkpoints, the min-SNR
loss, and the loop's resume (an interrupted run continues exactly as if never stopped)."""
import math
from types import SimpleNamespace

import pytest
import torch

from sdlearn import training
from sdlearn.architectures import SD15_SCHEDULER


# ----------------------------------------------------------------------------- lr_at
def test_lr_warmup_is_linear():
    base, warmup = 1e-3, 100
    assert training.lr_at(0, 1000, base, warmup) == pytest.approx(base / warmup)
    assert training.lr_at(49, 1000, base, warmup) == pytest.approx(base * 50 / warmup)
    assert training.lr_at(warmup - 1, 1000, base, warmup) == pytest.approx(base)


def test_lr_cosine_then_floor():
    base, warmup, total = 1e-3, 100, 1100
    assert training.lr_at(warmup, total, base, warmup) == pytest.approx(base)  # the peak
    s = warmup + 250  # a quarter of the way down: cos(pi/4)
    expected = base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert training.lr_at(s, total, base, warmup) == pytest.approx(expected)
    assert training.lr_at(warmup + 500, total, base, warmup) == pytest.approx(base * (0.05 + 0.95 * 0.5))
    assert training.lr_at(total, total, base, warmup) == pytest.approx(0.05 * base)  # the floor, not 0
    lrs = [training.lr_at(s, total, base, warmup) for s in range(warmup, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and min(lrs) > 0.05 * base


# ----------------------------------------------------------------------------- EMA
def test_ema_update_formula():
    torch.manual_seed(0)
    params = [torch.randn(3, 4), torch.randn(5)]
    ema = [torch.randn(3, 4), torch.randn(5)]
    d = 0.9
    expected = [d * e + (1 - d) * p for e, p in zip(ema, params)]
    training.ema_update(ema, params, d)
    for e, x in zip(ema, expected):
        assert torch.allclose(e, x, atol=1e-7)


def test_ema_decay_at_is_diffusers_ema_warmup():
    from diffusers.training_utils import EMAModel

    for decay in (0.9, 0.999):
        ref = EMAModel([torch.nn.Parameter(torch.zeros(1))], decay=decay)
        # EMAModel counts its updates from 1 (it increments before asking get_decay); fit from 0
        assert [training.ema_decay_at(s, decay) for s in range(12000)] == \
            [ref.get_decay(s + 1) for s in range(12000)]
    assert training.ema_decay_at(0, 0.999) == 0.0  # the first update copies the weights
    assert training.ema_decay_at(8989, 0.999) < 0.999 == training.ema_decay_at(8990, 0.999)
    with pytest.raises(ValueError, match="decay"):
        training.ema_decay_at(5, 1.0)


def test_fit_ema_is_the_warmed_up_average():
    """fit's EMA equals the average computed by hand from the weights after every step, with
    ``ema_decay_at``'s decays, and it holds none of the random initial weights."""
    model, step_fn = _toy()
    init = [p.detach().clone() for p in model.parameters()]
    seen = []

    def recording(step):
        if step:  # the weights the previous step left
            seen.append([p.detach().clone() for p in model.parameters()])
        return step_fn(step)

    state = training.fit(recording, model.parameters(), 30, lr=1e-2, warmup=5, ema_decay=0.99, progress=False)
    seen.append([p.detach().clone() for p in model.parameters()])
    ema = [p.clone() for p in init]
    for step, weights in enumerate(seen):
        training.ema_update(ema, weights, training.ema_decay_at(step, 0.99))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(state["ema"], ema))
    plain = [p.clone() for p in init]  # a fixed decay from step 0 keeps 0.99**30 = 74 % of the init
    for weights in seen:
        training.ema_update(plain, weights, 0.99)
    last = list(model.parameters())
    gap = lambda avg: sum((a - p).norm() for a, p in zip(avg, last))  # noqa: E731
    assert gap(state["ema"]) < 0.5 * gap(plain)


def test_copy_ema_writes_parameters():
    lin = torch.nn.Linear(3, 2)
    ema = [torch.full_like(p, 7.0) for p in lin.parameters()]
    training.copy_ema(lin.parameters(), ema)
    assert all((p == 7).all() for p in lin.parameters()) and lin.weight.requires_grad
    with pytest.raises(ValueError):  # a different model must not half-load
        training.copy_ema(lin.parameters(), ema[:1])


# ----------------------------------------------------------------------------- save / resume
def test_save_resume_round_trip(tmp_path):
    path = tmp_path / "sub" / "ck.pt"
    assert training.resume(path) is None
    training.save(path, step=3, w=torch.arange(4))
    st = training.resume(path)
    assert st["step"] == 3 and torch.equal(st["w"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temporary file left behind


def test_interrupted_save_keeps_last_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    training.save(path, step=1)

    def dies_midway(obj, f):
        open(f, "wb").write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        training.save(path, step=2)
    monkeypatch.undo()
    assert training.resume(path)["step"] == 1


# ----------------------------------------------------------------------------- the objective
def test_noise_scheduler_is_sd15s():
    sched = training.noise_scheduler()
    for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type"):
        assert sched.config[k] == SD15_SCHEDULER[k]


def _stub_models():
    """A 'UNet' whose prediction is a fixed function of its input, a 'text encoder' that echoes ids:
    the loss can then be computed by hand."""
    seen = {}

    def unet(inp, t, encoder_hidden_states):
        seen["inp"], seen["cond"] = inp, encoder_hidden_states
        return SimpleNamespace(sample=0.5 * inp[:, :4] + inp[:, 4:].sum(1, keepdim=True))

    return unet, lambda ids: (ids.float()[..., None],), seen


@pytest.mark.parametrize("gamma", [5.0, None])
def test_diffusion_loss_by_hand(gamma):
    sched = training.noise_scheduler()
    unet, te, seen = _stub_models()
    x0, ids, extra = torch.randn(6, 4, 8, 8), torch.randint(0, 100, (6, 77)), torch.randn(6, 2, 8, 8)
    loss = training.diffusion_loss(unet, te, x0, ids, sched, torch.Generator().manual_seed(3),
                                   snr_gamma=gamma, extra=extra)
    gen = torch.Generator().manual_seed(3)  # the same draws, in the same order
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (6,), generator=gen)
    abar = sched.alphas_cumprod[t]
    x_t = abar.sqrt()[:, None, None, None] * x0 + (1 - abar).sqrt()[:, None, None, None] * noise
    pred = 0.5 * x_t + extra.sum(1, keepdim=True)  # extra channels reach the UNet un-noised
    mse = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    snr = abar / (1 - abar)
    weight = torch.minimum(snr, torch.tensor(5.0)) / snr if gamma else torch.ones(6)
    assert torch.allclose(loss, (weight * mse).mean(), rtol=1e-5)
    assert seen["inp"].shape == (6, 6, 8, 8) and torch.equal(seen["inp"][:, 4:], extra)
    assert torch.equal(seen["cond"][..., 0], ids.float())


def test_noise_offset_by_hand():
    """Offset noise: one extra constant per sample and channel, drawn after the noise."""
    sched = training.noise_scheduler()
    unet, te, _ = _stub_models()
    x0, ids = torch.randn(6, 4, 8, 8), torch.randint(0, 100, (6, 77))
    loss = training.diffusion_loss(unet, te, x0, ids, sched, torch.Generator().manual_seed(3),
                                   snr_gamma=None, noise_offset=0.1)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=gen)
    noise = noise + 0.1 * torch.randn((6, 4, 1, 1), generator=gen)  # constant over the 8x8 places
    t = torch.randint(0, 1000, (6,), generator=gen)
    abar = sched.alphas_cumprod[t][:, None, None, None]
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    assert torch.allclose(loss, ((0.5 * x_t - noise) ** 2).mean(), rtol=1e-5)
    plain = training.diffusion_loss(unet, te, x0, ids, sched, torch.Generator().manual_seed(3), snr_gamma=None)
    assert not torch.allclose(loss, plain)  # and offset 0 (the default) draws no offset at all


def test_spatial_weight_by_hand():
    """``weight`` multiplies each latent place's squared error; all-ones is the plain loss."""
    sched = training.noise_scheduler()
    unet, te, _ = _stub_models()
    x0, ids = torch.randn(6, 4, 8, 8), torch.randint(0, 100, (6, 77))
    weight = 1 + 3 * (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    loss = training.diffusion_loss(unet, te, x0, ids, sched, torch.Generator().manual_seed(3),
                                   snr_gamma=None, weight=weight)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (6,), generator=gen)
    abar = sched.alphas_cumprod[t][:, None, None, None]
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    assert torch.allclose(loss, (weight * (0.5 * x_t - noise) ** 2).mean(), rtol=1e-5)
    plain = training.diffusion_loss(unet, te, x0, ids, sched, torch.Generator().manual_seed(3), snr_gamma=None)
    ones = training.diffusion_loss(unet, te, x0, ids, sched, torch.Generator().manual_seed(3), snr_gamma=None,
                                   weight=torch.ones(6, 1, 8, 8))
    assert torch.allclose(ones, plain)


def test_min_snr_weights_only_the_easy_steps():
    abar = training.noise_scheduler().alphas_cumprod
    snr = abar / (1 - abar)
    w = torch.clamp(snr, max=5.0) / snr
    assert w[-1] == 1 and w[0] < 0.01  # high noise keeps weight 1; low noise is turned down to 5/SNR


# ----------------------------------------------------------------------------- fit
def _toy(seed=0):
    """A tiny regression whose step also draws from torch's *global* generator (as the VAE's
    posterior sampling does), so resuming must restore it too."""
    w_true = torch.randn(4, 1, generator=torch.Generator().manual_seed(0))  # the task: always the same
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def step_fn(step):
        gen = torch.Generator().manual_seed(step)  # the batch: a function of the step
        x = torch.randn(16, 4, generator=gen)
        y = x @ w_true + 0.1 * torch.randn(16, 1)  # noise from the global generator
        loss = (model(x) - y).pow(2).mean()
        return loss, {"y_mean": y.mean().item()}

    return model, step_fn


def test_fit_trains_and_logs():
    model, step_fn = _toy()
    state = training.fit(step_fn, model.parameters(), 40, lr=1e-2, warmup=5, ema_decay=0.9, progress=False)
    log = state["log"]
    assert [r["step"] for r in log] == list(range(40)) and set(log[0]) == {"step", "loss", "y_mean"}
    assert sum(r["loss"] for r in log[-5:]) < sum(r["loss"] for r in log[:5])
    assert state["step"] == 40 and len(state["ema"]) == len(list(model.parameters()))
    assert state["opt"]["param_groups"][0]["lr"] == pytest.approx(training.lr_at(39, 40, 1e-2, 5))


def test_fit_resumed_equals_uninterrupted(tmp_path):
    kw = dict(lr=1e-2, warmup=3, ema_decay=0.8, ckpt_every=4, progress=False)
    model, step_fn = _toy()
    whole = training.fit(step_fn, model.parameters(), 12, modules={"net": model}, ckpt=tmp_path / "a.pt", **kw)

    model, step_fn = _toy()

    def interrupted(step):
        if step == 10:  # after the checkpoint at 8, mid-way between checkpoints
            raise KeyboardInterrupt
        return step_fn(step)

    with pytest.raises(KeyboardInterrupt):
        training.fit(interrupted, model.parameters(), 12, modules={"net": model}, ckpt=tmp_path / "b.pt", **kw)
    assert training.resume(tmp_path / "b.pt")["step"] == 8

    model, step_fn = _toy(seed=1)  # a new process: other initial weights, the global generator elsewhere
    resumed = training.fit(step_fn, model.parameters(), 12, modules={"net": model}, ckpt=tmp_path / "b.pt", **kw)
    assert resumed["log"] == whole["log"]  # losses and logged numbers, bit for bit
    for k in whole["net"]:
        assert torch.equal(resumed["net"][k], whole["net"][k])
    assert all(torch.equal(a, b) for a, b in zip(resumed["ema"], whole["ema"]))
    assert set(training.resume(tmp_path / "b.pt")) == {"net", "opt", "ema", "step", "log", "rng"}


def test_fit_is_done_when_the_checkpoint_is(tmp_path):
    model, step_fn = _toy()
    training.fit(step_fn, model.parameters(), 3, lr=1e-2, modules={"net": model}, ckpt=tmp_path / "c.pt",
                 progress=False)
    state = training.fit(lambda s: pytest.fail("no step left to run"), model.parameters(), 3, lr=1e-2,
                         modules={"net": model}, ckpt=tmp_path / "c.pt", progress=False)
    assert state["step"] == 3 and len(state["log"]) == 3


def test_fit_stop_at_is_the_schedules_first_steps(tmp_path):
    """A leg cut short with ``stop_at`` is the first steps of the full schedule, bit for bit, and
    its checkpoint resumes into the rest of it."""
    kw = dict(lr=1e-2, warmup=3, ema_decay=0.8, ckpt_every=4, progress=False)
    model, step_fn = _toy()
    whole = training.fit(step_fn, model.parameters(), 12, modules={"net": model}, **kw)
    model, step_fn = _toy()
    part = training.fit(step_fn, model.parameters(), 12, modules={"net": model}, ckpt=tmp_path / "s.pt",
                        stop_at=6, **kw)
    assert part["step"] == 6 and part["log"] == whole["log"][:6]
    assert training.resume(tmp_path / "s.pt")["step"] == 6  # saved at the stop, not only every 4
    model, step_fn = _toy(seed=1)
    rest = training.fit(step_fn, model.parameters(), 12, modules={"net": model}, ckpt=tmp_path / "s.pt", **kw)
    assert rest["log"] == whole["log"]


@pytest.mark.parametrize("bad, match", [
    (dict(steps=0), "steps"),
    (dict(stop_at=6), "stop_at"),
    (dict(stop_at=0), "stop_at"),
    (dict(params=[]), "params"),
    (dict(params=[torch.zeros(2)]), "params"),  # a tensor that does not require grad
    (dict(ckpt_every=0), "ckpt_every"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(ckpt="x.pt"), "modules"),
    (dict(modules={"opt": torch.nn.Linear(1, 1)}, ckpt="x.pt"), "taken"),
])
def test_fit_rejects_bad_input_before_any_compute(bad, match):
    lin = torch.nn.Linear(2, 1)
    args = dict(step_fn=lambda s: pytest.fail("stepped"), params=lin.parameters(), steps=5, lr=1e-3,
                progress=False) | bad
    with pytest.raises(ValueError, match=match):
        training.fit(**args)


def test_plot_losses_returns_and_saves(tmp_path):
    log = [{"step": i, "loss": 1 / (i + 1)} for i in range(120)]
    fig = training.plot_losses(log, "loss", tmp_path / "l.png", "toy")
    assert (tmp_path / "l.png").stat().st_size > 0 and fig.axes[0].get_title() == "toy"
    assert len(fig.axes[0].lines) == 2  # raw and smoothed
