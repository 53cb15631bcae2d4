"""TemporalUnet: reference parameter counts, any horizon, condition dropping, input checks."""

import pytest
import torch

from diffusion_rl.nets import TemporalUnet


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_count_equals_diffusers_hopper_network():
    # Janner et al.'s hopper model: transition_dim = 3 actions + 11 observations, dim 32, mults (1, 2, 4, 8)
    assert n_params(TemporalUnet(14)) == 3_956_302


def test_parameter_count_matches_decision_diffusers_hopper_network():
    net = TemporalUnet(11, dim=128, dim_mults=(1, 4, 8), cond_dim=1)
    reference = 59_732_491
    assert abs(n_params(net) - reference) <= 0.02 * reference
    assert n_params(net) == reference  # the layout is the reference's, so the count is in fact exact


def small(cond_dim=None, **kw):
    return TemporalUnet(5, dim=16, dim_mults=(1, 2, 4), cond_dim=cond_dim, **kw)


@pytest.mark.parametrize("horizon", [1, 7, 32, 37, 100])
@pytest.mark.parametrize("attention", [False, True])
def test_any_horizon_gives_output_of_input_shape(horizon, attention):
    net = small(cond_dim=2, attention=attention)
    x = torch.randn(3, horizon, 5)
    out = net(x, torch.tensor([0, 5, 19]), torch.randn(3, 2))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert out.std() > 1e-3  # a real, non-constant function of the input


def test_padding_does_not_mix_samples_and_crops_the_padded_tail():
    net = small().eval()
    x = torch.randn(4, 13, 5)
    t = torch.tensor([1, 2, 3, 4])
    full = net(x, t)
    for i in range(4):
        torch.testing.assert_close(net(x[i : i + 1], t[i : i + 1]), full[i : i + 1], rtol=1e-5, atol=1e-5)
    # 13 rows run as 16 (zero rows appended at the end) and come back as the first 13 of those 16
    padded = torch.cat([x, torch.zeros(4, 3, 5)], dim=1)
    torch.testing.assert_close(full, net(padded, t)[:, :13], rtol=1e-5, atol=1e-5)


def test_output_depends_on_the_timestep_and_on_the_condition():
    net = small(cond_dim=2)
    x = torch.randn(2, 8, 5)
    cond = torch.randn(2, 2)
    out = net(x, torch.tensor([3, 3]), cond)
    assert (out - net(x, torch.tensor([10, 10]), cond)).abs().max() > 1e-4
    assert (out - net(x, torch.tensor([3, 3]), cond + 1.0)).abs().max() > 1e-4


def test_dropped_condition_is_the_zero_embedding_and_ignores_cond():
    net = small(cond_dim=2)
    x = torch.randn(4, 9, 5)
    t = torch.randint(0, 20, (4,))
    dropped = torch.ones(4, dtype=torch.bool)
    a = net(x, t, torch.randn(4, 2), dropped)
    b = net(x, t, 100.0 * torch.randn(4, 2), dropped)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(net(x, t), a, rtol=0, atol=0)  # cond=None is the unconditional model


def test_guidance_batch_halves_equal_separate_conditional_and_unconditional_calls():
    # the core concatenates [cond; uncond] copies and calls the net once with drop_mask = [F]*B + [T]*B
    net = small(cond_dim=1).eval()
    x = torch.randn(3, 12, 5)
    t = torch.tensor([4, 9, 0])
    cond = torch.rand(3, 1)
    mask = torch.tensor([False] * 3 + [True] * 3)
    both = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, cond]), mask)
    torch.testing.assert_close(both[:3], net(x, t, cond), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[3:], net(x, t), rtol=1e-5, atol=1e-5)
    assert (both[:3] - both[3:]).abs().max() > 1e-4


def test_scalar_timestep_is_broadcast():
    net = small()
    x = torch.randn(2, 8, 5)
    torch.testing.assert_close(net(x, torch.tensor(7)), net(x, torch.tensor([7, 7])))
    torch.testing.assert_close(net(x, 7), net(x, torch.tensor([7, 7])))


@pytest.mark.parametrize(
    ("x_shape", "t_shape", "cond_shape", "message"),
    [
        ((2, 8, 4), (2,), (2, 1), r"\[B, H, 5\].*\(2, 8, 4\)"),
        ((2, 8), (2,), (2, 1), r"\[B, H, 5\].*\(2, 8\)"),
        ((2, 0, 5), (2,), (2, 1), r"H >= 1.*\(2, 0, 5\)"),
        ((2, 8, 5), (3,), (2, 1), r"\[2\].*\(3,\)"),
        ((2, 8, 5), (2,), (2, 3), r"\[2, 1\].*\(2, 3\)"),
        ((2, 8, 5), (2,), (2,), r"\[2, 1\].*\(2,\)"),
    ],
)
def test_wrong_shapes_raise_value_error_naming_expected_and_actual(x_shape, t_shape, cond_shape, message):
    net = small(cond_dim=1)
    with pytest.raises(ValueError, match=message):
        net(torch.randn(x_shape), torch.zeros(t_shape, dtype=torch.long), torch.randn(cond_shape))


def test_bad_drop_mask_and_unexpected_cond_raise():
    net = small(cond_dim=1)
    x, t, cond = torch.randn(2, 8, 5), torch.zeros(2, dtype=torch.long), torch.randn(2, 1)
    with pytest.raises(ValueError, match="bool"):
        net(x, t, cond, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"\[2\].*\(3,\)"):
        net(x, t, cond, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="cond_dim=None"):
        small()(x, t, cond)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transition_dim": 0}, "transition_dim"),
        ({"transition_dim": 5, "dim": 12}, "divisible by n_groups"),
        ({"transition_dim": 5, "dim_mults": ()}, "dim_mults"),
        ({"transition_dim": 5, "kernel_size": 4}, "odd"),
        ({"transition_dim": 5, "cond_dim": 0}, "cond_dim"),
        ({"transition_dim": 5, "n_groups": 0}, r"n_groups must be a positive integer \(GroupNorm groups\), got 0"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemporalUnet(**kwargs)
