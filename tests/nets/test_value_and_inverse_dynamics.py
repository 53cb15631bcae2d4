"""ValueNet (Diffuser's value function) and InverseDynamics (Decision Diffuser's action model)."""

import pytest
import torch

from diffusion_rl.nets import InverseDynamics, ValueNet


def test_value_net_parameter_count_equals_diffusers_hopper_value_function():
    assert sum(p.numel() for p in ValueNet(14, 32).parameters()) == 2_294_817


@pytest.mark.parametrize("horizon", [1, 4, 7, 32, 37, 100])
def test_value_net_builds_and_runs_for_any_horizon(horizon):
    net = ValueNet(6, horizon, dim=16, dim_mults=(1, 2, 4, 8))
    x = torch.randn(3, horizon, 6)
    out = net(x, torch.tensor([0, 3, 19]))
    assert out.shape == (3,) and torch.isfinite(out).all()
    assert (out - net(x + 1.0, torch.tensor([0, 3, 19]))).abs().max() > 1e-6
    torch.testing.assert_close(net(x[:1], torch.tensor([0])), out[:1])  # one trajectory: a plan, or a goal's


def test_value_net_whose_group_norms_hold_single_numbers_runs_at_batch_1():
    """8 channels in 8 groups at length 1 normalize single numbers, which torch refuses at batch 1 (one plan, or a
    goal): the net runs there all the same, with the numbers it gives that row in a batch."""
    torch.manual_seed(0)
    net = ValueNet(6, 8, dim=16, dim_mults=(1, 2))
    assert net.single_value_norms and not ValueNet(6, 8, dim=32, dim_mults=(1, 2)).single_value_norms
    x, t = torch.randn(3, 8, 6), torch.tensor([3, 5, 7])
    torch.testing.assert_close(net(x[:1], t[:1]), net(x, t)[:1])


def test_value_net_rejects_a_different_horizon():
    net = ValueNet(6, 16, dim=8)
    with pytest.raises(ValueError, match=r"\[B, 16, 6\].*\(2, 17, 6\)"):
        net(torch.randn(2, 17, 6), torch.tensor([0, 1]))


def test_value_net_learns_to_rank_trajectories_by_return():
    # targets: the mean of the first feature over the horizon (a "return"); after a short fit the predictions
    # must correlate with it on held-out trajectories
    net = ValueNet(3, 8, dim=32, dim_mults=(1, 2))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(80):
        x = torch.randn(64, 8, 3)
        loss = ((net(x, torch.zeros(64, dtype=torch.long)) - x[:, :, 0].mean(1)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(256, 8, 3)
    with torch.no_grad():
        pred = net(x, torch.zeros(256, dtype=torch.long))
    corr = torch.corrcoef(torch.stack([pred, x[:, :, 0].mean(1)]))[0, 1]
    assert corr > 0.9


def test_inverse_dynamics_shapes_tanh_bound_and_errors():
    net = InverseDynamics(4, 2, hidden_dim=32, tanh_output=True)
    s = 10 * torch.randn(5, 7, 4)
    a = net(s, s.roll(1, dims=1))
    assert a.shape == (5, 7, 2) and a.abs().max() <= 1.0
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [32, 32, 2]
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\].*\(5, 3\)"):
        net(torch.randn(5, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="same shape"):
        net(torch.randn(5, 4), torch.randn(6, 4))


def test_inverse_dynamics_recovers_actions_of_a_linear_system():
    # s' = A s + B a  =>  a is a linear function of (s, s'); the MLP should fit it closely
    A = torch.randn(4, 4) * 0.5
    B = torch.randn(4, 2)
    net = InverseDynamics(4, 2, hidden_dim=64)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        s, a = torch.randn(128, 4), torch.rand(128, 2) * 2 - 1
        loss = ((net(s, s @ A.T + a @ B.T) - a) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s, a = torch.randn(512, 4), torch.rand(512, 2) * 2 - 1
    with torch.no_grad():
        mse = ((net(s, s @ A.T + a @ B.T) - a) ** 2).mean()
    assert mse < 0.02  # the action variance is 1/3
