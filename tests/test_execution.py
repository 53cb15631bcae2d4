"""Executions: first action, plan following, action queue; options, reset, artifacts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_rl import Policy
from diffusion_rl.algos import BehaviorCloning
from diffusion_rl.execution import EXECUTIONS, make_execution
from tests.test_policy import ACT_DIM, ACT_STD, OBS_DIM, make_normalizers, make_policy, raw_obs

torch.set_num_threads(1)


class PlanCalls:
    """Counts the algorithm's plan() calls."""

    def __init__(self, policy: Policy) -> None:
        self.count = 0
        plan = policy.algo.plan

        def counted(*args, **kwargs):
            self.count += 1
            return plan(*args, **kwargs)

        policy.algo.plan = counted


@pytest.mark.parametrize("algo", ["decision_diffuser", "diffuser"])
def test_action_queue_executes_the_chunk_then_replans(algo):
    policy = make_policy(algo, execution="action_queue", execution_options={"action_steps": 3})
    assert policy.execution == "action_queue" and policy.execution_options == {"action_steps": 3}
    obs = raw_obs(batch=2)
    chunk = policy.plan(obs).action_chunk  # what the first act() plans, for the same seed
    assert chunk.shape[:2] == (2, 7 if algo == "decision_diffuser" else 8) and chunk.shape[2] == ACT_DIM
    policy.reset()
    calls = PlanCalls(policy)
    acted = [policy.act(obs + i) for i in range(3)]  # later observations do not change queued actions
    assert calls.count == 1
    np.testing.assert_allclose(np.stack(acted, axis=1), chunk[:, :3], rtol=0, atol=3e-3 * ACT_STD)
    policy.act(obs)
    assert calls.count == 2  # the queue ran empty: replanned
    policy.act(obs[:1])
    assert calls.count == 3  # a new batch size starts afresh
    policy.reset()
    policy.act(obs)
    assert calls.count == 4  # reset drops the queue


@pytest.mark.parametrize("algo", ["decision_diffuser", "diffuser"])
def test_first_action_replans_every_step_and_matches_plan(algo):
    policy = make_policy(algo)
    calls = PlanCalls(policy)
    obs = raw_obs()
    for _ in range(3):
        policy.act(obs)
    assert calls.count == 3
    policy.reset()
    plan = policy.plan(obs)
    policy.reset()  # the same seed: act() executes the first action of the plan it makes
    np.testing.assert_allclose(policy.act(obs), plan.action_chunk[0], rtol=0, atol=3e-3 * ACT_STD)


def test_execution_options_survive_the_artifact(tmp_path):
    policy = make_policy("diffuser", execution="action_queue", execution_options={"action_steps": 5})
    loaded = Policy.load(policy.save(tmp_path / "p"))
    assert loaded.execution == "action_queue" and loaded.execution_options == {"action_steps": 5}
    plain = Policy.load(make_policy("decision_diffuser").save(tmp_path / "q"))
    assert plain.execution == "first_action" and plain.execution_options == {}


def test_each_algorithm_has_its_own_default_execution_and_a_loaded_policy_can_change_it(tmp_path):
    """A Diffusion Policy built without an execution executes Ta = 8 actions of each chunk as the paper does (it
    replanned at every step: 8x the compute and another closed-loop behaviour); Ta can be changed on a loaded
    artifact, and a refused change keeps the execution it had."""
    from diffusion_rl.algos import DiffusionPolicy

    torch.manual_seed(0)
    dp = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=16, obs_steps=2, num_steps=10, down_dims=(16, 32))
    policy = Policy(dp, make_normalizers(), sampling={"steps": 2})
    assert (policy.execution, policy.execution_options) == ("action_queue", {"action_steps": 8})
    short = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=6, obs_steps=2, num_steps=10, down_dims=(16, 32))
    assert Policy(short, make_normalizers()).execution_options == {"action_steps": 5}  # the whole shorter chunk
    # every spelling of "the algorithm's execution" takes its options, not the queue's class default of 8
    for spelled in ({"execution_options": {}}, {"execution": "action_queue"},
                    {"execution": "action_queue", "execution_options": {}}):
        assert Policy(short, make_normalizers(), **spelled).execution_options == {"action_steps": 5}, spelled
    switched = Policy(short, make_normalizers(), execution="first_action")
    switched.set_execution("action_queue")
    assert switched.execution_options == {"action_steps": 5}
    assert make_policy("decision_diffuser").execution == "first_action"

    path = policy.save(tmp_path / "dp")
    loaded = Policy.load(path, execution_options={"action_steps": 4})
    assert (loaded.execution, loaded.execution_options) == ("action_queue", {"action_steps": 4})
    calls = PlanCalls(loaded)
    for _ in range(5):
        loaded.act(raw_obs())
    assert calls.count == 2  # one plan per 4 actions
    loaded.set_execution(action_steps=2)  # drops the queue: the next call plans with the new Ta
    loaded.act(raw_obs())
    assert calls.count == 3 and loaded.execution_options == {"action_steps": 2}
    with pytest.raises(ValueError, match=r"action_steps \(Ta=16\) must be in \[1, 15\]"):
        loaded.set_execution(action_steps=16)
    assert loaded.execution_options == {"action_steps": 2}
    loaded.set_execution("first_action")
    assert (loaded.execution, loaded.execution_options) == ("first_action", {})
    assert Policy.load(path, execution="first_action").execution == "first_action"
    with pytest.raises(ValueError, match="unknown execution 'queue'"):
        Policy.load(path, execution="queue")


def test_bad_executions_are_clear_errors():
    assert set(EXECUTIONS) >= {"first_action", "follow_plan", "action_queue"}
    with pytest.raises(ValueError, match="expected one of: first_action, follow_plan, action_queue"):
        make_execution("replan_sometimes")
    with pytest.raises(ValueError, match=r"does not take options \['steps'\]; its options: \['action_steps'\]"):
        make_execution("action_queue", {"steps": 3})
    with pytest.raises(ValueError, match=r"does not take options \['foo'\]; its options: \['action_steps'\]"):
        make_execution("action_queue", {"action_steps": 4, "foo": 1})  # the valid one is not named as unknown
    for options in (["action_steps"], "action_steps=4"):  # not a mapping: named as such, not split into keys
        with pytest.raises(ValueError, match="execution options: expected a mapping of option name to value"):
            make_execution("action_queue", options)
    with pytest.raises(ValueError, match="action_steps must be an integer >= 1"):
        make_policy("diffuser", execution="action_queue", execution_options={"action_steps": 0})
    with pytest.raises(ValueError, match="its options: none"):
        make_execution("first_action", {"action_steps": 2})
    with pytest.raises(ValueError, match="'follow_plan' tracks planned states; bc plans hold actions only"):
        Policy(BehaviorCloning(obs_dim=OBS_DIM, act_dim=ACT_DIM, hidden_dim=8), make_normalizers(),
               execution="follow_plan")
    with pytest.raises(ValueError, match="needs a plan with an action chunk"):
        Policy(BehaviorCloning(obs_dim=OBS_DIM, act_dim=ACT_DIM, hidden_dim=8), make_normalizers(),
               execution="action_queue")
    # Ta > the chunk is refused at construction with the allowed range (Diffuser, horizon 8: 8 actions)
    with pytest.raises(ValueError, match=r"action_steps \(Ta=9\) must be in \[1, 8\]"):
        make_policy("diffuser", execution="action_queue", execution_options={"action_steps": 9})
    with pytest.raises(ValueError, match=r"must be in \[1, 7\]"):  # Decision Diffuser: H - 1 planned steps
        make_policy("decision_diffuser", execution="action_queue", execution_options={"action_steps": 8})


@pytest.mark.parametrize("algo", ["decision_diffuser", "diffuser", "diffusion_policy", "bc"])
def test_algorithm_and_policy_plans_are_the_same_kind_of_object(algo):
    from diffusion_rl.algos import DiffusionPolicy, PlanOutput

    if algo == "diffusion_policy":
        torch.manual_seed(0)
        net = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, obs_steps=2, num_steps=10, down_dims=(16, 32),
                              step_embed_dim=16)
        policy = Policy(net, make_normalizers(), sampling={"steps": 2}, seed=0)
    elif algo == "bc":
        policy = Policy(BehaviorCloning(obs_dim=OBS_DIM, act_dim=ACT_DIM, hidden_dim=8), make_normalizers())
    else:
        policy = make_policy(algo)
    obs = raw_obs(batch=2)
    inner = policy.algo.plan(policy._normalize("observations", torch.from_numpy(obs)))
    outer = policy.plan(obs)
    assert type(inner) is type(outer) is PlanOutput
    assert isinstance(outer.actions, np.ndarray) and outer.actions.shape == (2, ACT_DIM)
    assert outer.trajectory is None and inner.trajectory is not None
    states = policy.algo.plans_states
    assert (outer.observations is not None) == states == (outer.next_observations is not None)
    assert (outer.action_chunk is None) == (algo == "bc")
    if outer.action_chunk is not None:
        np.testing.assert_array_equal(outer.action_chunk[:, 0], outer.actions)
    if states:
        assert outer.next_observations.shape == (2, OBS_DIM)
        np.testing.assert_array_equal(outer.next_observations, outer.observations[:, outer.now + 1])
    one = policy.plan(torch.from_numpy(obs[0]))  # one unbatched torch observation: torch out, no batch axis
    assert isinstance(one.actions, torch.Tensor) and one.actions.shape == (ACT_DIM,)
    if states:
        assert one.next_observations.shape == (OBS_DIM,)


def test_warm_start_keeps_rows_aligned_while_a_history_fills():
    """A Decision Diffuser conditioned on K = 3 states pads an episode's first states with the first observation
    (as its training windows do), so its current state is always row K - 1 and the window moves with time from the
    first step: the previous plan moves on by one row per executed step, its last row repeated."""
    from diffusion_rl.algos import DecisionDiffuser

    torch.manual_seed(0)
    algo = DecisionDiffuser(obs_dim=OBS_DIM, act_dim=ACT_DIM, horizon=8, num_steps=20, dim=16, dim_mults=(1, 2),
                            inv_hidden_dim=32, history=3)
    policy = Policy(algo, make_normalizers(), sampling={"steps": 4, "warm_start_t": 6}, seed=0)
    given = []
    plan = algo.plan

    def spied(*args, **kwargs):
        given.append(kwargs.get("warm_start"))
        return plan(*args, **kwargs)

    algo.plan = spied
    nows, plans = [], []
    for i in range(5):
        policy.act(raw_obs(seed=i))
        nows.append(policy._execution.previous_now)
        plans.append(policy._execution.previous)
    assert nows == [2, 2, 2, 2, 2] and given[0] is None
    for i in range(1, 5):
        torch.testing.assert_close(given[i][:, :-1], plans[i - 1][:, 1:], rtol=0, atol=0)
        torch.testing.assert_close(given[i][:, -1], plans[i - 1][:, -1], rtol=0, atol=0)
    policy.reset()
    assert policy._execution.previous is None and policy._execution.previous_now == 0


@pytest.mark.parametrize("algo", ["decision_diffuser", "diffuser"])
def test_warm_start_replans_from_the_shifted_previous_plan_in_fewer_steps(algo):
    from tests.test_policy import BUILDERS, NetCalls, make_normalizers

    base = {**({"num_plans": 2} if algo == "diffuser" else {}), "sampler": "ddim", "steps": 4}
    policy = Policy(BUILDERS[algo](), make_normalizers(), sampling={**base, "warm_start_t": 6}, seed=0)
    cold = Policy(BUILDERS[algo](), make_normalizers(), sampling=base, seed=0)
    obs = raw_obs(batch=2)
    np.testing.assert_array_equal(policy.act(obs), cold.act(obs))  # nothing to warm-start from yet: the same
    calls = []
    for i in range(1, 4):
        with NetCalls(policy.algo.net) as counted:
            policy.act(obs + 0.01 * i)
        calls.append(counted.count)
        # the inpainted current state holds exactly in the warm-started plan
        plan_now = policy._execution.previous[:, 0, -policy.obs_dim:]
        expected = policy._normalize("observations", torch.from_numpy((obs + 0.01 * i).astype(np.float32)))
        torch.testing.assert_close(plan_now, expected, rtol=0, atol=1e-6)
    with NetCalls(cold.algo.net) as full:
        cold.act(obs)
    assert full.count == 4 and calls == [2, 2, 2]  # DDIM 4 of 20 steps: timesteps <= 6 are the last two
    policy.reset()  # drops the previous plan: the next plan starts from noise again
    assert policy._execution.previous is None
    with NetCalls(policy.algo.net) as after:
        policy.act(obs)
    assert after.count == 4
    with pytest.raises(ValueError, match=r"warm_start_t: expected None or an integer in \[0, 19\]"):
        policy.act(obs, warm_start_t=20)


def test_follow_plan_tracks_each_waypoint_with_its_velocity_and_holds_after_the_end(monkeypatch):
    """Diffuser's maze2d controller: the action is (p*_{k+1} - p) + (v*_{k+1} - v); only past the plan's end is the
    last waypoint held with zero velocity (at the last waypoint itself its planned velocity still counts)."""
    from diffusion_rl.algos import Diffuser, PlanOutput
    from diffusion_rl.data import GaussianNormalizer

    torch.manual_seed(0)
    algo = Diffuser(obs_dim=4, act_dim=2, horizon=4, num_steps=10, dim=8, dim_mults=(1, 2), value_guided=False)
    rng = np.random.default_rng(0)
    normalizers = {"observations": GaussianNormalizer().fit(rng.normal(size=(200, 4))),
                   "actions": GaussianNormalizer().fit(rng.normal(size=(200, 2)))}
    policy = Policy(algo, normalizers, execution="follow_plan", sampling={"sampler": "ddim", "steps": 2})
    waypoints = torch.tensor([[[k, 0.0, 1.0, 0.0] for k in range(4)]])  # x = k, moving at vx = 1
    planned = normalizers["observations"].normalize(waypoints)
    monkeypatch.setattr(policy.algo, "plan", lambda obs, **kwargs: PlanOutput(
        actions=torch.zeros(1, 2), trajectory=planned, observations=planned, now=0))
    actions = [policy.act(np.zeros(4, dtype=np.float32)) for _ in range(5)]
    # steps 0, 1, 2 track waypoints 1, 2, 3 with their velocity; steps 3, 4 hold waypoint 3 at rest
    np.testing.assert_allclose(np.stack(actions)[:, 0], [2.0, 3.0, 4.0, 3.0, 3.0], atol=1e-5)
    np.testing.assert_allclose(np.stack(actions)[:, 1], 0.0, atol=1e-5)



def test_follow_plan_tracks_from_the_observation_as_given_when_the_normalizer_clips(monkeypatch):
    """A CDF normalizer clips observations into the data's range: the PD law must use the real state, not the
    state un-normalized from the clipped one (a fast point mass beyond the data's velocities)."""
    from diffusion_rl.algos import Diffuser, PlanOutput
    from diffusion_rl.data import CDFNormalizer, GaussianNormalizer

    torch.manual_seed(0)
    algo = Diffuser(obs_dim=4, act_dim=2, horizon=4, num_steps=10, dim=8, dim_mults=(1, 2), value_guided=False)
    rng = np.random.default_rng(0)
    normalizers = {"observations": CDFNormalizer().fit(rng.uniform(-0.5, 0.5, size=(500, 4))),
                   "actions": GaussianNormalizer().fit(rng.normal(size=(200, 2)))}
    policy = Policy(algo, normalizers, execution="follow_plan", sampling={"sampler": "ddim", "steps": 2})
    waypoints = torch.tensor([[[0.1 * k, 0.0, 0.2, 0.0] for k in range(4)]])
    planned = normalizers["observations"].normalize(waypoints)
    monkeypatch.setattr(policy.algo, "plan", lambda obs, **kwargs: PlanOutput(
        actions=torch.zeros(1, 2), trajectory=planned, observations=planned, now=0))
    obs = np.array([0.0, 0.0, 0.9, -0.9], dtype=np.float32)  # velocities beyond the data's +-0.5
    target = normalizers["observations"].unnormalize(planned)[0, 1].numpy()  # waypoint 1, as the CDF round-trips it
    expected = (target[:2] - obs[:2]) + (target[2:] - obs[2:])
    np.testing.assert_allclose(policy.act(obs), expected, atol=1e-4)

def test_a_warm_start_with_follow_plan_which_never_replans_is_refused_or_warned(tmp_path):
    """follow_plan plans once per episode, so warm_start_t was accepted and never read: refused when given (in the
    constructor's sampling without a sampler, by assignment or per call), said with a warning when an artifact
    keeps it."""
    import warnings

    from diffusion_rl.algos import Diffuser
    from diffusion_rl.data import GaussianNormalizer

    algo = Diffuser(obs_dim=4, act_dim=2, horizon=4, num_steps=10, dim=8, dim_mults=(1, 2), value_guided=False)
    rng = np.random.default_rng(0)
    normalizers = {"observations": GaussianNormalizer().fit(rng.normal(size=(200, 4))),
                   "actions": GaussianNormalizer().fit(rng.normal(size=(200, 2)))}
    message = r"setting warm_start_t=6 has no effect: execution 'follow_plan' plans once after reset\(\)"
    with pytest.raises(ValueError, match="sampling: " + message):
        Policy(algo, normalizers, execution="follow_plan", sampling={"warm_start_t": 6})
    policy = Policy(algo, normalizers, execution="follow_plan", sampling={"sampler": "ddim", "steps": 2})
    with pytest.raises(ValueError, match=message):
        policy.warm_start_t = 6
    with pytest.raises(ValueError, match=message):
        policy.act(np.zeros(4, dtype=np.float32), warm_start_t=6)
    assert policy.warm_start_t is None and policy.act(np.zeros(4, dtype=np.float32)).shape == (2,)
    with pytest.warns(UserWarning, match=r"warm_start_t=6 has no effect: execution 'follow_plan'"):
        kept = Policy(algo, normalizers, execution="follow_plan",
                      sampling={"sampler": "ddim", "steps": 2, "warm_start_t": 6})
    assert kept.warm_start_t == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Policy(algo, normalizers, execution="first_action", sampling={"sampler": "ddim", "steps": 2,
                                                                     "warm_start_t": 6})


def test_follow_plan_aims_past_the_history_rows_of_a_planner_given_k_past_states(monkeypatch):
    """A Decision Diffuser with history K = 3 plans rows [s_-2, s_-1, s_0, s_1, ...] (now = 2): the first target is
    row 3, not the padded copies of the current state in rows 1 and 2."""
    from diffusion_rl.algos import DecisionDiffuser, PlanOutput
    from diffusion_rl.data import GaussianNormalizer

    algo = DecisionDiffuser(obs_dim=4, act_dim=2, horizon=8, num_steps=10, dim=8, dim_mults=(1, 2), history=3)
    rng = np.random.default_rng(0)
    normalizers = {"observations": GaussianNormalizer().fit(rng.normal(size=(200, 4))),
                   "actions": GaussianNormalizer().fit(rng.normal(size=(200, 2)))}
    policy = Policy(algo, normalizers, execution="follow_plan", sampling={"sampler": "ddim", "steps": 2})
    rows = [0.0, 0.0, 0.0] + [float(k) for k in range(1, 6)]  # three history rows at x = 0, then x = 1..5
    planned = normalizers["observations"].normalize(torch.tensor([[[x, 0.0, 0.0, 0.0] for x in rows]]))
    monkeypatch.setattr(policy.algo, "plan", lambda obs, **kwargs: PlanOutput(
        actions=torch.zeros(1, 2), trajectory=planned, observations=planned, now=2))
    actions = [policy.act(np.zeros(4, dtype=np.float32)) for _ in range(6)]
    # targets x = 1, 2, 3, 4, 5, then the last waypoint held, seen from x = 0
    np.testing.assert_allclose(np.stack(actions)[:, 0], [1.0, 2.0, 3.0, 4.0, 5.0, 5.0], atol=1e-5)


def test_follow_plan_needs_a_position_and_a_velocity_per_action():
    from diffusion_rl.algos import Diffuser

    for obs_dim, act_dim in ((5, 2), (4, 3), (6, 2)):  # failed at the first act, or returned truncated actions
        algo = Diffuser(obs_dim=obs_dim, act_dim=act_dim, horizon=4, num_steps=10, dim=8, dim_mults=(1, 2),
                        value_guided=False)
        with pytest.raises(ValueError, match=rf"obs_dim = 2 x act_dim.*has obs_dim {obs_dim} and act_dim {act_dim}"):
            Policy(algo, make_normalizers_for(obs_dim, act_dim), execution="follow_plan")


def make_normalizers_for(obs_dim: int, act_dim: int) -> dict:
    from diffusion_rl.data import GaussianNormalizer

    rng = np.random.default_rng(0)
    return {"observations": GaussianNormalizer().fit(rng.normal(size=(50, obs_dim))),
            "actions": GaussianNormalizer().fit(rng.normal(size=(50, act_dim)))}


def test_a_chunk_longer_than_the_plans_states_keeps_the_expected_states_it_has():
    """A Diffuser plan of H rows has H - 1 states after its first action: a queue of all H actions knows the next
    state of the first H - 1 (it knew none when one was missing), and the last action has none."""
    policy = make_policy("diffuser", execution="action_queue", execution_options={"action_steps": np.int64(8)})
    assert policy.execution_options == {"action_steps": 8} and type(policy.execution_options["action_steps"]) is int
    obs = raw_obs(batch=1)
    plan = policy.plan(obs)
    policy.reset()
    seen = []
    for _ in range(8):
        policy.act(obs)
        seen.append(policy.expected_next)
    assert all(s is not None for s in seen[:7]) and seen[7] is None
    np.testing.assert_allclose(seen[0], plan.observations[:, 1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(seen[6], plan.observations[:, 7], rtol=1e-4, atol=1e-4)
