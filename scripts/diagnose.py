#!/usr/bin/env python
"""Plan diagnostics of a trained planner: ``python scripts/diagnose.py policy=<path> [key=value ...]``.

    python scripts/diagnose.py policy=runs/hopper-medium/decision_diffuser/policy
    python scripts/diagnose.py policy=... num_plans=32 rollout_steps=50 only=[temperature] \
        'sweep.temperature=[1.0,0.25]'

Prints, for the artifact's sampling settings and for each value of each swept setting (configs/diagnose.yaml):
the spread of the first actions of ``num_plans`` plans from one state, their one-step dynamic-consistency error
(simulator's next state against the planned one, RMS in normalized units), and the plan error and return of a
short episode. Writes the rows as JSON (``out``; default ``<policy>/../diagnose_<env>.json``, and
``diagnose_<file stem>_<env>.json`` for a ``.safetensors`` file).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra
from _cli import (
    CONFIG_DIR,
    check_overrides,
    check_values,
    default_out,
    load_policy_for_cli,
    run_main,
    sampling_overrides_as_additions,
    to_plain,
)
from omegaconf import DictConfig

COLUMNS = (
    ("setting", "setting", "{}"),
    ("action_spread", "action std", "{:.4f}"),
    ("next_state_spread", "ŝ1 std (norm.)", "{:.4f}"),
    ("one_step_error", "1-step error", "{:.4f}"),
    ("rollout_error", "rollout error", "{:.4f}"),
    ("rollout_return", "return", "{:.1f}"),
    ("rollout_length", "steps", "{}"),
)


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table (NaN shown as '-')."""
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        cells.append([
            "-" if isinstance(row[k], float) and not math.isfinite(row[k]) else fmt.format(row[k])
            for k, _, fmt in COLUMNS
        ])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@hydra.main(config_path=CONFIG_DIR, config_name="diagnose", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffusion_rl.evaluation import diagnose
    from diffusion_rl.evaluation._files import write_text_atomic

    check_values(cfg, ints={"seed": 0, "num_plans": 2, "rollout_steps": 1}, flags=("progress",),
                 seed_span=1)  # one rollout episode
    # the artifact's sampler seed is kept: the rollout samples as `evaluate.py seed=<seed>` does (artifact's seed +
    # seed), and the plans from one state draw from the artifact's seed
    policy, policy_path, env_name = load_policy_for_cli(cfg)
    sweep = to_plain(cfg.sweep) or {}
    if cfg.only is not None:
        missing = sorted(set(cfg.only) - set(sweep))
        if missing:
            sys.exit(f"error: only={list(cfg.only)} names settings without values in sweep: {missing}; give them as "
                     f"sweep.<name>=[...] (sweep has: {', '.join(sorted(sweep))})")
        sweep = {k: sweep[k] for k in cfg.only}
    print(f"policy: {policy_path} ({policy.algo.name}); env: {env_name}; sampling: {policy.sampling}")
    try:
        rows, notes = diagnose(policy, env_name, seed=int(cfg.seed), num_plans=int(cfg.num_plans),
                               rollout_steps=int(cfg.rollout_steps), sweep=sweep, progress=bool(cfg.progress))
    except ValueError as err:
        sys.exit(f"error: {err}")
    table = [r.to_dict() for r in rows]
    print(format_table(table))
    for note in notes:
        print(f"note: {note}")
    print("action std: first actions of the plans from one state (raw units); ŝ1 std and errors: RMS over state "
          "dims in normalized units; rollout: one episode of at most rollout_steps steps")
    out = Path(cfg.out) if cfg.out else default_out(policy_path, env_name, "diagnose")
    payload = {"policy": str(Path(policy_path).resolve()), "env": env_name, "seed": int(cfg.seed),
               "num_plans": int(cfg.num_plans), "rollout_steps": int(cfg.rollout_steps),
               "sampling": dict(policy.sampling), "rows": table, "notes": notes}
    write_text_atomic(out, json.dumps(payload, indent=2, default=float))
    print(f"wrote: {out}")


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sampling_overrides_as_additions(sys.argv[1:], ("sampling.", "sweep."))]
    check_overrides("diagnose")
    run_main(main)
