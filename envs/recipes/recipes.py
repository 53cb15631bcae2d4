"""The dataset recipes: which behaviour, how much of it, and with what noise, for each catalogue entry.

Locomotion (hopper, walker2d, halfcheetah), following D4RL / Minari:

* ``medium``: the medium policy (an ARS or SAC run stopped at about a third of expert return) with Gaussian action
  noise;
* ``expert``: the best policy of the run, same noise;
* ``medium-replay``: the run's snapshots from the first one up to the medium one, replayed in training order with
  the same noise, an equal share of steps each -- a stand-in for "the replay buffer of the training up to the
  medium level" that needs no training to remake;
* ``medium-expert``: half the steps from ``medium`` and half from ``expert``, concatenated (D4RL: 1M + 1M).

Maze2D: D4RL's scripted waypoint controller going to random goal cells with action noise 0.5, episodes cut every
``max_episode_steps`` (no RL), rewards labelled towards the evaluation goal as in D4RL's maze2d-*-v1 files.

A recipe's :data:`RECIPE_REVISIONS` entry grows when a change makes its datasets differ from those made before;
datasets record the revision they were made with (``recipe_revision``), and loading an older one warns.

Recipes are looked up in :data:`RECIPES` by quality (locomotion) or by ``"maze2d"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from envs.catalogue import EnvSpec, get_spec
from envs.recipes.behavior import load_policy_sequence
from envs.recipes.collect import Collected, Segment, collect, split_steps
from envs.recipes.policies import BehaviorPolicy, load_policy

__all__ = [
    "MAZE2D_NOISE_STD",
    "RECIPES",
    "RECIPE_REVISIONS",
    "WEIGHTS_DIR",
    "Recipe",
    "load_behavior",
    "load_behavior_sequence",
    "recipe_for",
    "recipe_revision",
    "run_recipe",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MAZE2D_NOISE_STD = 0.5
"""D4RL's maze2d action noise (``act + randn * 0.5``)."""


RECIPE_REVISIONS: dict[str, tuple[int, str]] = {
    "maze2d": (2, "revision 2 labels rewards towards the evaluation goal at each step's observation, as D4RL's "
                  "maze2d-*-v1 files do; revision 1 rewarded reaching the controller's passing goals"),
}
"""Per :data:`RECIPES` key: the current revision and what changed (keys not listed are at revision 1)."""


def recipe_revision(name: str) -> tuple[int, str]:
    """The current revision of catalogue entry ``name``'s recipe and what its last change was (1, "" if none)."""
    spec = get_spec(name)
    return RECIPE_REVISIONS.get("maze2d" if spec.env == "maze2d" else spec.quality, (1, ""))


@dataclass
class Recipe:
    spec: EnvSpec
    segments: list[Segment]
    description: str

    @property
    def revision(self) -> int:
        """The recipe's revision (:data:`RECIPE_REVISIONS`), recorded in the datasets it makes."""
        return recipe_revision(self.spec.name)[0]


def _weights_path(env: str, quality: str) -> Path:
    return WEIGHTS_DIR / f"{env}-{quality}.npz"


BEHAVIOR_METHODS = {"hopper": "ars", "walker2d": "sac", "halfcheetah": "sac"}
"""How each env's committed behaviour policies were trained (ARS never reached walker2d's medium level)."""


def _missing(env: str, quality: str) -> FileNotFoundError:
    method = BEHAVIOR_METHODS.get(env, "ars")
    return FileNotFoundError(
        f"no {quality} behaviour policy for {env}: {_weights_path(env, quality)} is missing; train it with "
        f"`python scripts/train_behavior.py env={env} method={method} weights_dir=envs/recipes/weights` (without "
        "weights_dir it writes to outputs/behavior/weights, for you to check before copying)"
    )


def load_behavior(env: str, quality: str) -> BehaviorPolicy:
    """The committed behaviour policy ``weights/<env>-<quality>.npz`` (quality ``medium`` or ``expert``)."""
    path = _weights_path(env, quality)
    if not path.is_file():
        raise _missing(env, quality)
    return load_policy(path)


def load_behavior_sequence(env: str) -> list[BehaviorPolicy]:
    """The committed snapshot sequence ``weights/<env>-medium-replay.npz``."""
    path = _weights_path(env, "medium-replay")
    if not path.is_file():
        raise _missing(env, "medium-replay")
    return load_policy_sequence(path)


def _policy_segment(spec: EnvSpec, policy: BehaviorPolicy, steps: int, label: str) -> Segment:
    noise = float(policy.info.get("noise_std", policy.info.get("eval_noise_std", 0.1)))
    return Segment("policy", spec.gym_id, steps, dict(policy=policy.to_arrays(), noise_std=noise), label)


def _single(quality: str) -> Callable[[EnvSpec, int], Recipe]:
    def build(spec: EnvSpec, steps: int) -> Recipe:
        policy = load_behavior(spec.env, quality)
        seg = _policy_segment(spec, policy, steps, quality)
        desc = (f"{quality} behaviour policy ({policy.kind}, {policy.info.get('method', 'ARS V2-t')}, iteration "
                f"{policy.info.get('iteration')}, {policy.info.get('env_steps', '?')} training env steps, "
                f"noisy normalized score {policy.info.get('score', float('nan')):.1f}) acting in {spec.gym_id} "
                f"with Gaussian action noise std {seg.params['noise_std']} clipped to the action bounds; "
                f"weights envs/recipes/weights/{spec.env}-{quality}.npz")
        return Recipe(spec, [seg], desc)

    return build


def _medium_replay(spec: EnvSpec, steps: int) -> Recipe:
    policies = load_behavior_sequence(spec.env)
    shares = split_steps(steps, len(policies))
    segs = [_policy_segment(spec, p, n, f"snapshot {p.info.get('iteration')}") for p, n in zip(policies, shares)]
    method = policies[-1].info.get("method", "ARS V2-t")
    desc = (f"medium-replay: {len(policies)} {method} training snapshots (iterations "
            f"{policies[0].info.get('iteration')}..{policies[-1].info.get('iteration')}, up to the medium policy) "
            f"replayed in training order, an equal share of steps each, in {spec.gym_id} with Gaussian action "
            f"noise std {segs[0].params['noise_std']}; weights envs/recipes/weights/{spec.env}-medium-replay.npz")
    return Recipe(spec, segs, desc)


def _medium_expert(spec: EnvSpec, steps: int) -> Recipe:
    if steps < 2:
        raise ValueError(f"num_steps must be >= 2 for {spec.name}, got {steps}: its data is half medium, half "
                         "expert steps")
    half = steps // 2
    med = _single("medium")(spec, steps - half)
    exp = _single("expert")(spec, half)
    return Recipe(spec, med.segments + exp.segments,
                  f"medium-expert: {steps - half} steps of [{med.description}] then {half} steps of "
                  f"[{exp.description}]")


def _maze2d(spec: EnvSpec, steps: int) -> Recipe:
    seg = Segment("maze2d", spec.gym_id, steps,
                  dict(noise_std=MAZE2D_NOISE_STD, max_episode_steps=spec.max_episode_steps), spec.quality)
    desc = (f"maze2d recipe of D4RL: waypoint PD controller (shortest cell path, p_gain 10, d_gain -1) steering "
            f"to random goal cells of the {spec.quality} maze, a new goal whenever the current one is reached, "
            f"Gaussian action noise std {MAZE2D_NOISE_STD} clipped to [-1, 1]; one continuous trajectory per "
            f"collection chunk (the env resets at each chunk's start), cut into episodes of {spec.max_episode_steps} "
            "steps (timeouts); no RL; sparse rewards towards the evaluation goal (the layout's goal cell) at each "
            "step's observation, as D4RL's maze2d-*-v1 files (infos/goal: the controller's passing goal)")
    return Recipe(spec, [seg], desc)


RECIPES: dict[str, Callable[[EnvSpec, int], Recipe]] = {
    "medium": _single("medium"),
    "expert": _single("expert"),
    "medium-replay": _medium_replay,
    "medium-expert": _medium_expert,
    "maze2d": _maze2d,
}


def recipe_for(name: str, num_steps: int | None = None) -> Recipe:
    """The recipe of catalogue entry ``name`` for ``num_steps`` (default: the catalogue's dataset size)."""
    spec = get_spec(name)
    steps = spec.dataset_steps if num_steps is None else int(num_steps)
    if steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    key = "maze2d" if spec.env == "maze2d" else spec.quality
    return RECIPES[key](spec, steps)


def run_recipe(
    name: str, num_steps: int | None = None, *, seed: int = 0, num_workers: int = 2, progress: bool = True
) -> tuple[Recipe, Collected]:
    """Build the recipe of ``name`` and collect it."""
    recipe = recipe_for(name, num_steps)
    data = collect(recipe.segments, seed=seed, num_workers=num_workers, progress=progress,
                   desc=f"making {recipe.spec.local_id}")
    return recipe, data
