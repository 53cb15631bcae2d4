"""Run by ``torchrun --nproc_per_node 2`` from test_ddp.py: trains the toy model with DDP on CPU (gloo)."""

from __future__ import annotations

import os
import sys

import torch

from diffusion_rl.training import ToyRegressionData, ToyRegressor, Trainer, TrainerConfig


class RecordingData(ToyRegressionData):
    """Keeps the indices of the first batch so the test can check that ranks draw different data."""

    first_x: torch.Tensor | None = None

    def sample_batch(self, batch_size, generator=None):
        batch = super().sample_batch(batch_size, generator)
        if self.first_x is None:
            self.first_x = batch["x"].clone()
        return batch


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = ToyRegressor(hidden=16)
    data = RecordingData(seed=1)
    before = data.mse(model)
    cfg = TrainerConfig(max_steps=30, batch_size=16, lr=3e-3, log_every=10, checkpoint_every=10, eval_every=15,
                        ema_every=1, ema_decay=0.9, progress=False, device="cpu", run_dir=os.path.join(out_dir, "run"))
    trainer = Trainer(model, data, cfg, eval_fn=lambda ema, step: {"mse": data.mse(ema)})
    assert trainer.dist.world_size == 2 and trainer.dist.rank == rank
    out = trainer.fit()
    torch.save(
        {"model": model.state_dict(), "ema": trainer.ema_model.state_dict(), "first_x": data.first_x,
         "mse_before": before, "mse_after": data.mse(model), "eval": out["eval"], "losses": out["losses"]},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    main(sys.argv[1])
