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


@pytest.mark.parametrize(("c_in", "c_out", "k", "length", "bias"),
                         [(128, 256, 5, 4, True), (256, 128, 3, 8, True), (512, 64, 5, 5, False), (130, 7, 1, 1, True)])
def test_matrix_product_path_matches_conv1d_forward_and_backward(c_in, c_out, k, length, bias, monkeypatch):
    short, plain = _pair(c_in, c_out, k, bias)
    assert length <= ShortConv1d.max_length and c_in >= ShortConv1d.min_channels
    x = torch.randn(3, c_in, length, requires_grad=True)
    x_plain = x.detach().clone().requires_grad_()
    unfolded = []  # the GEMM path unfolds the input into windows; the ordinary convolution does not
    real_unfold = torch.Tensor.unfold
    monkeypatch.setattr(torch.Tensor, "unfold", lambda self, *a: unfolded.append(1) or real_unfold(self, *a))
    out = short(x)
    monkeypatch.undo()
    assert unfolded, "the matrix-product path was not taken"
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
