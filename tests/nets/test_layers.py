"""ShortConv1d: the matrix-product path for short wide inputs gives nn.Conv1d's outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_rl.nets.layers import ShortConv1d


def _pair(c_in: int, c_out: int, k: int, bias: bool = True) -> tuple[ShortConv1d, nn.Conv1d]:
    torch.manual_seed(0)
    short = ShortConv1d(c_in, c_out, k, padding=k // 2, bias=bias)
    plain = nn.Conv1d(c_in, c_out, k, padding=k // 2, bias=bias)
    plain.load_state_dict(short.state_dict())  # same parameter names: checkpoints load either way
    return short, plain


def _without_convolution(short: ShortConv1d, x: torch.Tensor, monkeypatch) -> torch.Tensor:
    """``short(x)`` with nn.Conv1d's convolution broken: it passes only if the matrix-product path is taken."""
    def refuse(*args, **kwargs):
        raise AssertionError("the ordinary convolution was called")

    with monkeypatch.context() as patch:
        patch.setattr(nn.Conv1d, "_conv_forward", refuse)
        return short(x)


@pytest.mark.parametrize(("c_in", "c_out", "k", "length", "bias"),
                         [(128, 256, 5, 4, True), (256, 128, 3, 8, True), (512, 64, 5, 5, False), (130, 7, 1, 1, True)])
def test_matrix_product_path_matches_conv1d_forward_and_backward(c_in, c_out, k, length, bias, monkeypatch):
    short, plain = _pair(c_in, c_out, k, bias)
    assert length <= ShortConv1d.max_length and c_in >= ShortConv1d.min_channels
    monkeypatch.setattr(ShortConv1d, "max_rows", None)
    x = torch.randn(3, c_in, length, requires_grad=True)
    x_plain = x.detach().clone().requires_grad_()
    out = _without_convolution(short, x, monkeypatch)
    ref = plain(x_plain)
    assert out.shape == ref.shape == (3, c_out, length) and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_plain.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(short.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
    if bias:
        torch.testing.assert_close(short.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-4)


def test_long_or_narrow_inputs_take_the_ordinary_convolution(monkeypatch):
    short, plain = _pair(128, 32, 5)
    called = []
    monkeypatch.setattr(torch, "addmm", lambda *a, **kw: called.append(1))  # would break the GEMM path
    for x in (torch.randn(2, 128, ShortConv1d.max_length + 1), torch.randn(2, 128, 64)):
        torch.testing.assert_close(short(x), plain(x))
    narrow_short, narrow_plain = _pair(ShortConv1d.min_channels - 1, 16, 5)
    x = torch.randn(2, ShortConv1d.min_channels - 1, 4)
    torch.testing.assert_close(narrow_short(x), narrow_plain(x))
    assert not called


@pytest.mark.parametrize("k", [5, 1])
def test_batches_of_more_than_max_rows_rows_take_the_ordinary_convolution(k, monkeypatch):
    """On AVX-512 CPUs oneDNN's convolution beats the matrix product once the batch has many rows (a training
    batch); a planning batch of one or two still takes the matrix product."""
    short, plain = _pair(256, 128, k)
    monkeypatch.setattr(ShortConv1d, "max_rows", 16)
    small, large = torch.randn(4, 256, 4), torch.randn(5, 256, 4)  # 16 and 20 rows
    torch.testing.assert_close(_without_convolution(short, small, monkeypatch), plain(small), rtol=1e-4, atol=1e-5)
    calls, real = [], nn.Conv1d._conv_forward
    monkeypatch.setattr(nn.Conv1d, "_conv_forward", lambda self, *a: calls.append(1) or real(self, *a))
    torch.testing.assert_close(short(large), plain(large))
    assert len(calls) == 2  # ours, then the reference's


def test_large_weights_take_the_matrix_product_at_any_batch(monkeypatch):
    """1024 channels in and out: oneDNN's convolution is about 2x slower than the matrix product at any batch."""
    monkeypatch.setattr(ShortConv1d, "max_rows", 16)
    short, plain = _pair(1024, 1024, 5)
    assert short.weight.numel() >= ShortConv1d.large_weight
    x = torch.randn(8, 1024, 4)  # 32 rows
    torch.testing.assert_close(_without_convolution(short, x, monkeypatch), plain(x), rtol=1e-4, atol=1e-4)


def test_one_exponential_mish_matches_torch_forward_and_backward():
    """The compiled networks' Mish (one exponential, its own backward) against torch's, from float64 truth."""
    import torch.nn.functional as F

    from diffusion_rl.nets.layers import _OneExpMish

    x64 = torch.linspace(-100.0, 100.0, 20001, dtype=torch.float64)
    x64 = torch.cat([x64, torch.tensor([-1e4, -88.0, 0.0, 19.99, 20.0, 20.01, 44.5, 89.0, 1e4],
                                       dtype=torch.float64)]).requires_grad_()
    truth = F.mish(x64)
    (truth_grad,) = torch.autograd.grad(truth.sum(), x64)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        x = x64.detach().to(dtype).requires_grad_()
        ours = _OneExpMish.apply(x)
        (ours_grad,) = torch.autograd.grad(ours.sum(), x)
        assert torch.isfinite(ours).all() and torch.isfinite(ours_grad).all()
        assert (ours.double() - truth).abs().max() <= tol * (1 + truth.abs()).max() / 1e2  # relative to scale
        assert torch.allclose(ours.double(), truth, rtol=tol, atol=tol)
        assert torch.allclose(ours_grad.double(), truth_grad, rtol=tol, atol=tol)
    x = torch.randn(64, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_OneExpMish.apply, (x,))


def test_mish_is_torchs_kernel_eager_and_the_one_exponential_form_compiled():
    from diffusion_rl.nets import layers

    act = layers.Mish()
    x = torch.randn(4, 8, 16, requires_grad=True)
    eager = act(x)
    assert torch.equal(eager, torch.nn.functional.mish(x))
    assert act.state_dict() == {} and not list(act.parameters())  # checkpoints keep nn.Mish's (empty) state
    graphs = []

    def recording_backend(gm, example_inputs):  # what torch.compile hands its compiler, run as it is
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(act, backend=recording_backend)(x)
    ops = " ".join(str(node.target) for gm in graphs for node in gm.graph.nodes)
    assert "autograd_function_apply" in ops and "mish" not in ops, ops  # _OneExpMish, not F.mish
    (g_compiled,) = torch.autograd.grad(compiled.sum(), x)
    (g_eager,) = torch.autograd.grad(eager.sum(), x)
    assert torch.allclose(compiled, eager, atol=1e-6) and torch.allclose(g_compiled, g_eager, atol=1e-6)
    torch._dynamo.reset()
    half = torch.compile(act, backend=recording_backend)
    graphs.clear()
    half(torch.randn(8, dtype=torch.float16))  # float16 keeps torch's form (n (n + 2) overflows it)
    assert "mish" in " ".join(str(node.target) for gm in graphs for node in gm.graph.nodes)


@pytest.mark.parametrize(("k", "padding"), [(3, 0), (1, 1), (5, 0), (5, 1)])
def test_a_padding_that_changes_the_length_is_the_ordinary_convolution(k, padding, monkeypatch):
    """The windows of the matrix product keep the length ("same" padding); any other padding, torch's default of 0
    included, gives nn.Conv1d's output (it used to fail on short inputs with a reshape error)."""
    monkeypatch.setattr(ShortConv1d, "max_rows", None)
    torch.manual_seed(0)
    short = ShortConv1d(128, 64, k, padding=padding)
    plain = nn.Conv1d(128, 64, k, padding=padding)
    plain.load_state_dict(short.state_dict())
    x = torch.randn(2, 128, 6)
    torch.testing.assert_close(short(x), plain(x))
