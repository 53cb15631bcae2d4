#!/usr/bin/env python
"""Score and time each sampler setting of trained planners: the quality-versus-speed table.

    python scripts/speed_quality.py policies.decision_diffuser=runs/hopper-medium/decision_diffuser/policy \
        policies.diffuser=runs/hopper-medium/diffuser/policy

Keys: configs/speed_quality.yaml. Each (artifact, row, variant) is one ``scripts/evaluate.py`` run (its JSON in
``root``; finished ones are skipped) and one in-process timing at batch 1 with one torch thread.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from _cli import CONFIG_DIR, check_overrides, run_main, sampling_overrides_as_additions, to_plain  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "warm", "compiled")


def row_name(row: dict, variant: str) -> str:
    steps = "all" if row.get("steps") is None else row["steps"]
    return f"{row['sampler']}-{steps}-{variant}"


def row_variants(row: dict, variants: list[str]) -> list[str]:
    """The variants a row is run in. The full DDPM chain is the reference every other row is paired with, so it
    is run plain whatever ``variants`` says (``variants=[warm]`` used to leave it out, and with it the fast
    candidate); a warm start of it is not run (that is DDPM from warm_t, a row of its own)."""
    if row["sampler"] == "ddpm":
        return ["plain", *(["compiled"] if "compiled" in variants else [])]
    return list(variants)


def stale_because(result: dict, cfg: DictConfig, path: str, row: dict, variant: str, warm_t: int) -> str | None:
    """Why a finished row's eval JSON does not answer this sweep's question (another artifact, or one retrained
    at the same path, other episodes, seeds or sampler settings), or None when it does."""
    extra = result.get("extra", {})
    sampling = extra.get("sampling", {})
    from diffusion_rl.artifact import recorded_weights_digest

    wanted = {"policy": str(Path(path).resolve()), "weights_sha256": recorded_weights_digest(path),
              "episodes": int(cfg.episodes), "seed": int(cfg.seed), "num_envs": int(cfg.num_envs),
              "sampler": row["sampler"], "steps": row.get("steps"),
              "warm_start_t": warm_t if variant == "warm" else None, "compile": variant == "compiled",
              # evaluate.py's sampler seeding changed on 2026-12-07 (the artifact's seed + seed + i): rows from
              # before record none and are evaluated again
              "sampler_seed": "recorded", "precision": "float32"}
    found = {"policy": extra.get("policy"), "weights_sha256": extra.get("weights_sha256"),
             "episodes": result.get("episodes"), "seed": result.get("seed"), "num_envs": result.get("num_envs"),
             "sampler": sampling.get("sampler"), "steps": sampling.get("steps"),
             "warm_start_t": sampling.get("warm_start_t"), "compile": bool(extra.get("compile")),
             "sampler_seed": "recorded" if result.get("sampler_seed") is not None else None,
             "precision": extra.get("precision")}
    if row.get("steps") is None:  # the full chain: whatever steps the artifact keeps for other samplers
        wanted.pop("steps"), found.pop("steps")
    differs = [f"{k} {found[k]!r} (now {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    return "; ".join(differs) or None


def evaluate_row(cfg: DictConfig, label: str, path: str, row: dict, variant: str, warm_t: int) -> dict:
    """The eval JSON of one row (running scripts/evaluate.py unless a finished one answers the same question)."""
    out = Path(cfg.root) / label / f"{row_name(row, variant)}.json"
    if out.is_file():
        why = stale_because(json.loads(out.read_text()), cfg, path, row, variant, warm_t)
        if why is None:
            return json.loads(out.read_text())
        print(f"stale  {label} {row_name(row, variant)}: {why}; evaluating again", flush=True)
    steps = "null" if row.get("steps") is None else str(row["steps"])
    command = [sys.executable, str(ROOT / "scripts" / "evaluate.py"), f"policy={path}",
               f"episodes={cfg.episodes}", f"num_envs={cfg.num_envs}", f"seed={cfg.seed}", f"out={out}",
               "progress=false", f"compile={'true' if variant == 'compiled' else 'false'}",
               f"++sampling.sampler={row['sampler']}", f"++sampling.steps={steps}",
               f"++sampling.warm_start_t={warm_t if variant == 'warm' else 'null'}"]
    print(f"run    {label} {row_name(row, variant)}", flush=True)
    # the caller's folder: relative paths (out=, policy=) mean to evaluate.py what they mean here
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: {label} {row_name(row, variant)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def decisions_per_s(path: str, row: dict, variant: str, warm_t: int, rounds: int) -> float:
    """Batch-1 decisions per second of the artifact with the row's settings (benchmark.py's timers; this row's
    rounds alone, so rows timed at other moments of a shared machine compare less exactly than a benchmark.py
    ratio)."""
    import numpy as np
    import torch
    from benchmark import _act_timers, _first_observation, _warm_timer, interleaved

    from diffusion_rl.policy import Policy

    torch.set_num_threads(1)
    policy = Policy.load(path, device="cpu", compile=variant == "compiled")
    policy.sampler, policy.steps = row["sampler"], row.get("steps")
    policy.warm_start_t = warm_t if variant == "warm" else None
    obs, _, _ = _first_observation(policy.env_name)
    timer = _warm_timer(policy, obs) if variant == "warm" else _act_timers(policy, np.asarray(obs))[0]
    return 1.0 / interleaved({"row": timer}, rounds, 3, warmup=1)["row"]


def paired_holds(scores: list[float], reference: list[float]) -> bool:
    """Whether a row keeps the reference row's score: the mean of the per-episode differences (the same reset
    seeds, so the start states cancel) is above minus one standard error of that mean. Unpaired, a noisy row's own
    error was ignored."""
    import numpy as np

    d = np.asarray(scores, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0
    return float(d.mean()) >= -se


@hydra.main(config_path=CONFIG_DIR, config_name="speed_quality", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffusion_rl.evaluation.table import replace_section, write_text_atomic
    from diffusion_rl.policy import Policy

    policies = to_plain(cfg.policies) or {}
    if not policies:
        sys.exit("error: policies: give at least one artifact, e.g. policies.decision_diffuser=<path>")
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    lines = ["| policy | sampler | steps | variant | score | decisions/s |", "|---|---|---|---|---|---|"]
    notes = []
    for label, path in policies.items():
        path = str(Path(path).resolve())  # recorded in each row's eval JSON: the same artifact from any folder
        try:
            num_steps = Policy.load(path, device="cpu").algo.schedule.num_steps
        except (FileNotFoundError, ValueError) as err:
            sys.exit(f"error: policies.{label}={path}: {err}")
        warm_t = max(1, int(float(cfg.warm_fraction) * num_steps))
        rows = []
        for row in to_plain(cfg.rows):
            for variant in row_variants(row, cfg.variants):
                result = evaluate_row(cfg, label, path, row, variant, warm_t)
                hz = decisions_per_s(path, row, variant, warm_t, int(cfg.rounds))
                if result.get("normalized_scores") is None:
                    sys.exit(f"error: policies.{label}: its env has no normalized scores (a robot task?); "
                             "speed_quality compares D4RL-normalized scores")
                rows.append((row, variant, result["normalized_score_mean"], result["normalized_score_stderr"], hz,
                             result["normalized_scores"]))
                err = result["normalized_score_stderr"]
                steps = "all" if row.get("steps") is None else row["steps"]
                shown = variant + (f" (t = {warm_t})" if variant == "warm" else "")
                lines.append(f"| {label} | {row['sampler']} | {steps} | {shown} | {result['normalized_score_mean']:.1f}"
                             f"{'' if err is None or not math.isfinite(err) else f' ± {err:.1f}'} | {hz:.1f} |")
        full = [r for r in rows if r[0]["sampler"] == "ddpm" and r[1] == "plain"]
        if full:
            ok = [r for r in rows if paired_holds(r[5], full[0][5])]
            best = max(ok, key=lambda r: r[4])
            notes.append(f"{label}: fastest row whose episodes score within one paired standard error of full "
                         f"DDPM's on the same reset seeds ({full[0][2]:.1f}): {row_name(best[0], best[1])} at "
                         f"{best[4]:.1f} decisions/s ({best[2]:.1f}); picked from {len(rows)} rows of "
                         f"{cfg.episodes} episodes, so confirm it on other seeds before making it a default")
    body = "\n".join([f"Command: `python scripts/speed_quality.py {' '.join(sys.argv[1:])}`", "",
                      f"{cfg.episodes} episodes per row (reset seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1}); "
                      "decisions/s at batch 1, one torch thread, median of rounds timed per row (rows one after "
                      "another, not interleaved with each other).", "", *lines, "",
                      *[f"- {n}" for n in notes]])
    print(body)
    if cfg.results:
        target = Path(cfg.results)
        old = target.read_text() if target.is_file() else ""
        write_text_atomic(target, replace_section(old, "speed-quality", body))
        print(f"wrote: {target}")


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sampling_overrides_as_additions(sys.argv[1:], ("policies.",))]
    check_overrides("speed_quality")
    run_main(main, "rerun the same command: finished rows are skipped")
