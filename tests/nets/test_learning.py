"""Learning test: a small TemporalUnet learns to denoise a fixed set of trajectories and to sample them.

The epsilon-prediction diffusion loss and the DDPM sampler are written inline (cosine schedule, T = 20), so
the test depends on the network alone. About 30 s on one CPU thread.
"""

import math

import torch

from diffusion_rl.nets import TemporalUnet

N, H, D, T = 8, 16, 4, 20


def trajectories() -> torch.Tensor:
    """Eight distinct smooth trajectories [N, H, D] in [-0.8, 0.8]: phase-shifted sines."""
    h = torch.arange(H) / H
    phase = torch.arange(N)[:, None, None] * (2 * math.pi / N)
    freq = torch.tensor([1.0, 2.0, 1.0, 3.0])
    data = 0.8 * torch.sin(2 * math.pi * freq * h[None, :, None] + phase)
    data[..., 2] = 0.8 * torch.cos(2 * math.pi * h[None, :] + phase[..., 0])
    return data


def cosine_schedule() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = torch.linspace(0, 1, T + 1, dtype=torch.float64)
    abar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    alphas = 1 - betas
    return betas.float(), alphas.float(), torch.cumprod(alphas, 0).float()


def test_temporal_unet_fits_trajectories_and_samples_them():
    data = trajectories()
    betas, alphas, abar = cosine_schedule()
    net = TemporalUnet(D, dim=16, dim_mults=(1, 2, 4))
    g = torch.Generator().manual_seed(1)

    def eps_loss(x0, t, noise):
        a = abar[t][:, None, None]
        return ((net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t) - noise) ** 2).mean()

    # a fixed evaluation set: every trajectory at every timestep with fixed noise
    eval_x0 = data.repeat(T, 1, 1)
    eval_t = torch.arange(T).repeat_interleave(N)
    eval_noise = torch.randn(eval_x0.shape, generator=g)
    with torch.no_grad():
        initial = eps_loss(eval_x0, eval_t, eval_noise).item()

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(500):
        x0 = data.repeat(4, 1, 1)
        loss = eps_loss(x0, torch.randint(0, T, (len(x0),), generator=g), torch.randn(x0.shape, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = eps_loss(eval_x0, eval_t, eval_noise).item()
    assert initial > 0.8
    assert final < 0.1, f"epsilon loss {final:.3f} (from {initial:.3f}) did not fall below 0.1"

    # DDPM ancestral sampling with the clipped x0 estimate: samples must land on the training trajectories
    with torch.no_grad():
        x = torch.randn(32, H, D, generator=g)
        for i in reversed(range(T)):
            eps = net(x, torch.full((32,), i))
            x0 = ((x - (1 - abar[i]).sqrt() * eps) / abar[i].sqrt()).clamp(-1, 1)
            if i == 0:
                x = x0
                break
            coef_x0 = abar[i - 1].sqrt() * betas[i] / (1 - abar[i])
            coef_x = alphas[i].sqrt() * (1 - abar[i - 1]) / (1 - abar[i])
            mean = coef_x0 * x0 + coef_x * x
            var = betas[i] * (1 - abar[i - 1]) / (1 - abar[i])
            x = mean + var.sqrt() * torch.randn(x.shape, generator=g)
    dist = ((x[:, None] - data[None]) ** 2).mean(dim=(2, 3))  # [samples, trajectories]
    nearest, which = dist.min(dim=1)
    pair = ((data[:, None] - data[None]) ** 2).mean(dim=(2, 3))
    closest_pair = pair[pair > 0].min()  # 0.187: half of it separates "on a trajectory" from "between two"
    assert nearest.median() < 0.05
    assert (nearest < closest_pair / 2).float().mean() >= 0.8
    assert which.unique().numel() >= 5  # not collapsed onto one trajectory
