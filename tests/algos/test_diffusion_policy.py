"""Diffusion Policy: loss on action chunks with masked padding, history padding, action queue, and the point of
it all: multimodal demonstrations stay multimodal (where MSE behaviour cloning averages the modes)."""

import numpy as np
import pytest
import torch

from diffusion_rl.algos import BehaviorCloning, DecisionDiffuser, Diffuser, DiffusionPolicy
from diffusion_rl.data import SequenceDataset
from diffusion_rl.pipeline import _sequence_dataset
from diffusion_rl.policy import Policy
from diffusion_rl.training import Trainer, TrainerConfig

from .toy import ACT_DIM, OBS_DIM, rollout_return, toy_store

SMALL = dict(horizon=8, obs_steps=2, num_steps=50, down_dims=(32, 64), step_embed_dim=32)


def _windows(horizon: int = 8, obs_steps: int = 2) -> SequenceDataset:
    return SequenceDataset(toy_store(), horizon, pad_before=obs_steps - 1, normalizer="minmax", returns=False)


def test_loss_ignores_padded_actions_and_conditions_on_the_first_to_observations():
    torch.manual_seed(0)
    algo = DiffusionPolicy(OBS_DIM, ACT_DIM, **SMALL)
    batch = _windows().sample_batch(16, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    base = algo.loss(batch)["loss"]
    assert set(algo.loss(batch)) == {"loss", "diffusion_loss"}
    # padded steps carry no loss: with every step masked the loss is exactly zero, with half of them about half
    nothing = dict(batch, mask=torch.zeros_like(batch["mask"]))
    assert algo.loss(nothing)["loss"] == 0.0
    half = dict(batch, mask=torch.ones_like(batch["mask"]))
    half["mask"][:, 4:] = 0
    torch.manual_seed(1)
    full_loss = algo.loss(dict(batch, mask=torch.ones_like(batch["mask"])))["loss"]
    torch.manual_seed(1)
    assert 0.3 * full_loss < algo.loss(half)["loss"] < 0.7 * full_loss
    later = dict(batch, observations=batch["observations"].clone())
    later["observations"][:, 2:] += 3.0  # only the first To = 2 observations condition the model
    torch.manual_seed(1)
    assert torch.allclose(base, algo.loss(later)["loss"])


def test_plan_fills_a_short_history_and_returns_the_chunk_from_the_current_step():
    torch.manual_seed(0)
    algo = DiffusionPolicy(OBS_DIM, ACT_DIM, **{**SMALL, "obs_steps": 3}).eval()
    obs = torch.randn(4, OBS_DIM)
    g = torch.Generator().manual_seed(0)
    one = algo.plan(obs, steps=3, generator=g)
    g = torch.Generator().manual_seed(0)
    filled = algo.plan(obs[:, None].expand(-1, 3, -1), steps=3, generator=g)  # the first obs repeated To times
    assert torch.equal(one.action_chunk, filled.action_chunk)
    assert one.action_chunk.shape == (4, 8 - 2, ACT_DIM) and torch.equal(one.actions, one.action_chunk[:, 0])
    assert torch.equal(one.trajectory[:, 2:], one.action_chunk) and one.next_observations is None
    assert one.action_chunk.abs().max() <= 1.0  # clipped to the min-max range
    with pytest.raises(ValueError, match=r"obs_steps \(To=9\) must be <= horizon"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, obs_steps=9)
    with pytest.raises(ValueError, match="unknown backbone"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, backbone="mlp")
    with pytest.raises(ValueError, match=r"action_steps \(Ta=8\) must be in \[1, 6\]"):  # Tp 8, To 3
        Policy(algo, {"observations": _windows().normalizers["observations"],
                      "actions": _windows().normalizers["actions"]},
               execution="action_queue", execution_options={"action_steps": 8})
    transformer = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, backbone="transformer1d", d_model=32, depth=2)
    assert transformer.eval().plan(obs, steps=2).action_chunk.shape == (4, 7, ACT_DIM)


def test_sizes_of_the_backbone_not_in_use_are_refused_not_ignored():
    # a cpu preset's small U-Net sizes with backbone=transformer1d trained the paper's 10M-parameter transformer
    with pytest.raises(ValueError, match=r"down_dims=\[32, 64\] sizes the conditional_unet1d backbone, but this "
                                         r"model uses backbone='transformer1d'; expected down_dims at its default"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, backbone="transformer1d", down_dims=[32, 64], d_model=32)
    with pytest.raises(ValueError, match=r"depth=2 sizes the transformer1d backbone"):
        DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, down_dims=(16, 32), depth=2)
    # the defaults of the other backbone, as a config file spells them (a list), are fine
    DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, backbone="transformer1d", down_dims=[256, 512, 1024], d_model=32,
                    depth=2)


def test_an_artifact_that_recorded_the_unused_backbones_sizes_still_loads(tmp_path, monkeypatch):
    # written before those sizes were refused: a cpu preset's U-Net sizes beside backbone=transformer1d
    import json

    import diffusion_rl.algos.diffusion_policy as module
    from diffusion_rl.algos import algorithm_from_config

    data = _windows()
    with monkeypatch.context() as old_version:  # the constructor of then, which took them silently
        old_version.setattr(module, "_check_unused_sizes", lambda backbone, given: None)
        algo = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, backbone="transformer1d", d_model=32, depth=2,
                               down_dims=[32, 64, 128], step_embed_dim=64)
        path = Policy(algo, {k: data.normalizers[k] for k in ("observations", "actions")}).save(tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    assert config["algo_config"]["down_dims"] == [32, 64, 128]
    loaded = Policy.load(path)
    assert loaded.algo.config()["down_dims"] == [256, 512, 1024] and loaded.algo.config()["d_model"] == 32
    obs = np.zeros((2, OBS_DIM), np.float32)
    np.testing.assert_allclose(loaded.plan(obs).action_chunk, Policy.load(path).plan(obs).action_chunk)
    with pytest.raises(ValueError, match="sizes the conditional_unet1d backbone"):  # new settings are still refused
        DiffusionPolicy(**config["algo_config"])
    assert algorithm_from_config("diffusion_policy", config["algo_config"]).config()["step_embed_dim"] == 256


def test_multimodal_demonstrations_stay_multimodal_where_bc_averages_them():
    """Learning test (< 90 s on 2 cores). At an episode's start the toy's demonstrators pick a speed of -0.9,
    -0.5, +0.5 or +0.9 at random: the first action is multimodal, with nothing in the middle."""
    torch.manual_seed(0)
    data = _windows()
    algo = DiffusionPolicy(OBS_DIM, ACT_DIM, **SMALL)
    cfg = TrainerConfig(max_steps=1500, batch_size=64, lr=2e-3, warmup_steps=50, ema_decay=0.99, ema_every=1,
                        progress=False, log_every=500)
    Trainer(algo, data, cfg).fit()
    policy = Policy(algo, {k: data.normalizers[k] for k in ("observations", "actions")},
                    execution="action_queue", execution_options={"action_steps": 4})
    first = policy.plan(np.zeros((256, OBS_DIM))).actions[:, 0]
    # measured: 135 of 256 below -0.3, 119 above 0.3, 2 in between
    assert (first < -0.3).mean() > 0.25 and (first > 0.3).mean() > 0.25, np.histogram(first, bins=6)
    assert (np.abs(first) < 0.3).mean() < 0.1, np.histogram(first, bins=6)
    # BC on the same data regresses to the mean of the modes
    bc_data = SequenceDataset(toy_store(), 1, returns=False)
    bc = BehaviorCloning(OBS_DIM, ACT_DIM, hidden_dim=64)
    Trainer(bc, bc_data, TrainerConfig(max_steps=300, batch_size=128, lr=3e-3, progress=False,
                                       log_every=100)).fit()
    bc_policy = Policy(bc, {k: bc_data.normalizers[k] for k in ("observations", "actions")})
    assert float(bc_policy.act(np.array([0.0, 0.9]))[0]) > 0.7  # it learned: mid-episode it keeps the speed
    assert abs(float(bc_policy.act(np.zeros(OBS_DIM))[0])) < 0.3  # ... and at the start it averages the modes
    # mid-episode the demonstrators keep their speed: executing chunks of 4 keeps going at +0.9
    starts = np.stack([np.linspace(-0.4, 0.4, 8), np.full(8, 0.9)], axis=-1)
    returns = rollout_return(policy, starts, steps=12)
    assert np.all(returns > 9.0), returns  # 12 steps at +0.9 earn 10.8


@pytest.mark.parametrize("build, message", [
    (lambda: Diffuser(11, -1), r"act_dim: expected an integer >= 1, got -1"),
    (lambda: Diffuser(0, 3), r"obs_dim: expected an integer >= 1, got 0"),
    (lambda: DecisionDiffuser(11, 3, horizon=8.0), r"horizon: expected an integer >= 1, got 8.0"),
    (lambda: DecisionDiffuser(11, 3, dim_mults="12"), r"dim_mults: expected a list of integers >= 1, got '12'"),
    (lambda: BehaviorCloning(11, 3, depth=-1), r"depth: expected an integer >= 0, got -1"),
    (lambda: BehaviorCloning("11", 3), r"obs_dim: expected an integer >= 1, got '11'"),
    (lambda: DiffusionPolicy(11, 3, down_dims=(16, 0)), r"down_dims: expected a list of integers >= 1"),
])
def test_every_algorithm_refuses_nonsense_sizes_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("build", [
    lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, **SMALL),
    lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, obs_steps=2, num_steps=10, backbone="transformer1d",
                            d_model=32, depth=2),
    lambda: DecisionDiffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=16, dim_mults=(1, 2)),
    lambda: Diffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=16, dim_mults=(1, 2), value_dim=16,
                     value_dim_mults=(1, 2)),
    lambda: BehaviorCloning(OBS_DIM, ACT_DIM),
], ids=["dp-unet", "dp-transformer", "dd", "diffuser", "bc"])
def test_every_trained_parameter_gets_a_gradient_from_one_batch(build):
    """What multi-GPU training needs: DDP waits for a gradient of every trainable parameter at every step."""
    torch.manual_seed(0)
    algo = build()
    data = _sequence_dataset(algo, toy_store(), int(algo.config()["horizon"]), {"normalizer": "minmax"}, "cpu")
    batch = data.sample_batch(64, torch.Generator().manual_seed(0))
    algo.loss({k: batch[k] for k in algo.batch_keys})["loss"].backward()
    missing = [name for name, p in algo.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


@pytest.mark.parametrize("weight_decay", [0.0, 1e-6])
def test_a_checkpoint_from_before_the_null_condition_was_frozen_resumes(tmp_path, weight_decay):
    """Checkpoints written while the unused null condition was still in the optimizer resume: its entry is
    dropped and every trained parameter keeps its AdamW moments."""
    data = _windows()
    cfg = dict(max_steps=3, batch_size=8, lr=1e-3, weight_decay=weight_decay, progress=False, device="cpu",
               run_dir=str(tmp_path), checkpoint_every=3)
    torch.manual_seed(0)
    old = DiffusionPolicy(OBS_DIM, ACT_DIM, **SMALL)
    old.net.null_cond.requires_grad_(True)  # as every model was built before
    before = Trainer(old, data, TrainerConfig(**cfg))
    before.fit()
    moments = {name: before.optimizer.state[p]["exp_avg"].clone() for name, p in old.named_parameters()
               if p in before.optimizer.state}
    assert "net.null_cond" not in moments  # it never had a gradient, so no moments either
    torch.manual_seed(1)
    resumed = Trainer(DiffusionPolicy(OBS_DIM, ACT_DIM, **SMALL), data,
                      TrainerConfig(**{**cfg, "max_steps": 4, "resume": True}))
    assert resumed.step == 3
    for name, p in resumed.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(resumed.optimizer.state[p]["exp_avg"], moments[name], rtol=0, atol=0)
    assert resumed.fit()["step"] == 4
