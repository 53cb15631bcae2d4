"""``Policy``: numpy/torch in and out, one observation or a batch, seeds, sampler settings, plans, bad input.

Small untrained planners are enough here: these tests check the deployable face (shapes, units, determinism,
settings, errors), not what a trained planner has learned (tests/algos does that on a toy problem).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from diffusion_rl import Policy
from diffusion_rl.algos import DecisionDiffuser, Diffuser, DiffusionPolicy
from diffusion_rl.artifact import ArtifactError
from diffusion_rl.data import GaussianNormalizer
from diffusion_rl.policy import resolve_device

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, HORIZON = 11, 3, 8
# Raw units far from the normalized ones, so a missing (un)normalization shows up in the numbers.
OBS_MEAN, OBS_STD, ACT_MEAN, ACT_STD = 5.0, 3.0, 100.0, 0.01


def make_normalizers(obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM,
                     seed: int = 0) -> dict[str, GaussianNormalizer]:
    """Gaussian normalizers fitted on random data with known means and scales."""
    rng = np.random.default_rng(seed)
    return {
        "observations": GaussianNormalizer().fit(OBS_MEAN + OBS_STD * rng.normal(size=(500, obs_dim))),
        "actions": GaussianNormalizer().fit(ACT_MEAN + ACT_STD * rng.normal(size=(500, act_dim))),
    }


def make_dd(seed: int = 0) -> DecisionDiffuser:
    torch.manual_seed(seed)
    return DecisionDiffuser(obs_dim=OBS_DIM, act_dim=ACT_DIM, horizon=HORIZON, num_steps=20, dim=16,
                            dim_mults=(1, 2), inv_hidden_dim=32)


def make_diffuser(seed: int = 0, **kwargs) -> Diffuser:
    torch.manual_seed(seed)
    options = {"obs_dim": OBS_DIM, "act_dim": ACT_DIM, "horizon": HORIZON, "num_steps": 20, "dim": 16,
               "dim_mults": (1, 2), "value_dim": 32, "value_dim_mults": (1, 2), **kwargs}
    return Diffuser(**options)


# Few sampler steps and plans keep every act() in the tens of milliseconds on one CPU thread.
FAST = {"decision_diffuser": {"steps": 4}, "diffuser": {"sampler": "ddim", "steps": 4, "num_plans": 4}}
BUILDERS = {"decision_diffuser": make_dd, "diffuser": make_diffuser}


def make_policy(algo: str = "decision_diffuser", seed: int = 0, **kwargs) -> Policy:
    """An untrained small planner of kind ``algo`` behind a Policy with fast sampler settings."""
    return Policy(BUILDERS[algo](), make_normalizers(), env_name="hopper-medium", sampling=dict(FAST[algo]),
                  seed=seed, **kwargs)


def raw_obs(batch: int | None = None, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (OBS_DIM,) if batch is None else (batch, OBS_DIM)
    return (OBS_MEAN + OBS_STD * rng.normal(size=shape)).astype(np.float32)


def differs(a, b) -> bool:
    """Actions differ by over 1% of the action scale (raw actions sit near 100, where allclose is blind)."""
    return bool(np.abs((np.asarray(a, np.float64) - np.asarray(b, np.float64)) / ACT_STD).max() > 1e-2)


class NetCalls:
    """Counts forward passes of a module (the denoiser) while in a ``with`` block."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.count = module, 0

    def __enter__(self) -> "NetCalls":  # noqa: PYI034, UP037
        self.handle = self.module.register_forward_hook(lambda *_: setattr(self, "count", self.count + 1))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


ALGOS = ["decision_diffuser", "diffuser"]


@pytest.fixture(params=ALGOS)
def policy(request) -> Policy:
    return make_policy(request.param)


# --- inputs and outputs -------------------------------------------------------------------------------------


def test_one_numpy_observation_gives_one_raw_numpy_action(policy):
    action = policy.act(raw_obs())
    assert isinstance(action, np.ndarray) and action.shape == (ACT_DIM,) and action.dtype == np.float32
    assert np.all(np.isfinite(action))
    # raw units: the action normalizer's mean 100 and scale 0.01 put untrained outputs within ~0.1 of 100
    assert np.all(np.abs(action - ACT_MEAN) < 0.2), action


def test_batch_of_numpy_observations_gives_batch_of_actions(policy):
    actions = policy.act(raw_obs(batch=5))
    assert isinstance(actions, np.ndarray) and actions.shape == (5, ACT_DIM)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions - ACT_MEAN) < 0.2)
    # the plans of a batch are sampled independently: rows differ
    assert differs(actions[0], actions[1])
    # plain lists and float64 arrays are accepted too
    assert policy.act(raw_obs().astype(np.float64).tolist()).shape == (ACT_DIM,)


def test_torch_in_gives_torch_out(policy):
    single = policy.act(torch.from_numpy(raw_obs()))
    batch = policy.act(torch.from_numpy(raw_obs(batch=3)).double())
    assert torch.is_tensor(single) and single.shape == (ACT_DIM,) and single.dtype == torch.float32
    assert torch.is_tensor(batch) and batch.shape == (3, ACT_DIM) and torch.isfinite(batch).all()
    plan = policy.plan(torch.from_numpy(raw_obs()))
    assert all(torch.is_tensor(v) for v in (plan.actions, plan.action_chunk, plan.observations,
                                            plan.next_observations))


def test_numpy_and_torch_inputs_give_the_same_actions(policy):
    obs = raw_obs(batch=2)
    policy.reset()
    from_numpy = policy.act(obs)
    policy.reset()
    from_torch = policy.act(torch.from_numpy(obs)).numpy()
    np.testing.assert_array_equal(from_numpy, from_torch)


# --- seeds --------------------------------------------------------------------------------------------------


def test_same_seed_same_actions_after_reset(policy):
    obs = raw_obs(batch=2)
    first = [policy.act(obs), policy.act(obs)]
    assert differs(first[0], first[1])  # the random stream moves on between calls
    policy.reset()
    again = [policy.act(obs), policy.act(obs)]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_different_seed_different_actions(policy):
    obs = raw_obs(batch=2)
    policy.reset(seed=0)
    a0 = policy.act(obs)
    policy.reset(seed=1)
    a1 = policy.act(obs)
    assert policy.seed == 1
    assert differs(a0, a1)
    # a fresh Policy built with seed=1 follows the same stream as reset(seed=1)
    other = make_policy(policy.algo.name, seed=1)
    np.testing.assert_array_equal(other.act(obs), a1)


# --- sampler settings ---------------------------------------------------------------------------------------


def test_settings_are_attributes_and_change_the_sampler():
    policy = make_policy("decision_diffuser")
    assert policy.steps == FAST["decision_diffuser"]["steps"] and policy.guidance_weight == 0.2
    policy.steps = 5
    assert policy.sampling["steps"] == 5
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs())
    # DDIM with 5 steps, classifier-free guidance batched into one forward per step
    assert calls.count == 5


def test_per_call_settings_apply_to_that_call_only():
    policy = make_policy("decision_diffuser")
    policy.steps = 5
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs(), steps=3)
    assert calls.count == 3
    assert policy.steps == 5
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs())
    assert calls.count == 5


def test_diffuser_sampler_setting_switches_ddpm_to_ddim():
    policy = make_policy("diffuser")
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs(), sampler="ddpm", num_plans=2)
    assert calls.count == 20  # DDPM walks all num_steps
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs(), sampler="ddim", steps=3)
    assert calls.count == 3


def test_a_sampler_that_does_not_run_on_the_model_s_process_is_refused_before_any_act(tmp_path):
    """heun integrates the flow path: on a diffusion model it is refused when the policy is built, loaded or the
    setting changed (the refused value is not kept), not at the first act()."""
    with pytest.raises(ValueError, match=r"sampling: sampler 'heun' integrates the velocity of the linear flow path"):
        Policy(make_dd(), make_normalizers(), sampling={"sampler": "heun", "steps": 3})
    policy = make_policy()
    with pytest.raises(ValueError, match=r"^sampler 'heun' integrates the velocity .* it needs process='flow'"):
        policy.sampler = "heun"
    assert policy.sampler == "ddim"
    path = policy.save(tmp_path / "p")
    config = json.loads((path / "config.json").read_text())
    config["sampling"]["sampler"] = "heun"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config.json: sampling: sampler 'heun' integrates the velocity"):
        Policy.load(path, device="cpu")
    assert np.all(np.isfinite(policy.act(raw_obs())))


def test_guidance_weight_changes_the_plan():
    policy = make_policy("decision_diffuser")
    obs = raw_obs()
    plans = {}
    for w in (0.0, 3.0, 0.0):
        policy.reset()
        plans.setdefault(w, []).append(policy.plan(obs, guidance_weight=w).observations)
    np.testing.assert_array_equal(plans[0.0][0], plans[0.0][1])
    # same noise, different weight: the planned states move by a sizeable fraction of the state scale
    assert np.abs(plans[3.0][0] - plans[0.0][0]).max() > 0.05 * OBS_STD


def test_unknown_setting_lists_the_valid_ones(policy):
    with pytest.raises(ValueError, match="unknown setting") as err:
        policy.act(raw_obs(), stepz=3)
    message = str(err.value)
    assert "stepz" in message
    for name in policy.sampling:
        assert name in message
    with pytest.raises(ValueError, match="stepz"):
        policy.plan(raw_obs(), stepz=3)


def test_unknown_execution_lists_the_valid_ones():
    with pytest.raises(ValueError, match="first_action.*follow_plan"):
        make_policy("diffuser", execution="replan_sometimes")


# --- plans --------------------------------------------------------------------------------------------------


def test_decision_diffuser_plan_starts_at_the_observation_in_raw_units():
    policy = make_policy("decision_diffuser")
    obs = raw_obs()
    plan = policy.plan(obs)
    assert plan.observations.shape == (HORIZON, OBS_DIM) and plan.actions.shape == (ACT_DIM,)
    np.testing.assert_allclose(plan.observations[0], obs, rtol=0, atol=1e-4)
    assert np.all(np.isfinite(plan.observations))
    # the plan's action is what act() executes for the same seed
    policy.reset()
    planned = policy.plan(obs).actions
    policy.reset()
    np.testing.assert_array_equal(policy.act(obs), planned)


def test_history_policy_plans_from_the_last_k_observations_given_to_act():
    torch.manual_seed(0)
    algo = DecisionDiffuser(obs_dim=OBS_DIM, act_dim=ACT_DIM, horizon=HORIZON, num_steps=20, dim=16,
                            dim_mults=(1, 2), inv_hidden_dim=32, history=3)
    policy = Policy(algo, make_normalizers(), sampling={"steps": 4})
    assert policy.history_length == 3 and make_policy().history_length == 1
    obs = raw_obs(batch=2, seed=5)
    seen = [obs + i for i in range(4)]
    # first step: only one observation known, placed at the start of the plan
    np.testing.assert_allclose(policy.plan(seen[0]).observations[:, 0], seen[0], atol=1e-4)
    for o in seen[:3]:
        policy.act(o)
    plan = policy.plan(seen[3]).observations  # what act(seen[3]) would plan: the last 3 observations
    np.testing.assert_allclose(plan[:, :3], np.stack(seen[1:], axis=1), atol=1e-4)
    plan = policy.plan(seen[3] + 10).observations  # plan() looks at the history without adding to it
    np.testing.assert_allclose(plan[:, :3], np.stack([seen[1], seen[2], seen[3] + 10], axis=1), atol=1e-4)
    # the action executed is the inverse dynamics between the last known state and the next planned one
    policy.reset()
    for o in seen[:2]:
        policy.act(o)
    planned = policy.plan(seen[2])
    policy.reset()
    for o in seen[:2]:
        policy.act(o)
    np.testing.assert_allclose(policy.act(seen[2]), planned.actions, atol=1e-5)
    # reset forgets the history; a different batch size starts afresh
    policy.reset()
    np.testing.assert_allclose(policy.plan(seen[0][:1]).observations[0, 0], seen[0][0], atol=1e-4)


def test_diffuser_plan_returns_states_and_actions_of_the_best_plan():
    policy = make_policy("diffuser")
    obs = raw_obs(batch=2)
    plan = policy.plan(obs)
    assert plan.observations.shape == (2, HORIZON, OBS_DIM)
    assert plan.action_chunk.shape == (2, HORIZON, ACT_DIM)
    np.testing.assert_allclose(plan.observations[:, 0], obs, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(plan.actions, plan.action_chunk[:, 0])
    # later states are sampled, not copies of the start
    assert not np.allclose(plan.observations[:, 1], obs, atol=1e-3)


def test_diffuser_executes_the_candidate_plan_of_highest_value():
    """Of num_plans candidates per state the one the value net scores highest is returned (with its value)."""
    from diffusion_rl.algos import Diffuser

    class RecordingValue(torch.nn.Module):  # any function of the plan; records what it scored
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.x, self.v = x.detach().clone(), x[:, 1:, :].sum(dim=(1, 2))
            return self.v

    torch.manual_seed(0)
    algo = Diffuser(4, 2, horizon=8, num_steps=10, dim=8, dim_mults=(1, 2), value_dim=16,
                    value_dim_mults=(1, 2)).eval()
    algo.value = RecordingValue()
    out = algo.plan(torch.zeros(3, 4), num_plans=5, guide_scale=0.0, sampler="ddim", steps=2,
                    generator=torch.Generator().manual_seed(0))
    values = algo.value.v.reshape(3, 5)
    best = values.argmax(dim=1)
    assert not torch.equal(best, values.argmin(dim=1))
    torch.testing.assert_close(out.extras["values"], values.max(dim=1).values)
    torch.testing.assert_close(out.trajectory, algo.value.x.reshape(3, 5, 8, 6)[torch.arange(3), best])


def test_goal_is_pinned_at_the_last_step_of_a_goal_conditioned_plan():
    torch.manual_seed(0)
    algo = Diffuser(obs_dim=4, act_dim=2, horizon=HORIZON, num_steps=20, dim=16, dim_mults=(1, 2),
                    value_guided=False, goal_conditioned=True)
    policy = Policy(algo, make_normalizers(obs_dim=4, act_dim=2), sampling={"sampler": "ddim", "steps": 4})
    obs = np.array([[1.0, 2.0, 0.1, -0.1], [3.0, 1.0, 0.0, 0.2]], dtype=np.float32)
    goal = np.array([[6.0, 7.0], [0.5, 4.0]])
    plan = policy.plan(obs, goal=goal).observations
    assert plan.shape == (2, HORIZON, 4)
    np.testing.assert_allclose(plan[:, 0], obs, atol=1e-4)
    np.testing.assert_allclose(plan[:, -1, :2], goal, atol=1e-4)  # goal position
    np.testing.assert_allclose(plan[:, -1, 2:], 0.0, atol=1e-4)  # at rest there
    # one goal [2] is shared by every observation of the batch
    shared = policy.plan(obs, goal=goal[0]).observations
    np.testing.assert_allclose(shared[:, -1, :2], np.broadcast_to(goal[0], (2, 2)), atol=1e-4)
    with pytest.raises(ValueError, match=r"goal: expected finite real numbers of shape \[k\] or \[2, k\] with "
                                         r"k <= 4; got shape \(3, 2\)"):
        policy.plan(obs, goal=np.zeros((3, 2)))
    # a goal is checked as an observation is: real numbers, finite once cast to float32 (else NaN plans follow)
    for bad, message in [(np.array([np.nan, 1.0]), "NaN or inf"), (np.array([1e39, 0.0]), "beyond float32"),
                         (torch.tensor([np.inf, 1.0]), "NaN or inf"), (np.array([True, False]), "dtype bool"),
                         (["a", "b"], "dtype <U1"), (torch.tensor([True, False]), "dtype torch.bool")]:
        with pytest.raises(ValueError, match=message):
            policy.act(obs, goal=bad)


@pytest.mark.parametrize("algo", ALGOS)
def test_plan_error_measures_the_next_state_against_the_executed_plan(algo):
    policy = make_policy(algo)
    obs = raw_obs(batch=2)
    assert policy.plan_error(obs) is None  # nothing executed yet
    expected = policy.plan(obs).observations[:, 1]  # the plan act() executes, for the same seed
    policy.reset()
    policy.act(obs)
    np.testing.assert_allclose(policy.plan_error(expected), 0.0, atol=1e-4)
    # Gaussian-normalized states: an offset of d raw standard deviations in every dimension is an RMS error of d
    offset = np.array([[0.5], [2.0]]) * policy.normalizers["observations"].stats["std"]
    np.testing.assert_allclose(policy.plan_error(expected + offset), [0.5, 2.0], rtol=1e-3)
    # per dimension: an offset of -3 standard deviations in dimension 1 of environment 0 only
    shifted = np.array(expected, copy=True)
    shifted[0, 1] -= 3.0 * policy.normalizers["observations"].stats["std"][1]
    per_dim = policy.plan_error(shifted, per_dim=True)
    assert per_dim.shape == shifted.shape
    np.testing.assert_allclose(per_dim[0, 1], 3.0, rtol=1e-3)
    per_dim[0, 1] = 0.0
    np.testing.assert_allclose(per_dim, 0.0, atol=1e-3)
    with pytest.raises(ValueError, match=r"one per environment"):
        policy.plan_error(expected[:1])
    policy.reset()
    assert policy.plan_error(obs) is None


def test_plan_error_of_a_history_planner_uses_the_state_after_the_current_one():
    torch.manual_seed(0)
    algo = DecisionDiffuser(obs_dim=OBS_DIM, act_dim=ACT_DIM, horizon=HORIZON, num_steps=20, dim=16,
                            dim_mults=(1, 2), inv_hidden_dim=32, history=3)
    policy = Policy(algo, make_normalizers(), sampling={"steps": 4})
    seen = [raw_obs(seed=5) + i for i in range(3)]
    for o in seen[:2]:
        policy.act(o)
    planned = policy.plan(seen[2]).observations
    policy.reset()
    for o in seen:
        policy.act(o)
    np.testing.assert_allclose(policy.plan_error(planned[3]), [0.0], atol=1e-4)  # index K, not 1


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(OBS_DIM + 1,), (4, OBS_DIM - 1), (2, 3, OBS_DIM), ()])
def test_wrong_shape_names_the_expected_shape(shape):
    policy = make_policy("decision_diffuser")
    with pytest.raises(ValueError) as err:
        policy.act(np.zeros(shape, dtype=np.float32))
    message = str(err.value)
    assert f"[{OBS_DIM}]" in message and f"[B, {OBS_DIM}]" in message and str(tuple(shape)) in message
    with pytest.raises(ValueError, match=rf"\[B, {OBS_DIM}\]"):
        policy.act(torch.zeros(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_observations_are_refused(bad):
    policy = make_policy("decision_diffuser")
    obs = raw_obs(batch=2)
    obs[1, 4] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.act(obs)
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.act(torch.from_numpy(obs))
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.plan(obs)


@pytest.mark.parametrize(
    "bad",
    [
        "0.1 0.2",
        np.array(["1.0"] * OBS_DIM),
        np.array([1.0] * (OBS_DIM - 1) + [None], dtype=object),
        np.array([1.0] * OBS_DIM, dtype=object),
        {"observation": [0.0] * OBS_DIM},
        np.ones(OBS_DIM, dtype=np.complex64),
        None,
        np.ones(OBS_DIM, dtype=bool),
        np.ones(OBS_DIM, dtype="timedelta64[s]"),
        [[0.0] * OBS_DIM, [0.0]],
    ],
    ids=["string", "string-array", "object-with-none", "object-of-floats", "dict", "complex", "none", "bool",
         "timedelta", "ragged"],
)
def test_non_numeric_observations_are_refused(bad):
    policy = make_policy("decision_diffuser")
    with pytest.raises(ValueError, match=rf"expected real floats or integers of shape \[{OBS_DIM}\] or \[B, {OBS_DIM}\]"):
        policy.act(bad)


@pytest.mark.parametrize(
    "bad",
    [torch.ones(OBS_DIM, dtype=torch.complex64), torch.ones(OBS_DIM, dtype=torch.bool),
     torch.ones(OBS_DIM, device="meta"), torch.ones(1, OBS_DIM).to_sparse(),
     torch.nested.nested_tensor([torch.ones(OBS_DIM), torch.ones(OBS_DIM)])],
    ids=["complex", "bool", "meta", "sparse", "nested"],
)
def test_tensors_outside_the_contract_are_refused(bad):
    policy = make_policy("decision_diffuser")
    with pytest.raises(ValueError, match=rf"expected real floats or integers of shape \[{OBS_DIM}\]"):
        policy.act(bad)


def test_the_same_contract_for_numpy_and_torch_ints_strides_and_empty_batches():
    policy = make_policy("decision_diffuser")
    base = raw_obs(batch=2)
    for obs in (base[::-1], base[:, ::-1][:, ::-1], np.asfortranarray(base)):  # negative strides, views, order
        policy.reset()
        expected = policy.plan(np.ascontiguousarray(obs)).actions
        policy.reset()
        np.testing.assert_array_equal(policy.plan(obs).actions, expected)
    ints = np.full((2, OBS_DIM), 5)
    for dtype in (np.int8, np.uint16, np.int64):
        policy.reset()
        a = policy.plan(ints.astype(dtype)).actions
        policy.reset()
        b = policy.plan(torch.from_numpy(ints.astype(dtype))).actions
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-6)
    for empty in (np.zeros((0, OBS_DIM), np.float32), torch.zeros(0, OBS_DIM)):
        with pytest.raises(ValueError, match=r"with B >= 1; got shape \(0, 11\)"):
            policy.act(empty)


def test_low_precision_float_tensors_are_read_as_the_floats_they_hold():
    policy = make_policy("decision_diffuser")
    obs = torch.from_numpy(raw_obs(batch=2))
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16):
        low = obs.to(dtype)
        policy.reset()
        expected = policy.plan(low.to(torch.float32)).actions
        policy.reset()
        torch.testing.assert_close(policy.plan(low).actions, expected, rtol=0, atol=0)


@pytest.mark.parametrize("algo, setting, value", [
    ("decision_diffuser", "guidance_weight", float("nan")), ("decision_diffuser", "target_return", float("inf")),
    ("decision_diffuser", "steps", 0), ("decision_diffuser", "temperature", -1.0),
    ("diffuser", "num_plans", -3), ("diffuser", "guide_scale", float("nan")), ("diffuser", "guide_scale", -0.1),
    ("decision_diffuser", "eta", 1.5),  # refused when set, not at the next act()
])
def test_bad_settings_are_refused_per_call_and_as_attributes(algo, setting, value):
    policy = make_policy(algo)
    before = dict(policy.sampling)
    with pytest.raises(ValueError, match=rf"sampling setting {setting}: expected .*, got {value!r}"):
        policy.act(raw_obs(), **{setting: value})
    with pytest.raises(ValueError, match=rf"sampling setting {setting}: expected"):
        setattr(policy, setting, value)
    assert policy.sampling == before  # a refused value is not kept
    assert np.all(np.isfinite(policy.act(raw_obs())))


def make_dp(seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    return DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, obs_steps=2, num_steps=10, down_dims=(16, 32),
                           step_embed_dim=16, n_groups=4)


@pytest.mark.parametrize(("algo", "obs_norm", "act_norm", "expected"), [
    ("decision_diffuser", "gaussian", "minmax", None), ("decision_diffuser", "cdf", "gaussian", 1.0),
    ("decision_diffuser", "minmax", "minmax", 1.0),
    ("diffuser", "cdf", "minmax", 1.0), ("diffuser", "cdf", "gaussian", None),  # states and actions both
    ("diffusion_policy", "minmax", "gaussian", None),  # its sample is actions: a Gaussian's are not cut at 1 std
    ("diffusion_policy", "gaussian", "minmax", 1.0),
])
def test_auto_clip_follows_the_normalizers_of_what_is_sampled(algo, obs_norm, act_norm, expected, monkeypatch):
    from diffusion_rl.data import CDFNormalizer, MinMaxNormalizer

    kinds = {"gaussian": GaussianNormalizer, "cdf": CDFNormalizer, "minmax": MinMaxNormalizer}
    rng = np.random.default_rng(0)
    normalizers = {"observations": kinds[obs_norm]().fit(rng.normal(size=(500, OBS_DIM))),
                   "actions": kinds[act_norm]().fit(rng.normal(size=(500, ACT_DIM)))}
    builders = {**BUILDERS, "diffusion_policy": make_dp}
    policy = Policy(builders[algo](), normalizers, sampling={"sampler": "ddim", "steps": 2},
                    execution="first_action")  # every act() plans
    assert policy.clip_sample == "auto"
    seen = {}
    original = policy.algo.plan

    def spy(obs, **kwargs):
        seen["clip_sample"] = kwargs["clip_sample"]
        return original(obs, **kwargs)

    monkeypatch.setattr(policy.algo, "plan", spy)
    policy.act(raw_obs())
    assert seen["clip_sample"] == expected
    policy.act(raw_obs(), clip_sample=3.0)  # an explicit value is used as given
    assert seen["clip_sample"] == 3.0


def test_values_beyond_float32_are_refused_not_turned_into_nan(policy):
    obs = raw_obs().astype(np.float64)
    obs[0] = 1e300  # finite in float64, inf once cast to the model's float32
    with pytest.raises(ValueError, match=r"beyond float32 \(expected finite values of shape \[\.\., 11\]\)"):
        policy.act(obs)
    with pytest.raises(ValueError, match="beyond float32"):
        policy.act(torch.from_numpy(obs))
    with pytest.raises(ValueError, match=r"\[B, 11\] with B >= 1; got shape \(2, 3, 11\)"):
        policy.act(np.zeros((2, 3, OBS_DIM)))


def test_a_failed_act_leaves_no_plan_behind_for_the_next_calls():
    """A plan that came out non-finite is refused, and neither warm-started from nor popped from the queue later."""
    import warnings

    far = np.full(OBS_DIM, 1e30, np.float32)  # finite, but its plan is not
    warm = Policy(make_dd(), make_normalizers(), sampling={"steps": 4, "warm_start_t": 10}, seed=0)
    queue = Policy(_graph_policy("diffusion_policy", device="cpu").algo, make_normalizers(), sampling={"steps": 2},
                   execution="action_queue", execution_options={"action_steps": 4}, seed=0)
    for policy, calls in ((warm, 1), (queue, 4)):
        for _ in range(calls):  # a plan to warm-start from; the queue emptied, so the far observation replans
            policy.act(raw_obs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "far outside the training data"
            with pytest.raises(ValueError, match="NaN or infinite actions"):
                policy.act(far)
        for seed in range(3):  # fresh plans from noise, then warm from a finite plan again
            assert np.isfinite(policy.act(raw_obs(seed=seed))).all()


def test_actions_are_clipped_into_the_recorded_action_space_and_counted(tmp_path):
    low, high = [ACT_MEAN - 0.001] * ACT_DIM, [ACT_MEAN + 0.001] * ACT_DIM  # narrower than the actions' spread
    policy = make_policy(action_bounds=(low, high))
    with pytest.warns(RuntimeWarning, match="clipped into it"):
        actions = policy.act(raw_obs(batch=4))
    assert np.all(actions >= np.float32(low[0])) and np.all(actions <= np.float32(high[0]))
    assert policy.stats["actions"] == 4 and 0 < policy.stats["clipped_actions"] <= 4
    rows = policy.row_stats["clipped_actions"]
    assert rows.dtype == bool and rows.shape == (4,) and rows.sum() == policy.stats["clipped_actions"]
    plan = policy.plan(raw_obs(batch=2))
    assert np.all(plan.action_chunk >= np.float32(low[0])) and np.all(plan.action_chunk <= np.float32(high[0]))
    loaded = Policy.load(policy.save(tmp_path / "p"))  # the bounds travel with the artifact
    assert loaded.action_bounds_list() == policy.action_bounds_list()
    assert make_policy().action_bounds is None and make_policy().action_bounds_list() is None
    for bad in ((low, high[:2]), (high, low), ("a", "b"), (low, [float("nan")] * ACT_DIM)):
        with pytest.raises(ValueError, match=r"action_bounds: expected \(low, high\), each 3 numbers"):
            make_policy(action_bounds=bad)


def test_assigned_action_bounds_apply_to_numpy_and_torch_actions_and_are_saved(tmp_path):
    """Tightening the limits on a live policy (``policy.action_bounds = (env.action_space.low, ...)``) used to
    change torch actions only: numpy actions kept the constructor's bounds until a save and load changed them."""
    policy = make_policy(action_bounds=([ACT_MEAN - 100.0] * ACT_DIM, [ACT_MEAN + 100.0] * ACT_DIM))
    low, high = np.full(ACT_DIM, ACT_MEAN + 0.5), np.full(ACT_DIM, ACT_MEAN + 0.6)  # above every action's range
    policy.action_bounds = (low, high)
    assert isinstance(policy.action_bounds[0], torch.Tensor) and policy.action_bounds[0].dtype == torch.float32
    with pytest.warns(RuntimeWarning, match="clipped into it"):
        from_numpy = policy.act(raw_obs(batch=3))
    from_torch = policy.act(torch.as_tensor(raw_obs(batch=3)))
    for actions in (from_numpy, from_torch.numpy()):
        assert np.all(actions >= np.float32(low[0])) and np.all(actions <= np.float32(high[0])), actions
    loaded = Policy.load(policy.save(tmp_path / "p"))
    assert loaded.action_bounds_list() == policy.action_bounds_list() == [low.astype(np.float32).tolist(),
                                                                            high.astype(np.float32).tolist()]
    with pytest.raises(ValueError, match=r"action_bounds: expected \(low, high\), each 3 numbers with low <= high"):
        policy.action_bounds = (high, low)
    assert policy.action_bounds_list()[0] == low.astype(np.float32).tolist()  # a refused value changes nothing
    policy.action_bounds = None
    assert policy.action_bounds is None and np.all(policy.act(raw_obs(batch=3)) < ACT_MEAN + 0.5)
    unbounded = make_policy()
    unbounded.action_bounds = (low, high)  # on a policy built without bounds too
    assert np.all(unbounded.act(raw_obs(batch=3)) >= np.float32(low[0]))


def test_metadata_that_config_json_cannot_hold_is_refused_when_given(tmp_path):
    """An object JSON has no form for was accepted and failed at the first save() with json's TypeError."""
    with pytest.raises(ValueError, match=r"metadata: expected JSON-ready values .*object is not JSON serializable"):
        make_policy(metadata={"run": object()})
    with pytest.raises(ValueError, match=r"metadata: expected a dict of JSON-ready values or None, got list"):
        make_policy(metadata=["run 3"])
    policy = make_policy(metadata={"run": 3, "scale": np.float32(0.5), "mean": torch.zeros(2)})
    policy.metadata["later"] = {1, 2}  # edited after construction: refused before anything is written
    with pytest.raises(ValueError, match=r"metadata: .*set is not JSON serializable"):
        policy.save(tmp_path / "p")
    assert not (tmp_path / "p").exists()
    del policy.metadata["later"]
    loaded = Policy.load(policy.save(tmp_path / "p"))
    assert loaded.metadata["run"] == 3 and loaded.metadata["scale"] == 0.5


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_whose_weights_are_not_float32_is_refused_when_the_policy_is_built(dtype):
    """The policy plans in float32: ``algo.to(torch.bfloat16)`` was accepted and failed at every act with torch's
    dtype mismatch; bfloat16 forwards are ``precision="bfloat16"`` with float32 weights."""
    with pytest.raises(ValueError, match=rf"algo: expected float32 weights .*got {str(dtype)[6:]}; .*"
                                         r"precision='bfloat16'"):
        Policy(make_dd().to(dtype), make_normalizers())


def test_non_finite_plans_are_refused_with_their_causes():
    policy = make_policy()
    with torch.no_grad():
        next(policy.algo.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite actions: .*outside the training data.*not finite"):
        policy.act(raw_obs())


def test_sampling_settings_have_one_source_plan_s_signature():
    from diffusion_rl.algos import ALGORITHMS

    for name, cls in ALGORITHMS.items():
        args = cls.plan_arguments()
        assert sorted(cls.default_sampling) == cls.sampling_names(), name
        for key, value in cls.default_sampling.items():  # "auto": resolved by Policy from the normalizer
            assert value == args[key] or (key == "clip_sample" and value == "auto"), (name, key)
        # the Hydra config shows the same defaults (a preset may still override them)
        from pathlib import Path

        from omegaconf import OmegaConf

        yaml = Path(__file__).resolve().parents[1] / "configs" / "algo" / f"{name}.yaml"
        for key, value in (OmegaConf.to_container(OmegaConf.load(yaml)).get("sampling") or {}).items():
            assert key in cls.default_sampling and cls.default_sampling[key] == value, (name, key, value)
    with pytest.raises(ValueError, match=r"unknown sampling setting\(s\) \['gudiance_weight'\] for decision_diffuser; "
                                         r"its settings are \['clip_sample', 'eta', 'guidance_weight'"):
        Policy(make_dd(), make_normalizers(), sampling={"gudiance_weight": 1.0})
    with pytest.raises(ValueError, match="goal: decision_diffuser plans take no goal"):
        make_policy().act(raw_obs(), goal=np.zeros(2))
    # a Diffuser takes a goal exactly when it learned to reach one
    plain = make_policy("diffuser")
    assert not plain.accepts_goal
    with pytest.raises(ValueError, match="goal: diffuser plans take no goal"):
        plain.act(raw_obs(), goal=np.zeros(2))
    with pytest.raises(ValueError, match=r"this diffuser was trained without goals \(goal_conditioned=False\)"):
        plain.algo.plan(torch.zeros(1, OBS_DIM), goal=torch.zeros(1, OBS_DIM))
    reaching = Policy(make_diffuser(value_guided=False, goal_conditioned=True), make_normalizers(),
                      sampling={"sampler": "ddim", "steps": 2})
    assert reaching.accepts_goal
    with pytest.raises(ValueError, match=r"trained to reach goals \(goal_conditioned=True\); pass goal="):
        reaching.act(raw_obs())
    with pytest.raises(TypeError):  # below Policy, an algorithm refuses what it does not take as well
        make_policy().algo.plan(torch.zeros(1, OBS_DIM), stepz=3)


def test_observations_far_outside_the_training_data_warn_once_or_are_refused():
    policy = make_policy()
    far = raw_obs(batch=3)
    far[1, 2] = OBS_MEAN + 50 * OBS_STD  # 50 standard deviations out
    with pytest.warns(RuntimeWarning, match="far outside the training data"):
        policy.act(far)
    assert policy.stats["far_observations"] == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only; still counted
        policy.act(far)
        policy.act(raw_obs(batch=3))  # ordinary observations: nothing
    assert policy.stats["far_observations"] == 2
    assert policy.row_stats["far_observations"].tolist() == [False, False, False]  # the last act's rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        policy.act(far)
        assert policy.row_stats["far_observations"].tolist() == [False, True, False]
        with pytest.raises(ValueError, match="steps"):
            policy.act(far, steps=0)  # refused: neither its observations nor its actions are counted
        policy.plan(far)  # a plan counts what it was given (it returns no action to count)
    assert policy.stats["far_observations"] == 4 and policy.stats["actions"] == 12
    strict = make_policy(out_of_range="error")
    with pytest.raises(ValueError, match="far outside the training data"):
        strict.act(far)
    strict.act(raw_obs(batch=3))
    with pytest.raises(ValueError, match=r"out_of_range: expected one of \['warn', 'error', 'ignore'\]"):
        make_policy(out_of_range="loud")


@pytest.mark.parametrize("as_numpy", [True, False])
def test_a_cdf_normalizer_which_clips_still_tells_far_observations(as_numpy):
    """The Decision Diffuser's default normalizer maps everything into [-1, 1]: the raw value is measured against
    the data's range instead (as far out as min-max scaling to +-10 would put it: 4.5 ranges)."""
    from diffusion_rl.data import CDFNormalizer

    rng = np.random.default_rng(0)
    data = rng.uniform(0.0, 2.0, size=(500, OBS_DIM))
    normalizers = {"observations": CDFNormalizer().fit(data), "actions": make_normalizers()["actions"]}
    policy = Policy(make_dd(), normalizers, sampling={"steps": 2}, out_of_range="error")
    obs = np.full((2, OBS_DIM), 1.0, dtype=np.float32)
    obs[1, 3] = 2.0 + 4.0 * (data[:, 3].max() - data[:, 3].min())  # outside, but less than 4.5 ranges out
    convert = (lambda a: a) if as_numpy else torch.from_numpy
    policy.act(convert(obs))
    obs[1, 3] = 1e3
    with pytest.raises(ValueError, match="far outside the training data"):
        policy.act(convert(obs))
    obs[1, 3] = -1e3
    with pytest.raises(ValueError, match="far outside the training data"):
        policy.act(convert(obs))


def test_a_misspelt_setting_set_on_a_policy_is_refused():
    policy = make_policy()
    with pytest.raises(AttributeError, match=r"Policy has no setting 'guidance_weigth'; decision_diffuser's sampling "
                                             r"settings are \['clip_sample', 'eta', 'guidance_weight'"):
        policy.guidance_weigth = 5.0
    with pytest.raises(ValueError, match=r"out_of_range: expected one of \['warn', 'error', 'ignore'\], got 'eror'"):
        policy.out_of_range = "eror"
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\), got -1"):
        policy.seed = -1
    assert policy.out_of_range == "warn" and policy.seed == 0  # refused values are not kept
    policy.guidance_weight, policy.out_of_range, policy.seed = 0.5, "error", 3
    assert (policy.guidance_weight, policy.out_of_range, policy.seed) == (0.5, "error", 3)
    dp = Policy(make_dp(), make_normalizers(), sampling={"steps": 2}, execution="action_queue",
                execution_options={"action_steps": 4})
    with pytest.raises(AttributeError, match="Policy has no setting 'warm_start_t'; diffusion_policy's"):
        dp.warm_start_t = 30  # a planner's setting; Diffusion Policy has none such


GRAPH_CASES = {  # the sampler settings the whole-plan CUDA graph is checked with
    "decision_diffuser": FAST["decision_diffuser"],
    "diffuser": FAST["diffuser"],
    "diffuser_ddpm": {"sampler": "ddpm", "num_plans": 4},  # fresh noise at every step, value guidance (autograd)
    "diffusion_policy": {"steps": 3},
}


def _graph_policy(case: str, device: str = "cuda", **kwargs) -> Policy:
    if case == "diffusion_policy":
        torch.manual_seed(0)
        algo = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, obs_steps=2, num_steps=10, down_dims=(16, 32),
                               step_embed_dim=16)
    else:
        algo = BUILDERS[case.split("_ddpm")[0]]()
    algo.to(device)  # compile="cuda_graph" is refused for a model on the CPU
    return Policy(algo, make_normalizers(), sampling=dict(GRAPH_CASES[case]), seed=0, **kwargs)


@pytest.mark.parametrize("algo", ["decision_diffuser", "diffuser", "diffusion_policy"])
def test_compiled_sampling_equals_eager_within_float_tolerance(algo):
    from diffusion_rl.nets.compiled import TracedDenoiser

    eager, compiled = _graph_policy(algo, device="cpu"), _graph_policy(algo, device="cpu", compile=True)
    assert isinstance(compiled._denoiser, TracedDenoiser) and eager._denoiser is None
    obs = raw_obs(batch=3)
    for _ in range(3):  # the first call traces, the next ones run the frozen graph
        a, b = eager.plan(obs), compiled.plan(obs)
        # actions sit near ACT_MEAN = 100 with a spread of 0.01: a relative tolerance would pass any action
        np.testing.assert_allclose(b.action_chunk, a.action_chunk, rtol=0, atol=3e-3 * ACT_STD)
        if a.observations is not None:
            np.testing.assert_allclose(b.observations, a.observations, rtol=1e-4, atol=1e-4)
    assert len(compiled._denoiser._prepared) >= 1
    shared = Policy(compiled.algo, compiled.normalizers, sampling=compiled.sampling, seed=0)  # same algorithm
    assert shared._denoiser is None  # compile is a property of one Policy, not of the algorithm it wraps
    allowed = r"\['trace', 'cuda_graph', 'inductor'\]"
    with pytest.raises(ValueError, match=r"compile: expected True, False or one of " + allowed):
        _graph_policy(algo, device="cpu", compile="yes")
    from diffusion_rl.algos import BehaviorCloning

    with pytest.raises(ValueError, match="compile/precision: bc plans without a denoiser"):
        Policy(BehaviorCloning(obs_dim=OBS_DIM, act_dim=ACT_DIM, hidden_dim=8), make_normalizers(), compile=True)
    bc = Policy(BehaviorCloning(obs_dim=OBS_DIM, act_dim=ACT_DIM, hidden_dim=8), make_normalizers())
    with pytest.raises(ValueError, match="compile/precision: bc plans without a denoiser"):
        bc.compile = "trace"
    assert bc.compile is False and bc.to("cpu") is bc  # the refused value was not kept


def test_inductor_compiled_sampling_equals_eager_on_cpu():
    """compile="inductor": the denoiser compiled by torch.compile (TorchInductor's fused kernels; on CUDA also
    captured as a graph) plans what the eager network plans, from the same random stream. One case on the CPU:
    a compile takes tens of seconds; the GPU test covers every algorithm."""
    from diffusion_rl.nets.compiled import InductorDenoiser

    eager = _graph_policy("diffusion_policy", device="cpu")
    compiled = _graph_policy("diffusion_policy", device="cpu", compile="inductor")
    assert isinstance(compiled._denoiser, InductorDenoiser) and compiled.compile == "inductor"
    obs = raw_obs(batch=2)
    for _ in range(2):  # compiled by the first call, run by the next
        np.testing.assert_allclose(compiled.plan(obs).action_chunk, eager.plan(obs).action_chunk,
                                   rtol=0, atol=3e-3 * ACT_STD)  # no rtol: actions sit near 100, spread 0.01
    assert not compiled._denoiser._calls  # no CUDA graph off CUDA: the compiled network is called directly


@pytest.mark.parametrize("compile_", [False, "trace"])
def test_bfloat16_sampling_stays_close_to_float32(compile_):
    """precision="bfloat16" runs the denoiser under autocast (eager or traced) and returns float32 plans close to
    the float32 ones: the CPU check of the reduced-precision path that pays on GPUs."""
    from diffusion_rl.nets.compiled import EagerDenoiser, TracedDenoiser

    full = make_policy()
    low = Policy(make_dd(), make_normalizers(), sampling=dict(FAST["decision_diffuser"]), seed=0,
                 compile=compile_, precision="bfloat16")
    assert type(low._denoiser) is (TracedDenoiser if compile_ else EagerDenoiser)
    assert low._denoiser.precision == "bfloat16" and low.precision == "bfloat16"
    obs = raw_obs(batch=3)
    a, b = full.plan(obs), low.plan(obs)
    assert b.observations.dtype == np.float32 and b.action_chunk.dtype == np.float32
    norm = full.normalizers["observations"]
    plan_a = norm.normalize(torch.as_tensor(a.observations)).numpy()
    plan_b = norm.normalize(torch.as_tensor(b.observations)).numpy()
    gap = np.abs(plan_b - plan_a).mean()
    assert 0 < gap < 0.03 * np.abs(plan_a).mean()  # bfloat16 rounding shows, and stays small
    np.testing.assert_allclose(plan_b[:, 0], plan_a[:, 0], atol=1e-5)  # the inpainted current state is exact
    with pytest.raises(ValueError, match=r"precision: expected one of \['float32', 'bfloat16'\], got 'fp16'"):
        make_policy(precision="fp16")


def test_setting_compile_again_prepares_the_new_weights_of_a_bfloat16_trace():
    """A bfloat16 trace holds the weight casts made when it was traced: new weights (loaded in place) are planned
    with only once the policy prepares anew, as its compile docstring says."""
    traced = Policy(make_dd(), make_normalizers(), sampling=dict(FAST["decision_diffuser"]), seed=0,
                    compile="trace", precision="bfloat16")
    eager = Policy(make_dd(), make_normalizers(), sampling=dict(FAST["decision_diffuser"]), seed=0,
                   precision="bfloat16")
    obs = raw_obs(batch=2)
    traced.plan(obs)  # traced with the first weights
    torch.manual_seed(5)
    new = {k: torch.randn_like(v) * 0.05 if v.is_floating_point() else v for k, v in make_dd().state_dict().items()}
    for policy in (traced, eager):
        policy.algo.load_state_dict(new)
        policy.reset()
    assert not np.allclose(traced.plan(obs).observations, eager.plan(obs).observations, atol=1e-3)  # stale
    traced.compile = traced.compile
    traced.reset()
    eager.reset()
    np.testing.assert_allclose(traced.plan(obs).observations, eager.plan(obs).observations, rtol=1e-3, atol=1e-3)


def test_cuda_graph_is_refused_off_cuda_and_true_picks_the_device_path():
    from diffusion_rl.nets.compiled import CUDAGraphDenoiser, TracedDenoiser, make_denoiser

    with pytest.raises(ValueError, match="compile='cuda_graph' needs a CUDA device; this model is on cpu"):
        make_policy(compile="cuda_graph")
    assert isinstance(make_policy(compile=True)._denoiser, TracedDenoiser)
    net = make_dd().net
    assert isinstance(make_denoiser(net, True, "float32", torch.device("cuda")), CUDAGraphDenoiser)
    assert make_denoiser(net, False, "float32", torch.device("cpu")) is None  # the plain network
    with pytest.raises(ValueError, match=r"compile: expected True, False or one of"):
        Policy.load("/nonexistent/artifact", device="cpu", compile="jit")  # refused before any file is read


def test_setting_compile_or_precision_prepares_the_new_path_or_is_refused():
    from diffusion_rl.nets.compiled import EagerDenoiser, TracedDenoiser

    policy, eager = make_policy(), make_policy()
    obs = raw_obs(batch=2)
    policy.compile = "trace"
    assert policy.compile == "trace" and isinstance(policy._denoiser, TracedDenoiser)
    np.testing.assert_allclose(policy.act(obs), eager.act(obs), rtol=0, atol=3e-3 * ACT_STD)
    for name, value, message in [("compile", "jit", "compile: expected True, False or one of"),
                                 ("compile", "cuda_graph", "needs a CUDA device"),
                                 ("precision", "float16", r"precision: expected one of \['float32', 'bfloat16'\]")]:
        with pytest.raises(ValueError, match=message):
            setattr(policy, name, value)
        assert policy.compile == "trace" and policy.precision == "float32"  # a refused value changes nothing
    policy.compile, policy.precision = False, "bfloat16"
    assert type(policy._denoiser) is EagerDenoiser and policy._denoiser.precision == "bfloat16"
    policy.precision = "float32"
    assert policy._denoiser is None  # the plain network again


@pytest.mark.parametrize("case", [*GRAPH_CASES, "warm"])
def test_plans_run_without_host_syncs_so_cuda_graphs_can_capture_them(case):
    """What a whole-plan CUDA graph needs, checked on any device: once its caches are filled, a plan (every step,
    guidance, inpainting, warm start) reads no value back to the host (.item(), nonzero) and builds no tensor
    from host values (torch.tensor): every op it dispatches could run inside a captured graph."""
    from torch.utils._python_dispatch import TorchDispatchMode

    host = {"_local_scalar_dense", "lift_fresh", "nonzero", "masked_select", "unique", "is_nonzero", "equal"}

    class Watch(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    if case == "warm":
        policy = Policy(make_dd(), make_normalizers(), sampling={"sampler": "dpmsolver++", "steps": 5,
                                                                 "warm_start_t": 10}, seed=0)
    else:
        policy = _graph_policy(case, device="cpu")
    policy.act(raw_obs(batch=2))  # caches filled (coefficient tables, samplers); a warm policy keeps its plan
    watch, plan = Watch(), policy.algo.plan

    def watched(*args, **kwargs):
        with watch:
            return plan(*args, **kwargs)

    policy.algo.plan = watched
    policy.act(raw_obs(batch=2, seed=2)) if case == "warm" else policy.plan(raw_obs(batch=2))
    assert "convolution" in watch.seen or "addmm" in watch.seen  # the watch saw the network run
    assert not watch.seen & host, sorted(watch.seen & host)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_cuda_graph_sampling_equals_eager_on_cuda(case):
    """compile="cuda_graph" (also what True picks on CUDA) captures each plan whole (every step, guidance,
    inpainting and noise draws) as one CUDA graph per batch size and replays it: the same plans as the eager path
    within float tolerance, from the same random stream; bfloat16 under the graph stays close."""
    from diffusion_rl.nets.compiled import CUDAGraphDenoiser

    eager, graphed = _graph_policy(case), _graph_policy(case, compile=True)
    low = _graph_policy(case, compile="cuda_graph", precision="bfloat16") if case == "decision_diffuser" else None
    assert isinstance(graphed._denoiser, CUDAGraphDenoiser)
    obs = raw_obs(batch=3)
    for _ in range(3):  # the first call captures, the next ones replay
        a, b = eager.plan(obs), graphed.plan(obs)
        np.testing.assert_allclose(b.action_chunk, a.action_chunk, rtol=0, atol=3e-3 * ACT_STD)
        if a.observations is not None:
            np.testing.assert_allclose(b.observations, a.observations, rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(b.observations[:, b.now], obs, rtol=1e-5, atol=1e-4)  # inpainted state
        if low is not None:  # (no bf16 check where a plan is picked by value: a near tie may flip)
            norm = eager.normalizers["observations"]
            plan_a = norm.normalize(torch.as_tensor(a.observations)).numpy()
            plan_c = norm.normalize(torch.as_tensor(low.plan(obs).observations)).numpy()
            # bfloat16 rounding shows and stays small on average (a few of the 264 numbers moved by ~0.06 on the
            # H200, beyond an elementwise 5%); the inpainted current state stays exact
            assert np.abs(plan_c - plan_a).mean() < 0.03 * np.abs(plan_a).mean()
            np.testing.assert_allclose(plan_c[:, 0], plan_a[:, 0], atol=1e-5)
    calls = graphed._denoiser._calls
    assert len(calls) == 1 and None not in calls.values()  # captured whole, once for this batch size
    assert not graphed._denoiser._prepared  # no network call ran outside the graph
    graphed.reset()
    first, second = graphed.plan(obs), graphed.plan(obs)
    assert differs(first.action_chunk, second.action_chunk)  # every replay draws fresh noise
    graphed.reset()
    np.testing.assert_allclose(graphed.plan(obs).action_chunk, first.action_chunk, rtol=0, atol=3e-3 * ACT_STD)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        graphed.compile = "cuda_graph"
        graphed.to("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_inductor_graph_sampling_equals_eager_on_cuda(case):
    """compile="inductor" on CUDA: the compiled network's kernels captured in one whole-plan graph, replayed with
    the eager plans (same random stream, float tolerance) and fresh noise at every replay."""
    from diffusion_rl.nets.compiled import InductorDenoiser

    eager, graphed = _graph_policy(case), _graph_policy(case, compile="inductor")
    assert isinstance(graphed._denoiser, InductorDenoiser)
    obs = raw_obs(batch=3)
    for _ in range(3):
        a, b = eager.plan(obs), graphed.plan(obs)
        np.testing.assert_allclose(b.action_chunk, a.action_chunk, rtol=0, atol=3e-3 * ACT_STD)
    calls = graphed._denoiser._calls
    assert len(calls) == 1 and None not in calls.values()  # captured whole
    assert differs(graphed.plan(obs).action_chunk, graphed.plan(obs).action_chunk)


def test_captured_calls_are_kept_least_recently_used_first_out():
    from diffusion_rl.nets.compiled import LRUCache

    cache = LRUCache(3)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") == "A"  # read: now the most recent
    cache.put("d", "D")  # full: "b", the least recently used, goes
    assert list(cache) == ["c", "a", "d"] and cache.get("b") is None and "b" not in cache
    cache.put("e", None)  # a failed capture (None) is remembered too, so it is not retried at every call
    assert list(cache) == ["a", "d", "e"] and "e" in cache and cache.get("e", "missing") is None


def test_traced_signatures_are_bounded_as_a_shrinking_batch_meets_many_sizes(monkeypatch):
    """A vector env whose batch shrinks as episodes end meets many batch sizes: the traces kept are bounded (least
    recently used dropped), and an evicted size is traced again and still plans as the eager path."""
    from diffusion_rl.nets.compiled import EagerDenoiser

    monkeypatch.setattr(EagerDenoiser, "max_signatures", 3)
    eager, traced = (_graph_policy("decision_diffuser", device="cpu"),
                     _graph_policy("decision_diffuser", device="cpu", compile=True))
    for batch in (1, 2, 3, 4, 5):
        traced.plan(raw_obs(batch=batch))
    assert len(traced._denoiser._prepared) == 3
    obs = raw_obs(batch=1)
    traced.reset()
    eager.reset()  # the same sampling noise for both
    np.testing.assert_allclose(traced.plan(obs).observations, eager.plan(obs).observations, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_sweep_of_option_values_keeps_a_bounded_number_of_graphs():
    graphed, eager = _graph_policy("decision_diffuser", compile=True), _graph_policy("decision_diffuser")
    obs = raw_obs(batch=2)
    limit = graphed._denoiser.max_calls
    for i in range(limit + 4):  # each target_return is a capture of its own
        graphed.plan(obs, target_return=0.5 + 0.01 * i)
    assert len(graphed._denoiser._calls) == limit
    graphed.reset()  # an evicted value is captured again and still plans as the eager path
    eager.reset()
    np.testing.assert_allclose(graphed.plan(obs, target_return=0.5).action_chunk,
                               eager.plan(obs, target_return=0.5).action_chunk, rtol=0, atol=3e-3 * ACT_STD)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replans_warm_and_acts_in_a_loop():
    """A warm-started planner in a control loop: the cold first plan and the warm replans are two captured
    graphs, and the actions follow the eager policy's."""
    sampling = {"sampler": "dpmsolver++", "steps": 5, "warm_start_t": 10}

    def build(**kwargs) -> Policy:
        return Policy(make_dd(), make_normalizers(), sampling=sampling, seed=0, **kwargs).to("cuda")

    eager, graphed = build(), build(compile=True)
    rng = np.random.default_rng(0)
    for _ in range(6):
        obs = raw_obs(batch=2, seed=int(rng.integers(1 << 30)))
        np.testing.assert_allclose(graphed.act(obs), eager.act(obs), rtol=0, atol=3e-3 * ACT_STD)
    assert len(graphed._denoiser._calls) == 2 and None not in graphed._denoiser._calls.values()


def test_load_and_to_refuse_a_device_this_machine_lacks_before_any_work(tmp_path):
    path = make_policy().save(tmp_path / "policy")
    with pytest.raises(ValueError, match=r"device: 'gpu' is not a device"):
        Policy.load(path, device="gpu")
    with pytest.raises(ValueError, match=r"device: 'gpu' is not a device"):
        make_policy().to("gpu")
    with pytest.raises(ValueError, match=r"device: 'meta': expected auto, cpu, cuda, cuda:N or mps"):
        Policy.load(tmp_path / "nowhere", device="meta")  # refused before the (missing) files are read
    if not torch.backends.mps.is_available():  # torch's own RuntimeError came at the first tensor moved there
        with pytest.raises(ValueError, match="asked for Apple's MPS, which this machine or PyTorch build lacks"):
            Policy.load(path, device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="asked for CUDA, but this machine has no CUDA device"):
            Policy.load(path, device="cuda")
    assert Policy.load(path, device="auto").device == resolve_device("auto")


def test_numpy_settings_default_steps_and_seeds_are_taken_or_refused_when_given():
    # steps=None: the sampler's default (DDIM 50) capped at this schedule's 20 steps, not an error at act()
    policy = Policy(make_dd(), make_normalizers(), sampling={"sampler": "ddim", "steps": None}, seed=0)
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs())
    assert calls.count == 20
    # numpy scalars (e.g. from a sweep with np.arange) are numbers like any other, kept as Python numbers
    policy = Policy(make_dd(), make_normalizers(), sampling={"steps": np.int64(4)}, seed=0)
    policy.guidance_weight = np.float32(0.5)
    assert type(policy.steps) is int and type(policy.guidance_weight) is float
    assert np.isfinite(policy.act(raw_obs(), steps=np.int32(2))).all()
    # seeds: whole numbers in [0, 2**63), refused before they are kept (a kept bad seed broke save/load)
    for bad in ("abc", 1.5, True, -1, 2**70):
        with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\)"):
            policy.reset(seed=bad)
        assert policy.seed == 0
    with pytest.raises(ValueError, match=r"seed: expected an integer"):
        Policy(make_dd(), make_normalizers(), seed=1.5)
    policy.reset(seed=np.int64(7))
    assert policy.seed == 7 and type(policy.seed) is int


# ----------------------------------------------------------------------------------------- one environment restarts
def _spy_plans(policy: Policy, monkeypatch) -> list[dict]:
    calls = []
    original = policy.algo.plan

    def spy(obs, **kwargs):
        calls.append({"obs": obs.clone(), "history": None if kwargs.get("history") is None
                      else kwargs["history"].clone()})
        return original(obs, **kwargs)

    monkeypatch.setattr(policy.algo, "plan", spy)
    return calls


@pytest.mark.parametrize("as_mask", [False, True])
def test_one_environment_of_a_batch_restarts_its_history_and_the_batch_replans(as_mask, monkeypatch):
    """A vector env that resets a finished episode by itself: that environment's remembered observations are its
    new first one (Diffusion Policy pads an episode's start so), its queued actions of the old episode are gone,
    and the other environments keep their history."""
    policy = Policy(make_dp(), make_normalizers(), sampling={"steps": 2}, execution="action_queue",
                    execution_options={"action_steps": 4}, seed=0)
    calls = _spy_plans(policy, monkeypatch)
    o1, o2, o3 = (raw_obs(3, seed=s) for s in (1, 2, 3))
    policy.act(o1)
    policy.act(o2)  # popped from the queue: one plan so far
    assert len(calls) == 1
    policy.reset(env_ids=np.array([False, True, False]) if as_mask else [1])
    policy.act(o3)
    assert len(calls) == 2  # replanned at once, although two queued actions were left
    history = calls[1]["history"]
    n2, n3 = (torch.as_tensor(policy.normalizers["observations"].normalize(o), dtype=torch.float32) for o in (o2, o3))
    torch.testing.assert_close(history[[0, 2]], torch.stack([n2, n3], dim=1)[[0, 2]])
    torch.testing.assert_close(history[1], torch.stack([n3[1], n3[1]]))
    policy.act(o1)
    assert len(calls) == 2  # a fresh queue of the new plan is popped again
    # plan() looks the same way without storing: env 0 restarted, env 1 keeps its new episode
    policy.reset(env_ids=[0])
    policy.plan(o2)
    torch.testing.assert_close(calls[-1]["history"][0], torch.stack([calls[-1]["history"][0, 1]] * 2))


def test_restarting_environments_is_checked():
    policy = Policy(make_dp(), make_normalizers(), sampling={"steps": 2}, execution="action_queue",
                    execution_options={"action_steps": 4}, seed=0)
    policy.act(raw_obs(3))
    with pytest.raises(ValueError, match=r"env_ids: expected indices in \[0, 3\) \(the batch the policy is acting "
                                         r"on\), got \[3\]"):
        policy.reset(env_ids=[3])
    with pytest.raises(ValueError, match=r"env_ids: a bool mask must have one entry per environment of the batch "
                                         r"\(3\), got shape \(2,\)"):
        policy.reset(env_ids=[True, False])
    with pytest.raises(ValueError, match="a seed restarts the sampler stream of the whole batch"):
        policy.reset(seed=1, env_ids=[0])
    with pytest.raises(ValueError, match="env_ids: expected indices of environments"):
        policy.reset(env_ids=[0.5])
    class StartsShort(DecisionDiffuser):  # a planner that plans from fewer states at an episode's start
        repeats_first_observation = False

    torch.manual_seed(0)
    short = StartsShort(obs_dim=OBS_DIM, act_dim=ACT_DIM, horizon=HORIZON, num_steps=20, dim=16, dim_mults=(1, 2),
                        inv_hidden_dim=32, history=3)
    with_history = Policy(short, make_normalizers(), sampling={"steps": 2})
    with_history.act(raw_obs(2))
    with pytest.raises(ValueError, match=r"decision_diffuser with a history of 3 plans from fewer states"):
        with_history.reset(env_ids=[0])
    plain = make_policy()  # no history: restarting one environment only replans the batch
    plain.act(raw_obs(2))
    plain.reset(env_ids=[1])
    assert np.all(np.isfinite(plain.act(raw_obs(2))))


@pytest.mark.parametrize("execution", ["first_action", "follow_plan"])
def test_restarting_environments_is_checked_without_a_history(execution):
    """Without a remembered history (history 1) the batch of the last act() still bounds env_ids; before any
    act() there is nothing to check them against."""
    torch.manual_seed(0)  # maze-like sizes (obs_dim = 2 x act_dim), which follow_plan needs
    algo = DecisionDiffuser(obs_dim=4, act_dim=2, horizon=HORIZON, num_steps=10, dim=8, dim_mults=(1, 2),
                            inv_hidden_dim=8)
    policy = Policy(algo, make_normalizers(obs_dim=4, act_dim=2), sampling={"steps": 2}, execution=execution)
    obs = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    policy.reset(env_ids=[7])  # no act() yet: the batch is not known
    policy.act(obs)
    with pytest.raises(ValueError, match=r"env_ids: expected indices in \[0, 4\) \(the batch the policy is acting "
                                         r"on\), got \[7\]"):
        policy.reset(env_ids=[7])
    with pytest.raises(ValueError, match=r"env_ids: expected indices in \[0, 4\).*got \[-1\]"):
        policy.reset(env_ids=[-1])
    with pytest.raises(ValueError, match=r"a bool mask must have one entry per environment of the batch \(4\), got "
                                         r"shape \(2,\)"):
        policy.reset(env_ids=np.array([True, False]))
    policy.reset(env_ids=[3])
    assert np.all(np.isfinite(policy.act(obs)))


@pytest.mark.parametrize(("normalizers", "message"), [
    (lambda: {"observations": GaussianNormalizer(), "actions": make_normalizers()["actions"]},
     r"normalizers\['observations'\]: GaussianNormalizer is not fitted"),
    (lambda: make_normalizers(obs_dim=5), r"normalizers\['observations'\] normalizes 5 dimensions; decision_diffuser "
                                          r"has observations of 11"),
    (lambda: make_normalizers(act_dim=2), r"normalizers\['actions'\] normalizes 2 dimensions"),
    (lambda: {"observations": 3, "actions": make_normalizers()["actions"]},
     r"normalizers\['observations'\]: expected a fitted Normalizer \(diffusion_rl.data\), got int"),
])
def test_normalizers_the_policy_could_not_use_are_refused_when_it_is_built(normalizers, message):
    with pytest.raises(ValueError, match=message):
        Policy(make_dd(), normalizers(), sampling={"steps": 2})


def test_load_takes_the_out_of_range_choice_of_this_process(tmp_path):
    path = make_policy().save(tmp_path / "policy")
    assert Policy.load(path, device="cpu", out_of_range="error").out_of_range == "error"
    assert Policy.load(path, device="cpu").out_of_range == "warn"
    with pytest.raises(ValueError, match=r"out_of_range: expected one of \['warn', 'error', 'ignore'\], got 'loud'"):
        Policy.load(path, device="cpu", out_of_range="loud")


def test_an_empty_restart_changes_nothing_and_a_failed_act_keeps_the_restart_pending(monkeypatch):
    policy = Policy(make_dp(), make_normalizers(), sampling={"steps": 2}, execution="action_queue",
                    execution_options={"action_steps": 4}, seed=0)
    calls = _spy_plans(policy, monkeypatch)
    for t in range(8):  # the natural loop: reset(env_ids=dones) after every step, mostly with none done
        policy.act(raw_obs(3, seed=t))
        policy.reset(env_ids=np.zeros(3, dtype=bool))
        policy.reset(env_ids=[])
    assert len(calls) == 2  # the queue of 4 actions still serves 4 steps
    torch.manual_seed(0)
    dd = DecisionDiffuser(obs_dim=OBS_DIM, act_dim=ACT_DIM, horizon=HORIZON, num_steps=20, dim=16, dim_mults=(1, 2),
                          inv_hidden_dim=32, history=3)
    with_history = Policy(dd, make_normalizers(), sampling={"steps": 2})
    with_history.act(raw_obs(2))
    with_history.reset(env_ids=np.zeros(2, dtype=bool))  # none finished: not refused

    policy.reset()
    o1, o2, o3 = (raw_obs(3, seed=s) for s in (1, 2, 3))
    policy.act(o1)
    policy.act(o2)
    policy.reset(env_ids=[1])
    original = policy.algo.plan
    monkeypatch.setattr(policy.algo, "plan", lambda obs, **kwargs: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        policy.act(raw_obs(3, seed=9))
    calls.clear()
    monkeypatch.setattr(policy.algo, "plan", lambda obs, **kwargs: (calls.append(kwargs["history"].clone()),
                                                                   original(obs, **kwargs))[1])
    policy.act(o3)
    n3 = torch.as_tensor(policy.normalizers["observations"].normalize(o3), dtype=torch.float32)
    torch.testing.assert_close(calls[0][1], torch.stack([n3[1], n3[1]]))  # restarted from o3, not the failed call's


def test_a_failed_act_at_a_new_batch_size_keeps_the_previous_batchs_history(monkeypatch):
    """A call at another batch size starts the history afresh; when it raises, the earlier batch's observations
    come back (they were lost: the next call at the old size planned as if its episodes had just begun)."""
    torch.manual_seed(0)
    dd = DecisionDiffuser(obs_dim=OBS_DIM, act_dim=ACT_DIM, horizon=HORIZON, num_steps=20, dim=16, dim_mults=(1, 2),
                          inv_hidden_dim=32, history=3)
    policy = Policy(dd, make_normalizers(), sampling={"steps": 2})
    o1, o2 = raw_obs(3, seed=1), raw_obs(3, seed=2)
    policy.act(o1)
    policy.act(o2)
    kept = [h.clone() for h in policy._history]
    original = policy.algo.plan
    monkeypatch.setattr(policy.algo, "plan", lambda obs, **kwargs: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        policy.act(raw_obs(1, seed=9))
    assert len(policy._history) == 2
    for before, after in zip(kept, policy._history):
        torch.testing.assert_close(before, after)
    seen = []
    monkeypatch.setattr(policy.algo, "plan", lambda obs, **kwargs: (seen.append(kwargs["history"].clone()),
                                                                   original(obs, **kwargs))[1])
    policy.act(raw_obs(3, seed=3))
    assert seen[0].shape[1] == 3  # o1, o2 and now
    torch.testing.assert_close(seen[0][:, 0], kept[0])


def test_a_sampler_option_the_sampler_never_reads_is_refused_not_dropped():
    """DDPM runs every step of its schedule: ``steps`` given for it (per call or assigned) was validated and then
    ignored, so a user tuning latency saw no effect; choosing DDPM with ``steps`` kept warns that it is idle."""
    policy = make_policy("decision_diffuser")
    with pytest.raises(ValueError, match=r"steps=1 has no effect: sampler 'ddpm' does not read steps; it runs all "
                                         r"20 steps .*ddim"):
        policy.act(raw_obs(), sampler="ddpm", steps=1)
    with pytest.warns(UserWarning, match=r"steps=4 kept for other samplers, not read now"):
        policy.sampler = "ddpm"
    with pytest.raises(ValueError, match="steps=2 has no effect"):
        policy.steps = 2
    with pytest.raises(ValueError, match="eta=0.5 has no effect: sampler 'dpmsolver\\+\\+' does not read eta"):
        policy.act(raw_obs(), sampler="dpmsolver++", eta=0.5)
    assert policy.steps == 4  # refused assignments change nothing
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs())
    assert calls.count == 20  # DDPM: the whole schedule (one batched forward per step with guidance)
    policy.sampler = "ddim"
    policy.steps = 2  # read again once the sampler reads it
    with NetCalls(policy.algo.net) as calls:
        policy.reset()
        policy.act(raw_obs())
    assert calls.count == 2
    # per call as well, once per sampler (act runs in a control loop): the kept steps=2 are not what runs
    with pytest.warns(UserWarning, match=r"steps=2 kept for other samplers, not read now: sampler 'ddpm'"):
        policy.act(raw_obs(), sampler="ddpm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.act(raw_obs(), sampler="ddpm")  # said once
        policy.act(raw_obs(), sampler="dpmsolver++", steps=3)  # it reads steps: nothing idle
        fresh = make_policy("decision_diffuser")
        fresh.steps = None
        fresh.act(raw_obs(), sampler="ddpm")  # nothing kept that DDPM leaves unread


def test_steps_given_to_the_constructor_for_a_sampler_that_never_reads_them_are_refused_or_warned(tmp_path):
    """``Policy(diffuser, ..., sampling={"steps": 4})`` with Diffuser's default DDPM ran all of its steps without a
    word (an assignment or a per-call setting was refused); given with the sampler, as an artifact keeps settings
    for the other samplers, they are kept with a warning, and a save and load keeps them."""
    with pytest.raises(ValueError, match=r"sampling: setting steps=4 has no effect: sampler 'ddpm' does not read "
                                         r"steps; it runs all 20 steps"):
        Policy(make_diffuser(), make_normalizers(), sampling={"steps": 4, "num_plans": 2})
    with pytest.warns(UserWarning, match=r"steps=5 kept for other samplers, not read now: sampler 'ddpm'"):
        kept = Policy(make_dd(), make_normalizers(), sampling={"sampler": "ddpm", "steps": 5})
    assert kept.steps == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Policy(make_diffuser(), make_normalizers(), sampling={"steps": None, "num_plans": 2})  # nothing idle
        Policy(make_diffuser(), make_normalizers(), sampling={"sampler": "ddim", "steps": 4, "num_plans": 2})
        # the algorithm's default steps (not the caller's words) are not said, nor an artifact's kept ones
        assert Policy(make_dd(), make_normalizers(), sampling={"sampler": "ddpm"}).steps is not None
        again = Policy.load(kept.save(tmp_path / "kept"))
    assert (again.sampler, again.steps) == ("ddpm", 5)


def test_a_warm_start_below_every_sampler_timestep_is_refused():
    """Re-noised to a timestep below the sampler's lowest, a warm replan ran no denoising step and returned the
    previous plan unchanged (the planner stopped reacting without a word): refused in every way it can be set."""
    lowest = min(make_dd().sampler("dpmsolver++", steps=2).timesteps)  # T = 20
    assert lowest > 1
    message = rf"warm_start_t=1 is below every timestep sampler 'dpmsolver\+\+' runs .* lowest is {lowest}"
    with pytest.raises(ValueError, match=message):
        Policy(make_dd(), make_normalizers(), sampling={"sampler": "dpmsolver++", "steps": 2, "warm_start_t": 1})
    policy = Policy(make_dd(), make_normalizers(), sampling={"sampler": "dpmsolver++", "steps": 2,
                                                             "warm_start_t": lowest}, seed=0)
    with pytest.raises(ValueError, match=message):
        policy.warm_start_t = 1
    assert policy.warm_start_t == lowest  # refused assignments change nothing
    with pytest.raises(ValueError, match=r"warm_start_t=\d+ is below every timestep sampler 'dpmsolver\+\+' runs "
                                         r"with steps=1"):
        policy.act(raw_obs(), steps=1)  # per call: one step runs only t = 19
    policy.act(raw_obs())
    with NetCalls(policy.algo.net) as calls:
        policy.act(raw_obs(seed=2))  # warm from the lowest timestep: one evaluation, not none
    assert calls.count == 1


def test_float64_observations_are_normalized_before_they_are_rounded_to_float32():
    """A signal with a large offset and a small spread (1e5 ± 0.01): cast to float32 first, the model saw 1.55
    where the observation is 1.32 standard deviations out; normalized in float64 it sees 1.32."""
    dd = make_dd()
    rng = np.random.default_rng(0)
    obs_norm = GaussianNormalizer().fit(1e5 + 0.01 * rng.normal(size=(500, OBS_DIM)))
    policy = Policy(dd, {"observations": obs_norm, "actions": make_normalizers()["actions"]},
                    sampling=dict(FAST["decision_diffuser"]))
    obs = np.full(OBS_DIM, 1e5 + 0.013)
    expected = (obs - obs_norm.stats["mean"]) / obs_norm.stats["std"]  # float64 all the way
    for given in (obs, torch.from_numpy(obs)):
        seen, *_ = policy._observe(given)
        assert seen.dtype == torch.float32
        np.testing.assert_allclose(seen[0].numpy(), expected, atol=1e-4)
    rounded, *_ = policy._observe(obs.astype(np.float32))  # a float32 observation carries its own rounding
    assert np.abs(rounded[0].numpy() - expected).max() > 0.1
    goal = policy._goal_state(obs[:3], batch=1)  # goals in the same units take the same path
    np.testing.assert_allclose(goal[0, :3].numpy(), expected[:3], atol=1e-4)
    assert goal.dtype == torch.float32


def test_a_bad_row_of_a_batch_is_named_in_the_error():
    from diffusion_rl.policy import ObservationError

    policy = make_policy("decision_diffuser")
    batch = raw_obs(4)
    batch[2, 5] = np.nan
    batch[3, 0] = np.inf
    for given in (batch, torch.from_numpy(batch)):
        with pytest.raises(ObservationError, match=r"in row\(s\) \[2, 3\] of the batch") as err:
            policy.act(given)
        np.testing.assert_array_equal(err.value.env_ids, [2, 3])  # what a vector-env loop resets or masks
    one = raw_obs()
    one[0] = np.nan
    with pytest.raises(ObservationError, match="NaN or inf") as err:
        policy.act(one)
    assert err.value.env_ids is None and isinstance(err.value, ValueError)


@pytest.mark.parametrize("algo", ["decision_diffuser", "diffuser"])
def test_plan_leaves_the_random_stream_of_act_where_it_was(algo):
    """A plan() for a plot between two act() calls changed every later action of a seeded run."""
    obs = raw_obs(2)
    quiet, looked = make_policy(algo), make_policy(algo)
    first = [quiet.act(obs), quiet.act(obs)]
    seen = looked.plan(obs)
    np.testing.assert_array_equal(looked.act(obs), first[0])
    np.testing.assert_array_equal(seen.actions, first[0])  # the plan the next act() makes, from noise
    looked.plan(obs, steps=2)
    np.testing.assert_array_equal(looked.act(obs), first[1])


@pytest.mark.parametrize("algo", ["diffuser", "decision_diffuser"])
def test_acting_under_inference_mode_gives_the_same_actions(algo):
    """A control loop wrapped in torch.inference_mode: the value-guided Diffuser's gradient steps failed there
    ("element 0 of tensors does not require grad"): its samples were inference tensors autograd cannot record."""
    policy = make_policy(algo)
    if algo == "diffuser":
        assert policy.algo.plan_arguments().get("guide_scale", 0) > 0  # the gradient guidance is on
    obs = raw_obs(batch=2)
    plain = [policy.act(obs) for _ in range(2)]
    policy.reset()
    with torch.inference_mode():
        inside = [policy.act(obs) for _ in range(2)]
    for a, b in zip(plain, inside):
        np.testing.assert_array_equal(a, b)


def test_a_planner_given_tensors_of_another_dtype_than_its_own_names_it():
    """Algorithm.plan with float64 observations on a float32 model failed inside torch ("Input type (double) and
    bias type (float) should be the same"); a model made float64 plans from float64 tensors as before."""
    from diffusion_rl.algos import make_algorithm

    bc = make_algorithm("bc", obs_dim=OBS_DIM, act_dim=ACT_DIM)
    for algo in (make_dd(), make_diffuser(), make_dp(), bc):
        obs = torch.zeros(2, OBS_DIM, dtype=torch.float64)
        settings = {"steps": 2} if algo.name != "bc" else {}
        with pytest.raises(ValueError, match=r"obs: expected torch.float32 \(the model's dtype; Policy converts"):
            algo.plan(obs, **settings)
        with pytest.raises(ValueError, match=r"obs: expected torch.float32"):
            algo.plan(obs.long(), **settings)
        out = algo.double().plan(obs, **settings)
        assert out.actions.dtype == torch.float64 and torch.isfinite(out.actions).all()
