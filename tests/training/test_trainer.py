"""Trainer behaviour on a real (tiny) regression model: learning, EMA, logs, eval, accumulation, resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from diffusion_rl.training import (
    ToyRegressionData,
    ToyRegressor,
    Trainer,
    TrainerConfig,
    list_checkpoints,
    lr_multiplier,
    read_jsonl,
)

torch.set_num_threads(1)


def _model(seed: int = 0, **kw) -> ToyRegressor:
    torch.manual_seed(seed)
    return ToyRegressor(hidden=32, **kw)


def _cfg(**kw) -> TrainerConfig:
    base = {"max_steps": 40, "batch_size": 32, "lr": 3e-3, "log_every": 10, "checkpoint_every": 0,
            "progress": False, "ema_every": 1, "ema_decay": 0.9, "seed": 0, "device": "cpu"}
    base.update(kw)
    return TrainerConfig(**base)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


def test_training_lowers_loss_and_ema_tracks_model():
    data = ToyRegressionData(seed=1)
    model = _model()
    before = data.mse(model)
    trainer = Trainer(model, data, _cfg(max_steps=300, lr_schedule="cosine", warmup_steps=20))
    out = trainer.fit()
    assert out["step"] == trainer.step == 300
    assert data.mse(model) < 0.3 * before
    assert data.mse(trainer.ema_model) < 0.3 * before
    assert set(out["losses"]) == {"loss", "mae", "grad_norm"}
    # the EMA copy is a different set of weights, frozen and in eval mode
    assert not torch.equal(trainer.ema_model.net[0].weight, model.net[0].weight)
    assert not any(p.requires_grad for p in trainer.ema_model.parameters())
    assert not trainer.ema_model.training


def test_ema_every_and_start_follow_the_reference_rule():
    data = ToyRegressionData(seed=1)
    model = _model()
    init = _state(model)
    seen = []
    trainer = Trainer(model, data, _cfg(max_steps=4, ema_every=5, lr=1e-2),
                      callbacks=[lambda t, step: seen.append(_state(t.ema_model))])
    trainer.fit()
    for state in seen[:3]:
        _assert_same(state, init)  # no EMA update between multiples of ema_every...
    final = _state(trainer.ema_model)  # ...except at the last step: a short run's EMA is not its initial weights
    assert not torch.equal(final["net.0.weight"], init["net.0.weight"])
    assert not torch.equal(final["net.0.weight"], model.net[0].weight)  # an average, not a copy
    model = _model()
    trainer = Trainer(model, data, _cfg(max_steps=10, ema_every=5, ema_start=100))
    trainer.fit()
    _assert_same(_state(trainer.ema_model), _state(model))  # step 10 < ema_start: a plain copy


def test_logs_lr_schedule_and_eval(tmp_path):
    data = ToyRegressionData(seed=1)
    calls = []

    def eval_fn(ema_model, step):
        calls.append(step)
        return {"mse": data.mse(ema_model)}

    cfg = _cfg(max_steps=25, log_every=10, eval_every=10, run_dir=str(tmp_path / "run"),
               lr_schedule="linear", warmup_steps=5)
    out = Trainer(_model(), data, cfg, eval_fn=eval_fn).fit()
    assert calls == [10, 20, 25]  # periodic and once at the end
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [10, 20, 25]
    assert [r["step"] for r in evals] == [10, 20, 25]
    for r in train:  # the lr the logged step trained with: step k (1-based) uses the multiplier of index k - 1
        expected = 3e-3 * lr_multiplier(r["step"] - 1, schedule="linear", warmup_steps=5, max_steps=25)
        assert r["lr"] == pytest.approx(expected)
        assert r["loss"] > 0 and r["steps_per_sec"] > 0
    assert out["eval"]["mse"] == pytest.approx(evals[-1]["mse"])
    assert out["losses"]["loss"] == pytest.approx(train[-1]["loss"])
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [25]


def test_eval_does_not_change_the_training_stream():
    data = ToyRegressionData(seed=1)

    def noisy_eval(ema_model, step):
        return {"draw": float(torch.randn(1000).sum())}  # consumes the global RNG

    plain = Trainer(_model(), data, _cfg(max_steps=20))
    plain.fit()
    with_eval = Trainer(_model(), data, _cfg(max_steps=20, eval_every=5), eval_fn=noisy_eval)
    with_eval.fit()
    _assert_same(_state(plain.model), _state(with_eval.model))
    _assert_same(_state(plain.ema_model), _state(with_eval.ema_model))


def test_gradient_accumulation_matches_a_bigger_batch():
    data = ToyRegressionData(seed=1)
    # without input noise the loss is a plain mean, so two half-batches average to one full batch
    big = Trainer(_model(input_noise=0.0), data, _cfg(max_steps=5, batch_size=16, grad_clip=None))
    big.fit()
    acc = Trainer(_model(input_noise=0.0), data, _cfg(max_steps=5, batch_size=8, grad_accum=2, grad_clip=None))
    acc.fit()
    for a, b in zip(big.model.parameters(), acc.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_bf16_autocast_trains_on_cpu():
    data = ToyRegressionData(seed=1)
    model = _model()
    before = data.mse(model)
    seen: set[torch.dtype] = set()
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    trainer = Trainer(model, data, _cfg(max_steps=150, mixed_precision="bf16"))
    assert trainer._amp
    trainer.fit()
    hook.remove()
    assert seen == {torch.bfloat16}  # the training forwards ran in bf16
    assert data.mse(model) < 0.5 * before


class _StopAt(Exception):
    pass


def _stop_at(step_to_stop: int):
    def callback(trainer, step):
        if step == step_to_stop:
            raise _StopAt(step)

    return callback


def _resume_cfg(run_dir, **kw) -> TrainerConfig:
    return _cfg(max_steps=40, batch_size=16, grad_accum=2, ema_every=3, checkpoint_every=10,
                lr_schedule="cosine", warmup_steps=5, run_dir=str(run_dir), eval_every=7, **kw)


def _noisy_eval(ema_model, step):
    return {"draw": float(torch.randn(10).sum())}


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    data = ToyRegressionData(seed=1)
    full = Trainer(_model(), data, _resume_cfg(tmp_path / "full", log_every=3), eval_fn=_noisy_eval)
    full.fit()

    cut = Trainer(_model(), data, _resume_cfg(tmp_path / "cut", log_every=3), eval_fn=_noisy_eval,
                  callbacks=[_stop_at(25)])
    with pytest.raises(_StopAt):
        cut.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "cut" / "checkpoints")] == [10, 20]
    # a different initialisation proves the weights come from the checkpoint
    resumed = Trainer(_model(seed=123), ToyRegressionData(seed=1),
                      _resume_cfg(tmp_path / "cut", resume=True, log_every=3), eval_fn=_noisy_eval)
    assert resumed.step == 20
    resumed.fit()
    assert resumed.step == full.step == 40
    _assert_same(_state(full.ema_model), _state(resumed.ema_model))
    _assert_same(_state(full.model), _state(resumed.model))
    # logs of the interrupted part after step 20 are dropped, so every record appears once, and each train record
    # averages the same steps as the uninterrupted run's (a checkpoint step closes a log window)
    cut_log, full_log = read_jsonl(tmp_path / "cut" / "metrics.jsonl"), read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in cut_log] == [(r["kind"], r["step"]) for r in full_log]
    for a, b in zip(cut_log, full_log):
        if a["kind"] == "train":
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["lr"] == b["lr"], (a, b)


def test_fresh_run_refuses_a_run_dir_with_checkpoints(tmp_path):
    data = ToyRegressionData(seed=1)
    Trainer(_model(), data, _cfg(max_steps=5, run_dir=str(tmp_path))).fit()
    with pytest.raises(ValueError, match="resume=True"):
        Trainer(_model(), data, _cfg(max_steps=5, run_dir=str(tmp_path)))


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    data = ToyRegressionData(seed=1)
    Trainer(_model(), data, _cfg(max_steps=25, checkpoint_every=5, keep_checkpoints=2, run_dir=str(tmp_path))).fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [20, 25]


def test_bad_model_and_data_are_clear_errors():
    data = ToyRegressionData(seed=1)
    with pytest.raises(ValueError, match="loss"):
        Trainer(torch.nn.Linear(2, 2), data, _cfg())
    with pytest.raises(ValueError, match="sample_batch"):
        Trainer(_model(), object(), _cfg())

    class VectorLoss(ToyRegressor):
        def loss(self, batch):
            return {"loss": (self(batch["x"]) - batch["y"]) ** 2}

    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"scalar tensor"):
        Trainer(VectorLoss(hidden=8), data, _cfg(max_steps=2)).fit()


def test_nan_loss_stops_training():
    data = ToyRegressionData(seed=1)

    class NanLoss(ToyRegressor):
        def loss(self, batch):
            return {"loss": self(batch["x"]).sum() * float("nan")}

    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match="step 5"):
        Trainer(NanLoss(hidden=8), data, _cfg(max_steps=20, log_every=5)).fit()


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from diffusion_rl.training import Trainer, TrainerConfig, ToyRegressionData, ToyRegressor

    def kill(trainer, step):
        if step == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(0)
    cfg = TrainerConfig(max_steps=30, batch_size=16, lr=3e-3, log_every=10, checkpoint_every=10, progress=False,
                        ema_every=2, ema_decay=0.9, device="cpu", run_dir=sys.argv[1], resume=sys.argv[2] == "1")
    t = Trainer(ToyRegressor(hidden=32), ToyRegressionData(seed=1), cfg, callbacks=[kill])
    t.fit()
    torch.save(t.ema_model.state_dict(), os.path.join(sys.argv[1], "ema_final.pt"))
    """
)


def test_killed_process_resumes_to_the_same_weights(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)

    def run(run_dir, resume, kill_at):
        return subprocess.run([sys.executable, str(script), str(run_dir), resume, str(kill_at)],
                              check=False, capture_output=True, text=True, timeout=120)

    assert run(tmp_path / "full", "0", -1).returncode == 0
    killed = run(tmp_path / "cut", "0", 15)
    assert killed.returncode == -9, killed.stderr
    assert [s for s, _ in list_checkpoints(tmp_path / "cut" / "checkpoints")] == [10]
    done = run(tmp_path / "cut", "1", -1)
    assert done.returncode == 0, done.stderr
    full = torch.load(tmp_path / "full" / "ema_final.pt")
    cut = torch.load(tmp_path / "cut" / "ema_final.pt")
    _assert_same(full, cut)


def test_cpu_uses_fused_adamw_and_compiled_loss_trains_like_eager():
    data = ToyRegressionData(seed=1)
    # no input noise: the compiled graph draws its random numbers with its own kernels
    eager, compiled = (Trainer(_model(input_noise=0.0), data, _cfg(max_steps=60, compile=flag))
                       for flag in (False, True))
    assert eager.optimizer.param_groups[0]["fused"]
    batch = data.sample_batch(32, torch.Generator().manual_seed(3))
    grads = []
    for trainer in (eager, compiled):  # the compiled loss and its backward give the eager gradients
        trainer._forward(batch)["loss"].backward()
        grads.append([p.grad.clone() for p in trainer.model.parameters()])
        trainer.optimizer.zero_grad(set_to_none=True)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    before = data.mse(compiled.model)
    eager.fit(), compiled.fit()
    # Adam's first steps amplify float rounding (an update is ~lr whatever the gradient's size), so the runs
    # are compared by what they learned, not weight by weight
    assert data.mse(compiled.model) < 0.5 * before
    assert abs(data.mse(compiled.model) - data.mse(eager.model)) < 0.05 * data.mse(eager.model)
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # no compile wrapper in the weights
    with pytest.raises(ValueError, match="TrainerConfig.compile: expected true or false, got 'yes'"):
        _cfg(compile="yes")


@pytest.mark.gpu
def test_cuda_uses_bf16_autocast_and_fused_adamw():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    data = ToyRegressionData(seed=1)
    model = _model()
    before = data.mse(model)
    trainer = Trainer(model, data, _cfg(max_steps=300, device="auto"))
    assert trainer.device.type == "cuda" and trainer._amp
    assert trainer.optimizer.param_groups[0]["fused"]
    trainer.fit()
    assert next(trainer.ema_model.parameters()).is_cuda
    assert data.mse(model) < 0.3 * before


def test_resume_without_checkpoint_starts_fresh_and_changed_settings_warn(tmp_path, caplog):
    data = ToyRegressionData(seed=1)
    trainer = Trainer(_model(), data, _cfg(max_steps=10, run_dir=str(tmp_path), resume=True))
    assert trainer.step == 0
    trainer.fit()
    with caplog.at_level("WARNING", logger="diffusion_rl.training.trainer"):
        more = Trainer(_model(), data, _cfg(max_steps=20, lr=1e-3, run_dir=str(tmp_path), resume=True))
    assert more.step == 10 and "lr" in caplog.text
    assert more.fit()["step"] == 20
    assert "stretched" not in caplog.text  # the constant schedule does not depend on max_steps
    caplog.clear()
    with caplog.at_level("WARNING", logger="diffusion_rl.training.trainer"):
        Trainer(_model(), data, _cfg(max_steps=40, lr=1e-3, lr_schedule="cosine", run_dir=str(tmp_path),
                                     resume=True))
    assert "with max_steps 40 (was 20): the cosine lr schedule is stretched" in caplog.text


def test_a_warm_up_longer_than_the_run_and_an_ema_extended_off_its_cadence_are_warned(tmp_path, caplog):
    data = ToyRegressionData(seed=1)
    with caplog.at_level("WARNING", logger="diffusion_rl.training.trainer"):
        Trainer(_model(), data, _cfg(max_steps=20, warmup_steps=50))
    assert "warmup_steps=50 is longer than the run (max_steps=20): the warm-up never ends, and the lr peaks at " \
           "0.40 x lr" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="diffusion_rl.training.trainer"):
        Trainer(_model(), data, _cfg(max_steps=20, warmup_steps=20, ema_every=3, run_dir=str(tmp_path))).fit()
        Trainer(_model(), data, _cfg(max_steps=40, warmup_steps=20, ema_every=3, run_dir=str(tmp_path), resume=True))
    assert "warm-up never ends" not in caplog.text
    assert "past its end (step 20): its EMA took the end-of-run update at step 20, off its every-3-steps" in caplog.text


def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint_of_that_step(tmp_path):
    import os
    import signal

    def press_ctrl_c(trainer, step):
        if step in (7, 8):  # the second press would stop at once: sent after the first one is handled
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (xdist may ignore it)
    try:
        trainer = Trainer(_model(), ToyRegressionData(seed=1), _cfg(max_steps=40, checkpoint_every=5,
                          run_dir=str(tmp_path)), callbacks=[press_ctrl_c])
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert trainer.step == 7  # the step under way was finished, and training stopped there
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [5, 7]
    logged = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert logged[-1] == 7  # steps 6 and 7 are logged before stopping, not lost
    resumed = Trainer(_model(), ToyRegressionData(seed=1), _cfg(max_steps=40, checkpoint_every=5,
                      run_dir=str(tmp_path), resume=True))
    assert resumed.step == 7


def test_a_damaged_checkpoint_ahead_of_the_run_does_not_make_pruning_delete_its_checkpoints(tmp_path):
    cut = Trainer(_model(), ToyRegressionData(seed=1), _resume_cfg(tmp_path), callbacks=[_stop_at(25)])
    with pytest.raises(_StopAt):
        cut.fit()
    (tmp_path / "checkpoints" / "step_00000090.pt").write_bytes(b"junk")  # e.g. from a longer run, damaged
    resumed = Trainer(_model(), ToyRegressionData(seed=1), _resume_cfg(tmp_path, resume=True, keep_checkpoints=1))
    assert resumed.step == 20
    resumed.fit()
    # moved aside when skipped: left in place, step 90 would hold the one kept place and each new checkpoint
    # (the final one included) would be deleted as soon as it was written
    assert [step for step, _ in list_checkpoints(tmp_path / "checkpoints")] == [40]
    assert (tmp_path / "checkpoints" / "step_00000090.pt.damaged").read_bytes() == b"junk"


def test_resume_skips_a_damaged_newest_checkpoint_and_removes_unfinished_writes(tmp_path, caplog):
    data = ToyRegressionData(seed=1)
    cut = Trainer(_model(), data, _resume_cfg(tmp_path), callbacks=[_stop_at(25)])
    with pytest.raises(_StopAt):
        cut.fit()
    ckpts = dict(list_checkpoints(tmp_path / "checkpoints"))
    assert sorted(ckpts) == [10, 20]
    ckpts[20].write_bytes(ckpts[20].read_bytes()[:100])  # the newest one damaged (a disk filled up, say)
    stale = tmp_path / "checkpoints" / ".step_00000030.pt.abc123.tmp"  # a write killed half-way
    stale.write_bytes(b"partial")
    with caplog.at_level("INFO", logger="diffusion_rl.training.trainer"):
        resumed = Trainer(_model(seed=123), ToyRegressionData(seed=1), _resume_cfg(tmp_path, resume=True))
    assert resumed.step == 10  # the newest readable checkpoint
    assert "skipping damaged checkpoint" in caplog.text and "step_00000020.pt" in caplog.text
    assert not stale.exists() and "removed the unfinished checkpoint write" in caplog.text
    assert (tmp_path / "checkpoints" / "step_00000020.pt.damaged").is_file()  # moved aside, kept to look at
    for _, path in list_checkpoints(tmp_path / "checkpoints"):
        path.write_bytes(b"junk")
    with caplog.at_level("WARNING", logger="diffusion_rl.training.trainer"):
        fresh = Trainer(_model(), ToyRegressionData(seed=1), _resume_cfg(tmp_path, resume=True))
    assert fresh.step == 0 and "no checkpoint in" in caplog.text and "is readable" in caplog.text


# ----------------------------------------------------------------------------------------- resume: what changes
def test_a_resume_trains_on_with_this_runs_lr_betas_and_weight_decay(tmp_path):
    data = ToyRegressionData(seed=1)
    Trainer(_model(), data, _cfg(max_steps=10, lr=1e-3, weight_decay=0.1, lr_schedule="cosine", warmup_steps=4,
                                  run_dir=str(tmp_path))).fit()
    more = Trainer(_model(), data, _cfg(max_steps=20, lr=1e-4, weight_decay=0.01, betas=(0.8, 0.9),
                                        lr_schedule="cosine", warmup_steps=4, run_dir=str(tmp_path), resume=True))
    multiplier = lr_multiplier(10, schedule="cosine", warmup_steps=4, max_steps=20)
    groups = more.optimizer.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-4 * multiplier] * len(groups))  # not 1e-3's position
    assert all(g["betas"] == (0.8, 0.9) for g in groups)
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.01]  # biases and norms are still not decayed
    assert more.lr_scheduler.get_last_lr() == pytest.approx([1e-4 * multiplier] * len(groups))  # what is logged
    more.fit()
    assert more.lr_scheduler.base_lrs == [1e-4] * len(groups)
    # switching weight decay off regroups the parameters (one group): their moments follow them (it was refused)
    off = Trainer(_model(), data, _cfg(max_steps=30, weight_decay=0.0, run_dir=str(tmp_path), resume=True))
    assert [g["weight_decay"] for g in off.optimizer.param_groups] == [0.0]
    assert all(off.optimizer.state[p]["exp_avg"].abs().sum() > 0 for p in off.model.parameters())
    off.fit()


def test_run_settings_compare_as_plain_values_whatever_container_holds_them(tmp_path):
    import numpy as np
    from omegaconf import OmegaConf

    data = ToyRegressionData(seed=1)
    given = {"model": OmegaConf.create({"dim_mults": [1, 2], "dim": 8}), "data": {"w": np.array([0.5, 1.0])}}
    first = Trainer(_model(), data, _cfg(max_steps=5, run_dir=str(tmp_path)), run_settings=given)
    assert first.run_settings == {"model": {"dim_mults": [1, 2], "dim": 8}, "data": {"w": [0.5, 1.0]}}
    first.fit()
    plain = {"model": {"dim_mults": (1, 2), "dim": np.int64(8)}, "data": {"w": [0.5, 1.0]}}
    assert Trainer(_model(), data, _cfg(max_steps=5, run_dir=str(tmp_path), resume=True),
                   run_settings=plain).step == 5


def test_a_resume_refuses_other_run_settings_and_a_step_beyond_max_steps(tmp_path):
    data = ToyRegressionData(seed=1)
    settings = {"model": {"horizon": 8, "dim_mults": (1, 2)}, "data": {"discount": 0.99}}
    Trainer(_model(), data, _cfg(max_steps=10, run_dir=str(tmp_path)), run_settings=settings).fit()
    same = {"model": {"horizon": 8, "dim_mults": [1, 2]}, "data": {"discount": 0.99}}  # a list from a config: same
    assert Trainer(_model(), data, _cfg(max_steps=10, run_dir=str(tmp_path), resume=True),
                   run_settings=same).step == 10
    other = {"model": {"horizon": 16, "dim_mults": [1, 2]}, "data": {"discount": 0.99}}
    with pytest.raises(ValueError, match=r"was trained with other run settings \(saved -> now\): \{'model': "):
        Trainer(_model(), data, _cfg(max_steps=20, run_dir=str(tmp_path), resume=True), run_settings=other)
    with pytest.raises(ValueError, match=r"is at step 10, beyond max_steps=5; resume with max_steps >= 10"):
        Trainer(_model(), data, _cfg(max_steps=5, run_dir=str(tmp_path), resume=True), run_settings=same)
    # a setting the checkpoint did not record yet (dataset_digest, added later) is not checked; one it did record
    # and the resume leaves out still is
    newer = {**same, "dataset_digest": {"steps": 100}}
    assert Trainer(_model(), data, _cfg(max_steps=10, run_dir=str(tmp_path), resume=True),
                   run_settings=newer).step == 10
    with pytest.raises(ValueError, match=r"other run settings \(saved -> now\): \{'data': \(\{'discount': 0.99\}, "
                                         r"None\)\}"):
        Trainer(_model(), data, _cfg(max_steps=10, run_dir=str(tmp_path), resume=True),
                run_settings={"model": same["model"]})
    # a run that recorded no settings ({}: distillations before they did) resumes under settings
    Trainer(_model(), data, _cfg(max_steps=10, run_dir=str(tmp_path / "unrecorded"))).fit()
    assert Trainer(_model(), data, _cfg(max_steps=20, run_dir=str(tmp_path / "unrecorded"), resume=True),
                   run_settings=same).step == 10
    # another seed: the weights are seed 0's run (it was resumed with a warning and recorded as seed 1's)
    with pytest.raises(ValueError, match=r"belongs to a run with seed=0, not seed=1; resume with seed=0, or train "
                                         r"seed 1 in another run_dir"):
        Trainer(_model(), data, _cfg(max_steps=20, run_dir=str(tmp_path), resume=True, seed=1), run_settings=same)


def test_weights_gone_non_finite_are_never_saved_as_the_newest_checkpoint(tmp_path):
    data = ToyRegressionData(seed=1)

    def poison(trainer, step):
        if step == 7:  # a weight the loss does not see: the loss check at the checkpoint step cannot notice it
            with torch.no_grad():
                trainer.model.unused.fill_(float("nan"))

    model = _model()
    model.unused = torch.nn.Parameter(torch.zeros(3))
    trainer = Trainer(model, data, _cfg(max_steps=20, checkpoint_every=5, keep_checkpoints=1, log_every=20,
                                        run_dir=str(tmp_path)), callbacks=[poison])
    with pytest.raises(FloatingPointError, match="model weights became non-finite by step 10; not saved"):
        trainer.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [5]  # the good one is kept
    # a weight the loss does see: the loss turns NaN, told at the checkpoint step, before any saving
    def poison_used(trainer, step):
        if step == 7:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    trainer = Trainer(_model(), data, _cfg(max_steps=20, checkpoint_every=5, keep_checkpoints=1, log_every=20,
                                           run_dir=str(tmp_path / "used")), callbacks=[poison_used])
    with pytest.raises(FloatingPointError, match="training loss became nan at step 10"):
        trainer.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "used" / "checkpoints")] == [5]


def test_logs_hold_each_step_once_after_a_restart_and_tensorboard_keeps_the_resume_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = ToyRegressionData(seed=1)
    # interrupted before its first checkpoint, then started again: its steps are logged once
    with pytest.raises(_StopAt):
        Trainer(_model(), data, _cfg(max_steps=40, run_dir=str(tmp_path / "a")), callbacks=[_stop_at(35)]).fit()
    Trainer(_model(), data, _cfg(max_steps=40, run_dir=str(tmp_path / "a"), resume=True)).fit()
    assert [r["step"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")] == [10, 20, 30, 40]
    # resumed from step 20: TensorBoard still has step 20's scalars (only the later ones are purged)
    cut = Trainer(_model(), data, _resume_cfg(tmp_path / "b"), eval_fn=_noisy_eval, callbacks=[_stop_at(25)])
    with pytest.raises(_StopAt):
        cut.fit()
    resumed = Trainer(_model(), data, _resume_cfg(tmp_path / "b", resume=True), eval_fn=_noisy_eval)
    resumed.fit()
    resumed.logger.close()
    events = EventAccumulator(str(tmp_path / "b" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [10, 20, 30, 40]
    # a finished run started again with resume: the last step's evaluation is in its checkpoint, not repeated
    Trainer(_model(), data, _resume_cfg(tmp_path / "b", resume=True), eval_fn=_noisy_eval).fit()
    evals = [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == [7, 14, 21, 28, 35, 40]


def test_a_run_dir_another_live_process_trains_in_is_refused(tmp_path):
    """A rerun while an earlier run of the same folder still trains (a detached child of a killed reproduce.py)
    wrote over and pruned its checkpoints, and removed its checkpoint writes in progress as stale."""
    import gc
    import os
    import signal

    from diffusion_rl.training import CheckpointError

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from diffusion_rl.training import ToyRegressionData, ToyRegressor, Trainer, TrainerConfig
        trainer = Trainer(ToyRegressor(hidden=8), ToyRegressionData(seed=1),
                          TrainerConfig(max_steps=5, progress=False, device="cpu", run_dir={str(run_dir)!r}))
        print("holding", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        in_progress = run_dir / "checkpoints" / ".step_00000005.pt.x1y2.tmp"
        in_progress.parent.mkdir(parents=True, exist_ok=True)
        in_progress.write_bytes(b"being written")
        with pytest.raises(CheckpointError, match=rf"run_dir '.*run' is in use by another process \(pid {holder.pid}\)"):
            Trainer(_model(), ToyRegressionData(seed=1), _cfg(run_dir=str(run_dir), resume=True))
        assert in_progress.exists()  # the other run's write was not taken for a killed one's
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder lets go: the OS drops its lock
        holder.wait()
    gc.collect()
    first = Trainer(_model(), ToyRegressionData(seed=1), _cfg(run_dir=str(run_dir), max_steps=5))
    again = Trainer(_model(), ToyRegressionData(seed=1), _cfg(run_dir=str(run_dir), max_steps=5))  # same process
    assert first.fit()["step"] == again.fit()["step"] == 5


def _holder(run_dir):
    """A live process holding ``run_dir`` (as a run training there would)."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from diffusion_rl.training import lock_run_dir
        lock_run_dir({str(run_dir)!r})
        print("holding", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def _can_lock(run_dir) -> bool:
    """Whether another process can take ``run_dir`` now."""
    code = (f"from diffusion_rl.training import CheckpointError, lock_run_dir\n"
            f"try:\n    lock_run_dir({str(run_dir)!r})\nexcept CheckpointError:\n    raise SystemExit(3)")
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_trainer_refused_while_it_starts_lets_go_of_the_folder_and_close_lets_go_of_it(tmp_path):
    from diffusion_rl.training import CheckpointError

    run_dir = tmp_path / "run"
    Trainer(_model(), ToyRegressionData(seed=1), _cfg(run_dir=str(run_dir), max_steps=3, checkpoint_every=3,
                                                      seed=1)).fit()
    with pytest.raises(CheckpointError, match="belongs to a run with seed=1") as refused:  # the traceback is kept
        Trainer(_model(), ToyRegressionData(seed=1), _cfg(run_dir=str(run_dir), max_steps=3, resume=True, seed=0))
    assert refused.value is not None and _can_lock(run_dir)  # not held by the half-made trainer
    trainer = Trainer(_model(), ToyRegressionData(seed=1), _cfg(run_dir=str(run_dir), max_steps=6, resume=True,
                                                                seed=1))
    assert not _can_lock(run_dir)
    trainer.close()
    assert _can_lock(run_dir)


def test_a_file_system_without_locks_warns_and_trains(tmp_path, monkeypatch):
    """NFS without lockd, Lustre, sshfs: flock fails with ENOLCK/ENOSYS; every run was refused as "in use"."""
    import errno
    import fcntl

    def no_locks(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match=r"its file system does not lock files .*No locks available"):
        trainer = Trainer(_model(), ToyRegressionData(seed=1), _cfg(run_dir=str(tmp_path / "run"), max_steps=3))
    assert trainer.fit()["step"] == 3


def test_steps_per_sec_counts_training_not_the_evaluation_between_windows(tmp_path):
    """A slow evaluation fell into the next log window's steps_per_sec (a 1 s eval made one window read ~50x too
    slow)."""
    import time

    data = ToyRegressionData(seed=1)
    cfg = _cfg(max_steps=40, log_every=10, eval_every=20, run_dir=str(tmp_path / "run"))
    Trainer(_model(), data, cfg, eval_fn=lambda model, step: (time.sleep(0.6), {"mse": 0.0})[1]).fit()
    rates = [r["steps_per_sec"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert len(rates) == 4
    assert min(rates[2:]) > 10 / 0.6  # the window after the sleep: 10 steps in far less than the 0.6 s eval


def test_parameters_a_module_names_are_not_weight_decayed():
    """The reference Diffusion Policy transformer keeps its positional embedding out of weight decay; so does a
    module's no_weight_decay() here, and embedding tables."""
    from diffusion_rl.nets.transformer import TransformerDenoiser1D
    from diffusion_rl.training.trainer import _build_optimizer

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TransformerDenoiser1D(3, cond_dim=4, d_model=16, depth=1, heads=2, max_horizon=8)
            self.table = torch.nn.Embedding(5, 4)

    model = Model()
    optimizer = _build_optimizer(model, _cfg(weight_decay=1e-3), torch.device("cpu"))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.net.pos_emb) not in decayed and id(model.table.weight) not in decayed
    assert id(model.net.input_proj.weight) in decayed
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


class _ToyWithTable(ToyRegressor):
    """A toy whose second layer's weight is named as not decayed (as the transformer names its pos_emb)."""

    def no_weight_decay(self) -> set[str]:
        return {"net.2.weight"}


def test_a_checkpoint_from_before_named_no_decay_parameters_resumes_with_its_moments(tmp_path, monkeypatch):
    """Checkpoints written when the split was by shape alone put such a matrix in the decayed group: resuming
    them failed (the saved groups' sizes were handed back), and the weight decay set after loading went by shape."""
    from diffusion_rl.training import trainer as trainer_module

    data = ToyRegressionData(seed=1)
    monkeypatch.setattr(trainer_module, "_no_decay_ids", lambda model: set())  # the code of before: shape only
    torch.manual_seed(0)
    Trainer(_ToyWithTable(hidden=16), data, _cfg(max_steps=10, weight_decay=0.1, run_dir=str(tmp_path))).fit()
    monkeypatch.undo()
    torch.manual_seed(0)
    resumed = Trainer(_ToyWithTable(hidden=16), data, _cfg(max_steps=20, weight_decay=0.1, run_dir=str(tmp_path),
                                                          resume=True))
    table = resumed.model.net[2].weight
    decayed = [g for g in resumed.optimizer.param_groups if any(p is table for p in g["params"])]
    assert decayed[0]["weight_decay"] == 0.0  # named: not decayed, after loading too
    assert resumed.optimizer.state[table]["exp_avg"].abs().sum() > 0  # its moments came along from the old group
    resumed.fit()


def test_compile_without_a_cpp_compiler_is_refused_before_the_run_starts(tmp_path, monkeypatch):
    """TorchInductor's CPU kernels are C++: with no compiler the first compiled step failed deep inside torch,
    after the data, model and run folder were set up. Now the Trainer (and Policy(compile="inductor")) refuse at
    construction, naming the setting and the fix."""
    import torch._inductor.config as inductor_config

    from diffusion_rl.nets.compiled import make_denoiser

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-cxx-compiler-here",))
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"TrainerConfig.compile on a CPU needs a C\+\+ compiler .*"
                                           r"\['no-such-cxx-compiler-here'\] runs here.* leave TrainerConfig.compile off"):
        Trainer(_model(), ToyRegressionData(seed=1), _cfg(compile=True, run_dir=str(run_dir)))
    assert not run_dir.exists()  # nothing set up for a run that cannot start
    Trainer(_model(), ToyRegressionData(seed=1), _cfg(compile=False))  # eager needs no compiler
    with pytest.raises(RuntimeError, match=r'compile="inductor" on a CPU needs a C\+\+ compiler'):
        make_denoiser(torch.nn.Linear(2, 2), "inductor", "float32", torch.device("cpu"))
    monkeypatch.undo()
    assert make_denoiser(torch.nn.Linear(2, 2), "inductor", "float32", torch.device("cpu")).mode == "inductor"
