import numpy as np
import pytest
import torch

from diffusion_rl.algos import DecisionDiffuser
from diffusion_rl.policy import Policy
from diffusion_rl.training import Trainer, TrainerConfig

from .toy import ACT_DIM, OBS_DIM, rollout_return, toy_dataset, toy_store

SMALL = dict(horizon=8, num_steps=50, dim=16, dim_mults=(1, 2), inv_hidden_dim=64)


def _policy(algo: DecisionDiffuser, data) -> Policy:
    return Policy(algo, {k: data.normalizers[k] for k in ("observations", "actions")}, seed=0)


def test_loss_ignores_padding_and_history_and_reports_parts():
    torch.manual_seed(0)
    algo = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL)
    batch = toy_dataset(8).sample_batch(16, torch.Generator().manual_seed(0))
    out = algo.loss(batch)
    assert set(out) == {"loss", "diffusion_loss", "inv_loss"}
    assert torch.allclose(out["loss"], 0.5 * out["diffusion_loss"] + 0.5 * out["inv_loss"])
    # padded steps carry no gradient signal: changing them leaves the inverse-dynamics loss unchanged
    padded = dict(batch, mask=torch.ones_like(batch["mask"]))
    padded["mask"][:, -3:] = 0
    moved = dict(padded, actions=padded["actions"].clone())
    moved["actions"][:, -2:] += 5.0
    assert torch.allclose(algo.loss(padded)["inv_loss"], algo.loss(moved)["inv_loss"])
    # ... nor diffusion loss: a denoiser that predicts the data exactly except at padded or known (history) rows
    # scores 0; wrong at a real row to be generated, it does not
    torch.manual_seed(0)
    algo = DecisionDiffuser(OBS_DIM, ACT_DIM, **{**SMALL, "prediction": "sample", "history": 3})
    x0 = padded["observations"]

    class Predicts(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, x, t, cond=None, drop_mask=None):
            return self.out

    def diffusion_loss_with(rows):
        out = x0.clone()
        out[:, rows] += 1.0
        algo.net = Predicts(out)
        return float(algo.loss(padded)["diffusion_loss"])

    assert diffusion_loss_with([]) < 1e-10
    assert diffusion_loss_with([0, 1, 2]) < 1e-10  # the 3 known history rows
    assert diffusion_loss_with([-3, -2, -1]) < 1e-10  # the padded rows
    assert diffusion_loss_with([3]) > 0.01  # a real row to be generated


def test_plan_inpaints_current_state_exactly():
    torch.manual_seed(0)
    algo = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL).eval()
    obs = torch.randn(5, OBS_DIM)
    out = algo.plan(obs, generator=torch.Generator().manual_seed(1), steps=5)
    assert torch.equal(out.observations[:, 0], obs)
    assert out.actions.shape == (5, ACT_DIM) and out.trajectory.shape == (5, 8, OBS_DIM)


def test_an_episodes_first_states_are_padded_as_in_training():
    """With a history of K states, planning before K are known repeats the first state in the missing rows and
    keeps the current state at row K - 1, which is what the training windows that start before their episode show
    the network (so no plan comes from rows it never learned)."""
    from diffusion_rl.pipeline import _sequence_dataset

    torch.manual_seed(0)
    algo = DecisionDiffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=16, dim_mults=(1, 2), history=3).eval()
    s0, s1 = torch.randn(2, OBS_DIM), torch.randn(2, OBS_DIM)
    first = algo.plan(s0, generator=torch.Generator().manual_seed(1), steps=2)
    assert first.now == 2 and algo.plan_now(1) == 2
    torch.testing.assert_close(first.observations[:, :3], s0[:, None].expand(-1, 3, -1), rtol=0, atol=0)
    second = algo.plan(s1, history=torch.stack([s0, s1], dim=1), generator=torch.Generator().manual_seed(1), steps=2)
    torch.testing.assert_close(second.observations[:, :3], torch.stack([s0, s0, s1], dim=1), rtol=0, atol=0)
    data = _sequence_dataset(algo, toy_store(), 8, {"normalizer": "gaussian"}, "cpu")
    batch = data.gather(torch.arange(len(data)))
    start = batch["timestep"] == -2  # windows that start two steps before their episode
    assert start.any()
    obs = batch["observations"][start]
    torch.testing.assert_close(obs[:, 0], obs[:, 2], rtol=0, atol=0)  # the first state repeated
    assert (batch["mask"][start][:, :2] == 0).all() and (batch["mask"][start][:, 2] == 1).all()


def test_history_must_fit_in_horizon():
    with pytest.raises(ValueError, match="history"):
        DecisionDiffuser(OBS_DIM, ACT_DIM, horizon=4, history=4)


def test_asking_for_a_high_return_achieves_more_and_low_temperature_narrows_the_plans():
    """Learning test (< 90 s on 2 cores): the return condition steers behaviour in the toy problem, and the
    sampling temperature scales the spread of the planned first actions from one state."""
    torch.manual_seed(0)
    data = toy_dataset(8, return_label="quantile")
    algo = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL)
    cfg = TrainerConfig(max_steps=1500, batch_size=64, lr=2e-3, warmup_steps=50, ema_decay=0.99, ema_every=1,
                        progress=False, log_every=500)
    Trainer(algo, data, cfg).fit()
    policy = _policy(algo, data)
    starts = np.stack([np.linspace(-0.4, 0.4, 16), np.zeros(16)], axis=-1)
    high, mid, low = (rollout_return(policy, starts, target_return=q, guidance_weight=0.5).mean()
                      for q in (0.95, 0.5, 0.05))
    # the data's per-step rewards are about +-0.5 or +-0.9: 12 steps give returns of about +-6 to +-11
    # (measured: 8.6, -3.1, -8.9 for quantile targets 0.95, 0.5, 0.05)
    assert high > 4.0 and low < -4.0, (high, low)
    assert high > mid + 3.0 and mid > low + 3.0, (high, mid, low)
    # 64 plans from one state: the spread of the first actions shrinks with the temperature (measured std
    # 0.151, 0.072, 0.033 at 1, 0.5, 0.25) and vanishes at 0 (deterministic DDIM from the mean)
    one = np.repeat(np.array([[0.0, 0.5]]), 64, axis=0)

    def spread(temperature: float) -> float:
        policy.reset()
        return float(policy.plan(one, temperature=temperature, target_return=0.9).actions.std())

    s1, s05, s025, s0 = spread(1.0), spread(0.5), spread(0.25), spread(0.0)
    assert s05 < 0.75 * s1 and s025 < 0.75 * s05 and s0 < 1e-5, (s1, s05, s025, s0)


def test_bad_targets_and_temperatures_name_the_range():
    algo = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL).eval()
    obs = torch.zeros(2, OBS_DIM)
    for bad in (1.5, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"target_return must be a number in \[0, 1\]"):
            algo.plan(obs, steps=2, target_return=bad)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match=r"temperature must be a finite float >= 0"):
            algo.plan(obs, steps=2, temperature=bad)
    with pytest.raises(ValueError, match="guidance_weight must be a finite number"):
        algo.plan(obs, steps=2, guidance_weight=float("nan"))
    data = toy_dataset(8, return_label="quantile")
    with pytest.raises(ValueError, match=r"sampling setting target_return: expected a number in \[0, 1\]"):
        _policy(algo, data).act(np.zeros(OBS_DIM), target_return=2.0)
    assert algo.plan(obs, steps=2, target_return=np.float32(0.5)).actions.shape == (2, ACT_DIM)  # numpy numbers
    with pytest.raises(ValueError, match=r"obs must have shape \[B, 2\] .*history=\[B, k, 2\]\), got \(2, 3, 2\)"):
        algo.plan(torch.zeros(2, 3, OBS_DIM), steps=2)  # was an opaque expand() error


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cond_drop": 1.5}, r"cond_drop must be a number in \[0, 1\] \(the probability of dropping the returns"),
    ({"cond_drop": -1.0}, r"cond_drop must be a number in \[0, 1\]"),
    ({"diffusion_weight": float("nan")}, "diffusion_weight must be a finite number"),
    ({"inv_weight": -3.0}, r"inv_weight must be a finite number >= 0 \(a loss weight\)"),
])
def test_training_settings_that_would_train_nonsense_are_refused(kwargs, message):
    """A drop probability outside [0, 1] silently meant always or never unconditional; a NaN or negative loss
    weight made every step NaN or ascended its loss."""
    with pytest.raises(ValueError, match=message):
        DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL, **kwargs)


def test_inverse_dynamics_noise_makes_the_head_lean_on_the_current_state():
    """inv_noise trains the head on noisy next states: it then moves its action less with the planned next state
    (an imprecise plan pulls the action less far), while the clean-trained head follows it closely."""
    data = toy_dataset(8)
    batch = data.sample_batch(256, torch.Generator().manual_seed(5))
    s, s_next = batch["observations"][:, 0], batch["observations"][:, 1]
    sensitivity = {}
    for noise in (0.0, 0.5):
        torch.manual_seed(0)
        algo = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL, inv_noise=noise, diffusion_weight=0.0)
        assert algo.config()["inv_noise"] == noise
        Trainer(algo, data, TrainerConfig(max_steps=150, batch_size=64, lr=3e-3, progress=False,
                                          log_every=150)).fit()
        with torch.no_grad():
            moved = algo.inv(s, s_next + 0.1) - algo.inv(s, s_next)
        sensitivity[noise] = moved.abs().mean().item()
    assert sensitivity[0.5] < 0.3 * sensitivity[0.0], sensitivity  # measured 0.003 against 0.082
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="inv_noise"):
            DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL, inv_noise=bad)


def test_behavior_cloning_fits_the_toy_actions():
    from diffusion_rl.algos import BehaviorCloning

    torch.manual_seed(0)
    data = toy_dataset(1, returns=False)
    algo = BehaviorCloning(OBS_DIM, ACT_DIM, hidden_dim=64)
    first = float(algo.loss(data.sample_batch(256, torch.Generator().manual_seed(1)))["loss"])
    Trainer(algo, data, TrainerConfig(max_steps=300, batch_size=128, lr=3e-3, progress=False, log_every=100)).fit()
    last = float(algo.loss(data.sample_batch(256, torch.Generator().manual_seed(1)))["loss"])
    # the toy's action is its last action (obs[1]) plus small noise, except at each episode's first step
    assert last < 0.25 * first, (first, last)
