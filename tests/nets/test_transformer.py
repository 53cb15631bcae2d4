"""TransformerDenoiser1D: adaLN-zero initialization, any horizon up to max_horizon, condition dropping."""

import pytest
import torch

from diffusion_rl.nets import TransformerDenoiser1D


def small(cond_dim=2, **kw):
    return TransformerDenoiser1D(5, cond_dim=cond_dim, d_model=32, depth=2, heads=4, max_horizon=64, **kw)


def perturbed(net):
    """Random weights everywhere (adaLN-zero starts the modulation and output layers at exactly zero)."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def test_adaln_zero_starts_as_the_zero_function():
    net = small()
    out = net(torch.randn(3, 10, 5), torch.tensor([1, 2, 3]), torch.randn(3, 2))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("horizon", [1, 7, 37, 64])
def test_any_horizon_up_to_max_gives_output_of_input_shape(horizon):
    net = perturbed(small())
    x = torch.randn(2, horizon, 5)
    out = net(x, torch.tensor([0, 50]), torch.randn(2, 2))
    assert out.shape == x.shape and torch.isfinite(out).all() and out.std() > 1e-3


def test_horizon_above_max_raises():
    with pytest.raises(ValueError, match=r"H <= 64.*\(1, 65, 5\)"):
        small()(torch.randn(1, 65, 5), torch.tensor([0]))


def test_attention_mixes_positions_and_timestep_and_condition_matter():
    net = perturbed(small()).eval()
    x = torch.randn(1, 12, 5)
    t = torch.tensor([5])
    cond = torch.randn(1, 2)
    out = net(x, t, cond)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert (net(x2, t, cond)[:, 0] - out[:, 0]).abs().max() > 1e-5  # position 0 sees the last step
    assert (net(x, torch.tensor([40]), cond) - out).abs().max() > 1e-4
    assert (net(x, t, cond + 1.0) - out).abs().max() > 1e-4


def test_dropped_condition_ignores_cond_and_equals_cond_none():
    net = perturbed(small())
    x = torch.randn(4, 9, 5)
    t = torch.randint(0, 100, (4,))
    dropped = torch.ones(4, dtype=torch.bool)
    a = net(x, t, torch.randn(4, 2), dropped)
    torch.testing.assert_close(a, net(x, t, 30.0 * torch.randn(4, 2), dropped), rtol=0, atol=0)
    torch.testing.assert_close(a, net(x, t), rtol=0, atol=0)


def test_bad_inputs_raise():
    net = small()
    x, t = torch.randn(2, 8, 5), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[2, 2\].*\(2, 3\)"):
        net(x, t, torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\[B, H, 5\].*\(2, 8, 6\)"):
        net(torch.randn(2, 8, 6), t)
    with pytest.raises(ValueError, match="cond_dim=None"):
        small(cond_dim=None)(x, t, torch.randn(2, 2))
    with pytest.raises(ValueError, match="divisible by heads"):
        TransformerDenoiser1D(5, d_model=30, heads=4)
