"""distill_policy: a DDPM-sampling teacher (Diffuser's default) is distilled directly from its deterministic twin,
DDIM over all its steps; settings are refused before anything is built."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_rl.algos import Diffuser
from diffusion_rl.distillation import DISTILLATION_METHODS, check_method, check_on_grid, distill_policy
from diffusion_rl.policy import Policy
from tests.algos.toy import ACT_DIM, OBS_DIM, toy_dataset, toy_store


def test_a_ddpm_teacher_is_distilled_from_its_ddim_twin():
    torch.manual_seed(0)
    data = toy_dataset(8, normalizer="gaussian", returns=False)
    teacher = Diffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=16, dim_mults=(1, 2), value_guided=False)
    policy = Policy(teacher, {k: data.normalizers[k] for k in ("observations", "actions")}, seed=7,
                    sampling={"sampler": "ddpm"})
    lines: list[str] = []
    student, summary = distill_policy(policy, toy_store(), data={"normalizer": "gaussian"}, samples=32,
                                      trainer={"max_steps": 3, "batch_size": 8, "progress": False},
                                      log=lines.append)
    assert any("drawn by ddim over all 10 steps" in line for line in lines), lines
    meta = student.metadata["distillation"]
    assert meta["method"] == "direct" and meta["teacher_sampler"] == "ddim" and meta["teacher_steps"] == 10
    assert summary["step"] == 3 and student.sampler == "consistency" and student.steps == 1
    # the record names the student's sampling steps and the distillation's training steps apart ("steps" was the
    # training step count, easily read as the student's)
    assert meta["student_steps"] == 1 and meta["train_steps"] == 3 and "steps" not in meta
    # the teacher's settings, including its seed, and the data settings the student was trained on are recorded
    assert student.seed == 7 and student.metadata["data"] == {"normalizer": "gaussian"}
    assert np.all(np.isfinite(student.act(np.zeros((2, OBS_DIM), dtype=np.float32))))


def test_the_student_plans_at_the_temperature_it_was_trained_at():
    torch.manual_seed(0)
    data = toy_dataset(8, normalizer="gaussian", returns=False)
    teacher = Diffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=16, dim_mults=(1, 2), value_guided=False)
    policy = Policy(teacher, {k: data.normalizers[k] for k in ("observations", "actions")}, seed=0,
                    sampling={"sampler": "ddim", "steps": 10, "temperature": 0.5})
    student, _ = distill_policy(policy, toy_store(), data={"normalizer": "gaussian"}, samples=8, temperature=1.0,
                                trainer={"max_steps": 1, "batch_size": 4, "progress": False})
    assert student.metadata["distillation"]["temperature"] == 1.0
    assert student.sampling["temperature"] == 1.0 and policy.sampling["temperature"] == 0.5


def test_methods_and_steps_are_checked():
    assert DISTILLATION_METHODS == ("consistency", "direct")
    check_method("consistency", 2)
    with pytest.raises(ValueError, match=r"method: expected one of \['consistency', 'direct'\], got 'progressive'"):
        check_method("progressive", 1)
    with pytest.raises(ValueError, match=r"student_steps: expected 1 to 4 network evaluations per plan, got 5"):
        check_method("consistency", 5)
    check_method("direct", 2)  # the later steps refine the re-noised plan
    # a consistency student samples only where it was trained: at timesteps of its grid, on the teacher's process
    from diffusion_rl.diffusion import NoiseSchedule, consistency_grid, make_sampler

    for num_steps in (50, 100, 200):
        process = NoiseSchedule.cosine(num_steps)
        for steps in (1, 2, 4):
            check_on_grid(process, 20, steps)
            assert set(make_sampler("consistency", process, steps=steps).timesteps) <= set(consistency_grid(process, 20))
        with pytest.raises(ValueError, match=r"student_steps=3: a consistency student samples at timesteps .* use "
                                             r"intervals in \["):
            check_on_grid(process, 20, 3)
    check_on_grid(NoiseSchedule.cosine(20), 20, 3)  # a grid of every timestep holds any student's
    with pytest.raises(ValueError, match="student_steps=4"):
        check_on_grid(NoiseSchedule.cosine(50), 12, 4)  # 4 divides 12, yet rounding puts 37 and 11 off the grid
    with pytest.raises(ValueError, match=r"student_steps: expected 1 to 4 network evaluations per plan, got 0"):
        check_method("direct", 0)


def test_target_share_is_checked_before_anything_is_built():
    data = toy_dataset(8, normalizer="gaussian", returns=False)
    teacher = Diffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=16, dim_mults=(1, 2), value_guided=False)
    policy = Policy(teacher, {k: data.normalizers[k] for k in ("observations", "actions")}, seed=0)
    for kwargs, message in (({"target_share": 1.5}, r"target_share: expected a number in \[0, 1\], got 1.5"),
                            ({"target_share": 0.5, "method": "consistency"},
                             "target_share: only the direct method draws the teacher's plans"),
                            ({"target_share": 1.0}, "target_share: diffuser plans without a condition to target")):
        with pytest.raises(ValueError, match=message):
            distill_policy(policy, toy_store(), samples=8, trainer={"max_steps": 1, "progress": False}, **kwargs)



def test_a_resume_continues_only_the_same_distillation(tmp_path):
    """The checkpoint holds the teacher's weights: resuming with another teacher (or method) would have swapped
    the new teacher for the old one and recorded the new one's name."""
    data = toy_dataset(8, normalizer="gaussian", returns=False)

    def teacher(seed: int) -> Policy:
        torch.manual_seed(seed)
        algo = Diffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=8, dim_mults=(1, 2), value_guided=False)
        return Policy(algo, {k: data.normalizers[k] for k in ("observations", "actions")}, seed=0,
                      sampling={"sampler": "ddim", "steps": 10})

    def run(policy: Policy, max_steps: int, resume: bool, **kwargs):
        return distill_policy(policy, toy_store(), data={"normalizer": "gaussian"}, samples=8, **kwargs,
                              trainer={"max_steps": max_steps, "batch_size": 4, "progress": False, "resume": resume,
                                       "run_dir": str(tmp_path), "checkpoint_every": 2})

    run(teacher(0), 2, False)
    assert run(teacher(0), 3, True)[1]["step"] == 3  # the same teacher and settings: resumed
    with pytest.raises(ValueError, match=r"other run settings \(saved -> now\): \{'teacher': "):
        run(teacher(1), 4, True)
    # other data under the same source (a dataset remade, or dataset= pointing elsewhere): the resumed student
    # trained half on each, and the artifact named only the second
    remade = r"other run settings \(saved -> now\): \{'dataset': \(\{'steps': 1536, 'episodes': 64, 'sha256'"
    with pytest.raises(ValueError, match=remade):
        distill_policy(teacher(0), toy_store(seed=1), data={"normalizer": "gaussian"}, samples=8,
                       trainer={"max_steps": 4, "batch_size": 4, "progress": False, "resume": True,
                                "run_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"other run settings \(saved -> now\): \{'samples': \(8, 16\)"):
        distill_policy(teacher(0), toy_store(), data={"normalizer": "gaussian"}, samples=16,
                       trainer={"max_steps": 4, "batch_size": 4, "progress": False, "resume": True,
                                "run_dir": str(tmp_path)})
