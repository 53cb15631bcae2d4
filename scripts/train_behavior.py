"""Train the behaviour policies that make the local datasets (ARS V2-t linear policies or SAC MLPs, CPU only).

    python scripts/train_behavior.py env=hopper [max_env_steps=4000000] [seed=0] [num_workers=2] [key=value ...]
    python scripts/train_behavior.py env=walker2d method=sac [max_env_steps=300000] [max_seconds=7200] [...]
    python scripts/train_behavior.py env=hopper from_run=outputs/behavior/hopper-seed0.npz   # only re-select

Keys: ``env`` (hopper | walker2d | halfcheetah), ``method`` (``ars``, default: ``envs.recipes.ars.ARSConfig``'s
fields -- step_size, num_directions, top_directions, delta_std, iterations, max_env_steps, max_seconds,
eval_every, eval_episodes, eval_noise_std, num_workers, seed, ...; ``sac``: ``envs.recipes.sac.SACConfig``'s
fields -- max_env_steps, max_seconds, snapshot_every, eval_episodes, eval_noise_std, learning_starts, batch_size,
hidden, seed, ...), ``out_dir`` (all snapshots of the run, default outputs/behavior), ``weights_dir`` (where the
chosen policies go, default ``<out_dir>/weights``), ``select`` (true: choose and write medium / expert /
medium-replay policies), ``select_episodes`` (episodes per re-evaluation, default 20), ``write`` (comma list of
qualities to write, default medium,expert,medium-replay). Relative paths are taken from the repository root.

The dataset recipes read their behaviour policies from ``envs/recipes/weights`` (committed). A run never writes
there by default: copy a good result in deliberately, or pass ``weights_dir=envs/recipes/weights``.

Plain ``key=value`` arguments rather than Hydra: ``env`` here names an environment family, not a catalogue entry.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from envs import get_spec
from envs.recipes import WEIGHTS_DIR
from envs.recipes.ars import ARS_PRESETS, ARSConfig, evaluate_policy, train_ars
from envs.recipes.behavior import load_policy_sequence, save_policy_sequence, select_policies
from envs.recipes.sac import SAC_PRESETS, SACConfig, rollout_returns, train_sac

SCRIPT_KEYS = {"env": None, "method": "ars", "out_dir": "outputs/behavior", "weights_dir": None,
               "select": "true", "select_episodes": "20", "from_run": None, "write": "medium,expert,medium-replay"}
"""The script's own keys and their defaults (``weights_dir=None``: ``<out_dir>/weights``, never the committed
``envs/recipes/weights`` unless asked for)."""
METHODS = {"ars": (ARSConfig, ARS_PRESETS, train_ars), "sac": (SACConfig, SAC_PRESETS, train_sac)}
"""Training method -> (config dataclass, per-env presets, train function(config, callback=...))."""


def _parse(argv: list[str]) -> tuple[dict[str, str], dict[str, object]]:
    script, raw = dict(SCRIPT_KEYS), {}
    for arg in argv:
        if "=" not in arg:
            sys.exit(f"error: expected key=value, got {arg!r}")
        key, value = arg.split("=", 1)
        if key in script:
            script[key] = value
        else:
            raw[key] = value
    if script["method"] not in METHODS:
        sys.exit(f"error: method must be one of {', '.join(sorted(METHODS))}, got {script['method']!r}")
    config_cls, presets, _ = METHODS[script["method"]]
    if script["env"] not in presets:
        sys.exit(f"error: env must be one of {', '.join(sorted(presets))}, got {script['env']!r}")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    defaults = config_cls(env_id="x")
    ars: dict[str, object] = {}
    for key, value in raw.items():  # cast to the dataclass field's type
        if key not in fields or key == "env_id":
            sys.exit(f"error: unknown key {key!r} for method={script['method']}; valid keys: "
                     f"{', '.join(sorted(set(script) | set(fields) - {'env_id'}))}")
        if value in ("null", "None"):
            ars[key] = None
        elif value[:1] in "[{":
            ars[key] = json.loads(value)
        else:
            default = getattr(defaults, key)
            kind = type(default) if default is not None else (float if key == "max_seconds" else int)
            ars[key] = kind(float(value)) if kind is int else kind(value)
    return script, ars


def _path(value: str) -> Path:
    """A path given on the command line; a relative one is taken from the repository root."""
    return Path(value) if Path(value).is_absolute() else ROOT / value


def main(argv: list[str] | None = None) -> None:
    script, overrides = _parse(sys.argv[1:] if argv is None else argv)
    env, method = script["env"], script["method"]
    config_cls, presets, train = METHODS[method]
    config = config_cls(**{**presets[env], **overrides})
    spec = get_spec(f"{env}-medium")
    out_dir = _path(script["out_dir"])
    run_path = out_dir / (f"{env}-seed{config.seed}.npz" if method == "ars" else f"{env}-{method}-seed{config.seed}.npz")

    if script["from_run"]:
        from_run = _path(script["from_run"])
        if not from_run.is_file():
            raise SystemExit(f"error: from_run: no snapshot file at {from_run} (relative paths are taken from the "
                             "repository root); expected the .npz a previous run of this script wrote in out_dir")
        snapshots = load_policy_sequence(from_run)
        print(f"loaded {len(snapshots)} snapshots from {from_run}")
    else:
        print(f"{method.upper()} on {config.env_id}: {dataclasses.asdict(config)}")

        seen = []

        def record(snap) -> None:  # keep the run on disk as it goes: a stopped run can still be selected from
            snap.policy.info["score"] = spec.normalized_score(snap.eval_return)
            seen.append(snap.policy)
            save_policy_sequence(seen, run_path)

        result = train(config, callback=record)
        snapshots = [s.policy for s in result.snapshots]
        save_policy_sequence(snapshots, run_path)
        best = result.best()
        print(f"trained {result.seconds:.0f}s, {result.env_steps} env steps; best "
              f"noisy eval {best.eval_return:.1f} (normalized {spec.normalized_score(best.eval_return):.1f}) at "
              f"iteration {best.iteration}; all snapshots in {run_path}")

    if script["select"].lower() not in ("true", "1", "yes"):
        return
    episodes = int(script["select_episodes"])

    def evaluate(policy) -> float:
        if policy.kind == "linear":  # by the snapshot's own kind: from_run= may hold SAC snapshots with method=ars
            returns, _ = evaluate_policy(policy, config.env_id, episodes=episodes, noise_std=config.eval_noise_std,
                                         seed=12345, num_workers=config.num_workers)
        else:
            returns, _ = rollout_returns(policy, config.env_id, episodes=episodes, noise_std=config.eval_noise_std,
                                         seed=12345)
        score = float(spec.normalized_score(returns.mean()))
        print(f"  re-evaluated iteration {policy.info.get('iteration')}: normalized {score:.1f} "
              f"({episodes} episodes, noise {config.eval_noise_std})")
        return score

    t0 = time.time()
    sel = select_policies(snapshots, evaluate)
    given = script["weights_dir"]
    weights_dir = _path(given) if given not in (None, "", "null", "None") else out_dir / "weights"
    wanted = set(script["write"].split(","))
    for policy in [sel.medium, sel.expert] + sel.replay:
        if policy is not None:
            policy.info["noise_std"] = config.eval_noise_std
    if sel.medium is None:
        print("no snapshot inside the medium band; medium and medium-replay not written")
    else:
        if "medium" in wanted:
            print("medium ->", sel.medium.save(weights_dir / f"{env}-medium.npz"))
        if "medium-replay" in wanted:
            print(f"medium-replay ({len(sel.replay)} snapshots) ->",
                  save_policy_sequence(sel.replay, weights_dir / f"{env}-medium-replay.npz"))
    if "expert" in wanted:
        print(f"expert (normalized {sel.expert.info['score']:.1f}) ->",
              sel.expert.save(weights_dir / f"{env}-expert.npz"))
    print(f"selection took {time.time() - t0:.0f}s; scores {json.dumps({k: round(v, 1) for k, v in sel.scores.items()})}")
    committed = WEIGHTS_DIR  # where the dataset recipes read their behaviour policies
    if weights_dir.resolve() != committed.resolve():
        print(f"the dataset recipes read {committed}: copy the files you want from {weights_dir} there "
              "deliberately (or pass weights_dir=envs/recipes/weights)")


if __name__ == "__main__":
    from _cli import run_main  # scripts/ is on the path of a script run as a file

    run_main(main, "the snapshots recorded so far are kept in the run's .npz (rerun with from_run=<it> to select "
                   "from them)")
