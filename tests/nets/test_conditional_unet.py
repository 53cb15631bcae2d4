"""ConditionalUnet1D (Chi et al.): reference parameter count, FiLM conditioning, learned null condition."""

import pytest
import torch

from diffusion_rl.nets import ConditionalUnet1D


def test_parameter_count_matches_diffusion_policy_pusht_lowdim_network():
    # Chi et al.'s low-dim Push-T U-Net: 2-D actions, To = 2 steps of a 20-D observation, FiLM with scale
    # and bias, kernel 5, down dims (256, 512, 1024): 65,783,298 parameters; ours adds the 40-D learned null
    # condition.
    net = ConditionalUnet1D(2, 40)
    assert sum(p.numel() for p in net.parameters()) == 65_783_298 + 40


def small():
    return ConditionalUnet1D(3, 6, down_dims=(16, 32, 64), diffusion_step_embed_dim=16)


@pytest.mark.parametrize("horizon", [1, 7, 16, 37])
def test_any_chunk_length_gives_output_of_input_shape(horizon):
    net = small()
    x = torch.randn(2, horizon, 3)
    out = net(x, torch.tensor([0, 99]), torch.randn(2, 6))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_output_depends_on_the_global_condition_through_film():
    net = small()
    x = torch.randn(2, 16, 3)
    t = torch.tensor([10, 10])
    cond = torch.randn(2, 6)
    assert (net(x, t, cond) - net(x, t, cond + 0.5)).abs().max() > 1e-4


def test_dropped_rows_use_the_learned_null_condition():
    net = small()
    x = torch.randn(4, 16, 3)
    t = torch.randint(0, 100, (4,))
    dropped = torch.ones(4, dtype=torch.bool)
    a = net(x, t, torch.randn(4, 6), dropped)
    torch.testing.assert_close(a, net(x, t, 50.0 * torch.randn(4, 6), dropped), rtol=0, atol=0)
    # the null vector starts at zero: at initialization a dropped row equals an all-zero observation history
    torch.testing.assert_close(a, net(x, t, torch.zeros(4, 6)), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        net.null_cond.fill_(0.7)
    assert (net(x, t, torch.zeros(4, 6), dropped) - a).abs().max() > 1e-4


def test_mixed_drop_mask_only_changes_the_flagged_rows():
    net = small().eval()
    x = torch.randn(4, 8, 3)
    t = torch.tensor([1, 2, 3, 4])
    cond = torch.randn(4, 6)
    mask = torch.tensor([False, True, False, True])
    mixed = net(x, t, cond, mask)
    torch.testing.assert_close(mixed[~mask], net(x, t, cond)[~mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[mask], net(x, t, cond, torch.ones(4, dtype=torch.bool))[mask])


def test_missing_or_misshaped_condition_raises():
    net = small()
    x, t = torch.randn(2, 8, 3), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\[2, 6\].*None"):
        net(x, t)
    with pytest.raises(ValueError, match=r"\[2, 6\].*\(2, 12\)"):
        net(x, t, torch.randn(2, 12))
    with pytest.raises(ValueError, match=r"\[B, H, 3\].*\(2, 8, 2\)"):
        net(torch.randn(2, 8, 2), t, torch.randn(2, 6))
    with pytest.raises(ValueError, match="divisible by n_groups"):
        ConditionalUnet1D(3, 6, down_dims=(12, 24))


def test_film_mish_runs_once_per_evaluation_with_the_same_numbers_and_keys():
    import torch.nn.functional as F

    from diffusion_rl.nets.conditional_unet import FiLMResidualBlock1D

    torch.manual_seed(0)
    block = FiLMResidualBlock1D(4, 8, cond_dim=5)
    x, cond = torch.randn(2, 4, 16), torch.randn(2, 5)
    # the shared activation gives what each block's own Mish -> Linear gave
    torch.testing.assert_close(block(x, F.mish(cond), activated=True), block(x, cond), rtol=0, atol=0)
    assert {"film.1.weight", "film.1.bias"} <= set(block.state_dict())

    net = small()
    calls = []
    for module in net.modules():
        if isinstance(module, FiLMResidualBlock1D):
            module.film[0].register_forward_hook(lambda *_: calls.append(1))
    mishes = []
    original = F.mish
    try:
        F.mish = lambda t, *a, **k: (mishes.append(t.shape), original(t, *a, **k))[1]
        net(torch.randn(2, 16, 3), torch.tensor([3, 50]), torch.randn(2, 6))
    finally:
        F.mish = original
    assert calls == []  # no block applies its own FiLM Mish
    # conv blocks and the time MLP have their own Mish; [time embedding, condition] gets one per evaluation
    assert mishes.count(torch.Size([2, 16 + 6])) == 1
