#!/usr/bin/env python
"""Distil a trained planner or policy into a one-step student: ``python scripts/distill.py policy=<path>``.

    python scripts/distill.py policy=runs/hopper-medium/decision_diffuser/policy
    python scripts/distill.py policy=runs/hopper-medium/decision_diffuser/policy method=consistency trainer.max_steps=10000
    python scripts/distill.py policy=runs/point-obstacle/diffusion_policy/policy student_steps=2 trainer.max_steps=500

Keys: configs/distill.yaml. The student is trained on the teacher's own data (its recorded dataset, made locally
if missing) with the teacher's normalizers, then scored like any artifact (D4RL-normalized score or success rate)
with its decisions per second; ``<run_dir>/eval.json`` holds both.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from _cli import CONFIG_DIR, check_overrides, check_values, run_main, to_plain  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402


@hydra.main(config_path=CONFIG_DIR, config_name="distill", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import json

    import numpy as np

    from diffusion_rl.distillation import check_method, distill_policy
    from diffusion_rl.evaluation import evaluate
    from diffusion_rl.evaluation._files import write_text_atomic
    from diffusion_rl.pipeline import load_or_make_dataset
    from diffusion_rl.policy import Policy

    if not cfg.policy:
        sys.exit("error: policy=<path> is required: the teacher artifact to distil")
    check_values(cfg, ints={"student_steps": 1, "intervals": 1, "samples": 1, "seed": 0}, out=None)
    try:
        check_method(cfg.method, cfg.student_steps)  # before anything is loaded
    except ValueError as err:
        sys.exit(f"error: {err}")
    check_values(cfg.eval, ints={"episodes": 1, "num_envs": 1, "seed": 0}, optional_ints={"max_episode_steps": 1},
                 out=None, seed_span="episodes")
    try:
        teacher = Policy.load(str(cfg.policy), device=cfg.device)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: cannot load policy={cfg.policy}: {err}")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(str(cfg.policy)).resolve().parent / "distilled"
    if not cfg.trainer.get("resume"):  # before the dataset is loaded and the teacher's plans are drawn
        from diffusion_rl.training import check_fresh_run

        try:
            check_fresh_run(run_dir / "checkpoints", "trainer.resume=true")
        except ValueError as err:
            sys.exit(f"error: {err}")
    source = cfg.dataset or teacher.metadata.get("dataset") or teacher.env_name
    if not source:
        sys.exit(f"error: the artifact {cfg.policy} records no dataset or environment; pass dataset=<source>")
    data = teacher.metadata.get("data")
    if data is None:  # an artifact written before data settings were recorded: the algorithm's defaults
        data = to_plain(OmegaConf.load(Path(CONFIG_DIR) / "algo" / f"{teacher.algo.name}.yaml").get("data", {}))
        print(f"note: {cfg.policy} records no data settings; using configs/algo/{teacher.algo.name}.yaml's {data}")
    store = load_or_make_dataset(str(source))
    trainer = {**to_plain(cfg.trainer), "run_dir": str(run_dir), "seed": int(cfg.seed)}
    try:
        student, summary = distill_policy(teacher, store, data=data, method=str(cfg.method),
                                          intervals=int(cfg.intervals), samples=int(cfg.samples),
                                          next_step_weight=cfg.next_step_weight,
                                          target_share=cfg.target_share,
                                          student_steps=int(cfg.student_steps),
                                          guidance_weight=cfg.guidance_weight, target_decay=float(cfg.target_decay),
                                          temperature=cfg.temperature,
                                          student_prediction=cfg.student_prediction,
                                          trainer=trainer)
    except ValueError as err:
        sys.exit(f"error: {err}")
    student.metadata["dataset"] = str(source)  # what the student learned from (dataset= may differ from the teacher's)
    path = student.save(run_dir / "policy")
    print(f"artifact: {path}")
    env_name = teacher.env_name
    result = evaluate(student, env_name, episodes=int(cfg.eval.episodes), num_envs=int(cfg.eval.num_envs),
                      seed=int(cfg.eval.seed), max_episode_steps=cfg.eval.max_episode_steps)
    obs = np.asarray(store["observations"][:1], dtype=np.float32)
    student.reset(seed=0)
    student.act(obs)
    start = time.perf_counter()
    for _ in range(20):
        student.reset(seed=0)
        student.act(obs)
    hz = 20 / (time.perf_counter() - start)
    payload = {**result.to_dict(), "teacher": str(Path(str(cfg.policy)).resolve()), "policy": str(path),
               "method": str(cfg.method), "train_steps": summary["step"], "student_steps": int(cfg.student_steps),
               "decisions_per_s_batch1": hz}
    write_text_atomic(run_dir / "eval.json", json.dumps(payload, indent=2, default=float) + "\n")
    print(f"eval:  {result}")
    print(f"speed: {hz:.1f} decisions/s at batch 1 ({int(cfg.student_steps)} network evaluation(s) per plan)")


if __name__ == "__main__":
    check_overrides("distill")
    run_main(main, "rerun with trainer.resume=true to continue from the last checkpoint")
