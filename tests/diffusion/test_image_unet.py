"""The small image U-Net, trained and sampled through the same diffusion core as trajectory models."""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import NoiseSchedule, diffusion_loss, make_sampler
from diffusion_rl.nets.image_unet import ImageUnet2D


def _randomize_output(net: ImageUnet2D) -> None:
    """The output conv starts at zero (a standard trick); give it weights so outputs depend on the inputs."""
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)


def test_shapes_and_zero_initialized_output() -> None:
    net = ImageUnet2D(3, base_channels=8, channel_mults=(1, 2, 2))
    x = torch.randn(2, 3, 8, 12)
    out = net(x, torch.tensor([0, 99]))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))
    _randomize_output(net)
    out = net(x, torch.tensor([0, 99]))
    assert out.abs().mean() > 0
    # the timestep matters
    assert not torch.allclose(net(x, torch.tensor([5, 5])), net(x, torch.tensor([50, 50])))


def test_condition_and_drop_mask() -> None:
    torch.manual_seed(0)
    net = ImageUnet2D(1, base_channels=8, cond_dim=3)
    _randomize_output(net)
    with torch.no_grad():
        net.null_cond.normal_()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    c1, c2 = torch.randn(2, 3), torch.randn(2, 3)
    drop = torch.tensor([True, False])
    o1, o2 = net(x, t, c1, drop_mask=drop), net(x, t, c2, drop_mask=drop)
    assert torch.allclose(o1[0], o2[0])  # dropped row ignores its condition
    assert not torch.allclose(o1[1], o2[1])  # kept row follows it
    # cond=None is the unconditional model: every row uses the null embedding
    assert torch.allclose(net(x, t), net(x, t, c1, drop_mask=torch.ones(2, dtype=torch.bool)))


def test_runs_in_the_dtype_it_is_cast_to() -> None:
    torch.manual_seed(0)
    net = ImageUnet2D(1, base_channels=8).double()  # float32 timestep features follow the weights
    out = net(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 4]))
    assert out.dtype == torch.float64 and out.shape == (2, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in bf16, returned in the input's dtype
        assert ImageUnet2D(1, base_channels=8)(torch.randn(2, 1, 8, 8), torch.tensor([3, 4])).dtype == torch.float32


def test_bad_inputs() -> None:
    net = ImageUnet2D(1, base_channels=8, channel_mults=(1, 2))
    with pytest.raises(ValueError, match=r"H and W must be divisible by 2"):
        net(torch.zeros(1, 1, 7, 8), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 1, H, W\]"):
        net(torch.zeros(1, 2, 8, 8), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="without cond_dim"):
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), torch.zeros(1, 3))
    cnet = ImageUnet2D(1, base_channels=8, cond_dim=3)
    with pytest.raises(ValueError, match=r"cond must have shape \[1, 3\]"):
        cnet(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), torch.zeros(1, 4))


def bars(n: int, g: torch.Generator, size: int = 16, width: int = 2) -> torch.Tensor:
    """Images in {-1, 1} with one horizontal or vertical bar of ``width`` pixels at a random position."""
    pos = torch.randint(0, size - width + 1, (n,), generator=g)
    vertical = torch.rand(n, generator=g) < 0.5
    idx = torch.arange(size)
    band = (idx[None, :] >= pos[:, None]) & (idx[None, :] < pos[:, None] + width)  # [n, size]
    img = torch.where(vertical[:, None, None], band[:, None, :].expand(n, size, size),
                      band[:, :, None].expand(n, size, size))
    return img.float()[:, None] * 2 - 1


def pixel_stats(x: torch.Tensor) -> dict[str, float]:
    """Mean intensity, fraction of "on" pixels (> 0), and bar-ness: the share of on pixels that lie in the best
    2-wide band of rows or of columns (1 for every training image, ~0.25 for scattered pixels)."""
    on = (x > 0).float()[:, 0]
    rows, cols = on.sum(-1), on.sum(-2)
    best = torch.maximum((rows[:, :-1] + rows[:, 1:]).max(-1).values, (cols[:, :-1] + cols[:, 1:]).max(-1).values)
    bar = (best / on.sum((-1, -2)).clamp(min=1)).mean().item()
    return {"mean": x.mean().item(), "on": on.mean().item(), "bar": bar}


def test_image_model_learns_bars() -> None:
    """Train briefly on CPU; the loss falls and DDIM samples reproduce the data's pixel statistics
    (data: mean -0.75, on 0.125, bar 1.0; the untrained model is checked to be far from them)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = bars(2048, g)
    ref = pixel_stats(data)
    schedule = NoiseSchedule.squaredcos_cap_v2(100)
    sampler = make_sampler("ddim", schedule, steps=20, timestep_spacing="trailing")
    net = ImageUnet2D(1, base_channels=16, channel_mults=(1, 2))

    def sample_stats() -> dict[str, float]:
        net.eval()
        x = sampler.sample(net, (128, 1, 16, 16), generator=torch.Generator().manual_seed(1), clip_sample=1.0)
        net.train()
        assert x.shape == (128, 1, 16, 16) and x.abs().max() <= 1.0 + 1e-5
        return pixel_stats(x)

    untrained = sample_stats()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(400):
        batch = data[torch.randint(0, len(data), (32,), generator=g)]
        loss = diffusion_loss(net, batch, schedule, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the zero-initialized output predicts eps = 0 at first (loss ~ E[eps^2] = 1)
    last = sum(losses[-50:]) / 50
    assert losses[0] > 0.8 and last < 0.05, (losses[0], last)

    got = sample_stats()
    assert abs(got["on"] - ref["on"]) < 0.03, got
    assert abs(got["mean"] - ref["mean"]) < 0.12, got
    assert got["bar"] > 0.85, got
    # the untrained model misses by far more than these tolerances
    assert abs(untrained["on"] - ref["on"]) > 0.1 or untrained["bar"] < 0.6, untrained


def test_the_registry_rebuilds_the_image_unet_from_its_config():
    from diffusion_rl.nets.registry import build_network, network_name

    net = ImageUnet2D(3, base_channels=8, channel_mults=(1, 2), cond_dim=5)
    rebuilt = build_network(network_name(net), **net.config)
    assert network_name(net) == "image_unet2d"
    rebuilt.load_state_dict(net.state_dict())  # the same architecture: every parameter fits
    assert net.config == {"in_channels": 3, "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                          "cond_dim": 5, "groups": 8}
