"""Every algorithm trains and plans with flow matching by one setting, ``process="flow"``, with no code of its own:
the same loss entry point, samplers, guidance, inpainting and artifacts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_rl.algos import DecisionDiffuser, Diffuser, DiffusionPolicy, algorithm_from_config
from diffusion_rl.diffusion import FlowPath, NoiseSchedule
from diffusion_rl.policy import Policy
from diffusion_rl.training import Trainer, TrainerConfig

from .toy import ACT_DIM, OBS_DIM, rollout_return, toy_dataset

BUILD = {
    "decision_diffuser": lambda **kw: DecisionDiffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=20, dim=8,
                                                        dim_mults=(1, 2), inv_hidden_dim=16, **kw),
    "diffuser": lambda **kw: Diffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=20, dim=8, dim_mults=(1, 2),
                                      value_dim=32, value_dim_mults=(1, 2), **kw),
    "diffusion_policy": lambda **kw: DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, obs_steps=2, num_steps=20,
                                                     down_dims=(16, 32), step_embed_dim=16, **kw),
}
CLASSIC = {"decision_diffuser": "epsilon", "diffuser": "sample", "diffusion_policy": "epsilon"}


@pytest.mark.parametrize("name", sorted(BUILD))
def test_process_flow_switches_the_path_and_the_target(name: str) -> None:
    torch.manual_seed(0)
    classic, flow = BUILD[name](), BUILD[name](process="flow")
    assert isinstance(classic.schedule, NoiseSchedule) and classic.prediction == CLASSIC[name]
    assert isinstance(flow.schedule, FlowPath) and flow.schedule.num_steps == 20
    assert flow.prediction == "velocity" and flow.config()["process"] == "flow"
    assert flow.config()["prediction"] == "velocity"  # recorded resolved, so an artifact rebuilds it exactly
    rebuilt = algorithm_from_config(name, flow.config())
    assert isinstance(rebuilt.schedule, FlowPath) and rebuilt.prediction == "velocity"
    assert BUILD[name](process="flow", prediction="sample").prediction == "sample"
    with pytest.raises(ValueError, match="prediction 'epsilon' is not defined for process='flow'"):
        BUILD[name](process="flow", prediction="epsilon")
    with pytest.raises(ValueError, match=r"process: unknown 'ode'; expected one of \['diffusion', 'flow'\]"):
        BUILD[name](process="ode")


@pytest.mark.parametrize("name", sorted(BUILD))
@pytest.mark.parametrize("sampler", ["euler", "heun", "ddim", "ddpm", "dpmsolver++"])
def test_every_sampler_plans_a_flow_model_and_inpainting_holds(name: str, sampler: str) -> None:
    torch.manual_seed(0)
    algo = BUILD[name](process="flow").eval()
    obs = torch.randn(3, OBS_DIM)
    settings = {"sampler": sampler, **({} if sampler == "ddpm" else {"steps": 4})}
    if name == "diffuser":
        settings["num_plans"] = 2
    if name == "diffusion_policy":
        obs = torch.randn(3, 2, OBS_DIM)
    out = algo.plan(obs, generator=torch.Generator().manual_seed(0), **settings)
    assert torch.isfinite(out.action_chunk).all()
    if name == "decision_diffuser":  # the current state is inpainted exactly
        assert torch.equal(out.observations[:, 0], obs)
    if name == "diffuser":
        assert torch.equal(out.trajectory[:, 0, ACT_DIM:], obs)


def test_a_flow_policy_round_trips_through_an_artifact(tmp_path) -> None:
    torch.manual_seed(0)
    data = toy_dataset(2)
    algo = BUILD["decision_diffuser"](process="flow")
    policy = Policy(algo, {k: data.normalizers[k] for k in ("observations", "actions")},
                    sampling={"sampler": "heun", "steps": 3}, seed=0)
    obs = np.zeros((2, OBS_DIM), dtype=np.float32)
    expected = policy.plan(obs).actions
    loaded = Policy.load(policy.save(tmp_path / "p"))
    assert isinstance(loaded.algo.schedule, FlowPath) and loaded.sampler == "heun"
    loaded.reset(seed=0)
    np.testing.assert_array_equal(loaded.plan(obs).actions, expected)
    loaded.sampler = "euler"  # any sampler of the registry applies to a flow artifact
    assert np.all(np.isfinite(loaded.act(obs)))


def test_flow_matching_decision_diffuser_follows_its_return_condition() -> None:
    """Learning test (< 90 s on 2 cores), the flow-matching twin of the Decision Diffuser's return-steering test:
    asking for a high return achieves more than asking for a low one (Euler, 10 steps, guidance)."""
    torch.manual_seed(0)
    data = toy_dataset(8, return_label="quantile")
    algo = DecisionDiffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=50, dim=16, dim_mults=(1, 2), inv_hidden_dim=64,
                            process="flow")
    cfg = TrainerConfig(max_steps=1500, batch_size=64, lr=2e-3, warmup_steps=50, ema_decay=0.99, ema_every=1,
                        progress=False, log_every=500)
    Trainer(algo, data, cfg).fit()
    policy = Policy(algo, {k: data.normalizers[k] for k in ("observations", "actions")}, seed=0,
                    sampling={"sampler": "euler", "steps": 10})
    starts = np.stack([np.linspace(-0.4, 0.4, 16), np.zeros(16)], axis=-1)
    high, mid, low = (rollout_return(policy, starts, target_return=q, guidance_weight=0.5).mean()
                      for q in (0.95, 0.5, 0.05))
    assert high > 4.0 and low < -4.0, (high, low)
    assert high > mid + 3.0 and mid > low + 3.0, (high, mid, low)
