"""Properties every network must have: gradients everywhere, bf16 autocast, torch.compile without graph
breaks, rebuild from the registry, CUDA parity."""

import json

import pytest
import torch

from diffusion_rl.nets import (
    NETWORKS,
    ConditionalUnet1D,
    InverseDynamics,
    TemporalUnet,
    TransformerDenoiser1D,
    ValueNet,
    build_network,
    network_name,
)

B, H = 4, 11
MASK = torch.tensor([False, True, False, True])

# name -> (constructor, inputs(batch) -> (args, kwargs)); small sizes keep every case well under a second
CASES = {
    "temporal_unet": (
        lambda: TemporalUnet(5, dim=16, dim_mults=(1, 2, 4), cond_dim=2),
        lambda: ((torch.randn(B, H, 5), torch.randint(0, 20, (B,)), torch.randn(B, 2)), {"drop_mask": MASK}),
    ),
    "temporal_unet_attention": (
        lambda: TemporalUnet(5, dim=16, dim_mults=(1, 2), attention=True),
        lambda: ((torch.randn(B, H, 5), torch.randint(0, 20, (B,))), {}),
    ),
    "conditional_unet1d": (
        lambda: ConditionalUnet1D(3, 6, down_dims=(16, 32, 64), diffusion_step_embed_dim=16),
        lambda: ((torch.randn(B, H, 3), torch.randint(0, 100, (B,)), torch.randn(B, 6)), {"drop_mask": MASK}),
    ),
    "transformer1d": (
        lambda: TransformerDenoiser1D(5, cond_dim=2, d_model=32, depth=2, heads=4, max_horizon=32),
        lambda: ((torch.randn(B, H, 5), torch.randint(0, 100, (B,)), torch.randn(B, 2)), {"drop_mask": MASK}),
    ),
    "value_net": (
        lambda: ValueNet(5, H, dim=32, dim_mults=(1, 2)),
        lambda: ((torch.randn(B, H, 5), torch.randint(0, 20, (B,))), {}),
    ),
    "inverse_dynamics": (
        lambda: InverseDynamics(5, 2, hidden_dim=32),
        lambda: ((torch.randn(B, H, 5), torch.randn(B, H, 5)), {}),
    ),
}


def make(name):
    build, inputs = CASES[name]
    args, kwargs = inputs()
    return build(), args, kwargs


def train_steps(net, args, kwargs, steps):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        out = net(*args, **kwargs)
        loss = ((out - torch.ones_like(out)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_reach_every_parameter(name):
    net, args, kwargs = make(name)
    # three steps first: adaLN-zero layers start at zero and pass gradient on only once they are non-zero
    train_steps(net, args, kwargs, 3)
    net.zero_grad()
    out = net(*args, **kwargs)
    ((out - torch.ones_like(out)) ** 2).mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", list(CASES))
def test_bf16_autocast_on_cpu_runs_and_stays_close_to_float32(name):
    net, args, kwargs = make(name)
    train_steps(net, args, kwargs, 3)  # leave the zero initialization of the transformer
    with torch.no_grad():
        ref = net(*args, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(*args, **kwargs)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert torch.isfinite(low).all()
    assert 0 < (low - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3  # computed in bf16, yet close


@pytest.mark.parametrize("name", [n for n in CASES if n != "inverse_dynamics"])  # the timestep-embedding nets
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_network_cast_to_another_dtype_runs_in_it(name, dtype):
    """net.double() or net.to(torch.bfloat16): the float32 timestep features follow the network's dtype."""
    net, args, kwargs = make(name)
    train_steps(net, args, kwargs, 3)
    with torch.no_grad():
        ref = net(*args, **kwargs).double()
        cast = lambda v: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v  # noqa: E731
        out = net.to(dtype)(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
    assert out.dtype == dtype and torch.isfinite(out).all()
    tolerance = 1e-6 if dtype == torch.float64 else 0.05
    assert (out.double() - ref).abs().mean() < tolerance * ref.abs().mean() + 1e-3


@pytest.mark.parametrize("name", ["temporal_unet", "conditional_unet1d", "transformer1d", "value_net"])
def test_torch_compile_traces_the_whole_forward_without_graph_breaks(name):
    net, args, kwargs = make(name)
    net.eval()
    compiled = torch.compile(net, backend="eager", fullgraph=True)  # raises on any graph break
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args, **kwargs), net(*args, **kwargs))


@pytest.mark.parametrize("name", list(CASES))
def test_registry_rebuilds_the_same_network_from_its_json_config(name):
    net, args, kwargs = make(name)
    config = json.loads(json.dumps(net.config))
    rebuilt = build_network(network_name(net), **config)
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*args, **kwargs), net(*args, **kwargs), rtol=0, atol=0)


def test_registry_rejects_unknown_names_and_classes():
    expected = {"temporal_unet", "conditional_unet1d", "transformer1d", "value_net", "inverse_dynamics"}
    assert expected <= set(NETWORKS)
    with pytest.raises(ValueError, match="temporal_unet"):
        build_network("unet9000", transition_dim=3)
    with pytest.raises(ValueError, match="not a registered network"):
        network_name(torch.nn.Linear(2, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_forward_matches_cpu(name):
    net, args, kwargs = make(name)
    with torch.no_grad():
        ref = net(*args, **kwargs)
        net.cuda()
        out = net(*[a.cuda() for a in args], **{k: v.cuda() for k, v in kwargs.items()})
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-3, atol=1e-3)


def test_sizes_are_integers_not_cut_to_them():
    """dim_mults=(1, 2.5) became (1, 2) and down_dims=(16.9, 32) became (16, 32) without a word; numpy integers
    are fine as multipliers, and as a size they are refused with the reason."""
    import numpy as np

    from diffusion_rl.nets.conditional_unet import ConditionalUnet1D
    from diffusion_rl.nets.temporal_unet import TemporalUnet

    with pytest.raises(ValueError, match=r"dim_mults must be a non-empty sequence of positive integers, got \[1, 2.5\]"):
        TemporalUnet(4, dim=8, dim_mults=(1, 2.5))
    with pytest.raises(ValueError, match=r"down_dims must be a non-empty sequence of positive integers, got \[16.9, 32\]"):
        ConditionalUnet1D(2, global_cond_dim=3, down_dims=(16.9, 32))
    assert TemporalUnet(4, dim=8, dim_mults=(np.int64(1), np.int64(2))).config["dim_mults"] == [1, 2]
    with pytest.raises(ValueError, match=r"a numpy integer: pass int\(\.\.\.\)"):
        TemporalUnet(np.int64(4), dim=8, dim_mults=(1, 2))
