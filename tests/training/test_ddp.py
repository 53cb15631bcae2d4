"""DistributedDataParallel on CPU: two processes under torchrun with gloo end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from diffusion_rl.training import list_checkpoints, read_jsonl


def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(worker), str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key  # all-reduced gradients, same updates
    # each rank sampled its own data
    assert not torch.equal(r0["first_x"], r1["first_x"])
    # training worked (rank 1 started from other weights but was synchronised to rank 0's)
    assert r0["mse_after"] < 0.75 * r0["mse_before"]
    # losses are averaged over ranks, so both report the same numbers
    assert r0["losses"]["loss"] == r1["losses"]["loss"]
    # only rank 0 evaluates and writes
    assert set(r0["eval"]) == {"mse"} and r1["eval"] == {}
    run = tmp_path / "run"
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [10, 20, 30]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [15, 30]
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [20, 30]
    ckpt = torch.load(run / "checkpoints" / "step_00000030.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["data"], ckpt["rng"][1]["data"])
    for key in r0["ema"]:
        assert torch.equal(ckpt["ema"][key], r0["ema"][key])
