"""The compiled denoiser wrappers: a Python-number timestep, and room for more batch sizes than torch's default."""

from __future__ import annotations

import torch

from diffusion_rl.nets.compiled import EagerDenoiser, InductorDenoiser, TracedDenoiser
from diffusion_rl.nets.temporal_unet import TemporalUnet


def _net() -> TemporalUnet:
    torch.manual_seed(0)
    return TemporalUnet(4, dim=8, dim_mults=(1, 2)).eval()


def test_a_python_number_timestep_is_taken_as_the_network_takes_it():
    net = _net()
    x = torch.randn(2, 8, 4)
    with torch.no_grad():
        expected = net(x, torch.tensor(5))
    for wrapper in (EagerDenoiser(net), TracedDenoiser(net)):
        torch.testing.assert_close(wrapper(x, 5), expected, rtol=1e-5, atol=1e-6)
    assert not net.training


def test_inductor_wrapper_compiles_more_batch_sizes_than_torch_s_default_limit():
    """torch allows 8 compiles per code object; with fullgraph=True the 9th batch size was a hard error. The
    wrapper makes room for 4 x max_signatures (checked with dynamo's eager backend: the limit is dynamo's)."""
    import torch._dynamo

    net = _net()
    wrapper = InductorDenoiser(net)
    wrapper.net.compiled = torch.compile(net, backend="eager", dynamic=False, fullgraph=True)
    torch._dynamo.reset()
    try:
        for batch in range(1, 12):
            x = torch.randn(batch, 8, 4)
            with torch.no_grad():
                expected = net(x, torch.full((batch,), 3))
            torch.testing.assert_close(wrapper(x, torch.full((batch,), 3)), expected)
        assert torch._dynamo.config.recompile_limit == 8  # patched only around each call
    finally:
        torch._dynamo.reset()
