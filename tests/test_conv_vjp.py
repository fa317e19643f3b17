"""The closed-form VJP of the conv local module equals the transposed convolution it
replaced (torch.nn.grad.conv2d_input of the cotangent spread over the pooled positions)."""
import pytest
import torch

from dflearn.feedback.layout import Point
from dflearn.feedback.operators import ConvLocal, _taps_reaching


def transposed_conv_vjp(local: ConvLocal, e: torch.Tensor) -> torch.Tensor:
    """The straightforward computation: spread e / (H_o W_o) over every output position,
    then the full transposed convolution (what ConvLocal.vjp computed before)."""
    shape = (len(e), *local.shape)
    conv = local.conv
    Ho, Wo = conv(torch.zeros(1, *local.shape, dtype=e.dtype)).shape[2:]
    spread = (e / (Ho * Wo))[:, :, None, None].expand(-1, -1, Ho, Wo)
    return torch.nn.grad.conv2d_input(shape, conv.weight.detach(), spread, stride=conv.stride,
                                      padding=conv.padding, dilation=conv.dilation)


CASES = [(3, 1, 1, (8, 8)), (5, 1, 2, (16, 16)), (3, 1, 1, (32, 32)), (5, 1, 2, (9, 7)), (3, 2, 1, (9, 9)),
         (5, 2, 0, (11, 10)), (1, 1, 0, (6, 6)), (4, 2, 1, (8, 9)), (3, 3, 2, (10, 8)), (5, 1, 4, (7, 7)),
         (2, 1, 0, (5, 6)), (3, 1, 0, (3, 3))]


@pytest.mark.parametrize("k,stride,padding,hw", CASES)
def test_closed_form_equals_transposed_conv_float64(k, stride, padding, hw):
    torch.manual_seed(1)
    local = ConvLocal(Point("p", (5, *hw), ()), 7, kernel_size=k, stride=stride, padding=padding).double()
    e = torch.randn(4, 7, dtype=torch.float64)
    g = local.vjp(e)
    ref = transposed_conv_vjp(local, e)
    assert g.shape == ref.shape
    torch.testing.assert_close(g, ref, rtol=0, atol=1e-10)
    h = torch.randn(4, 5, *hw, dtype=torch.float64)  # and autograd's pullback at any h (M is linear)
    _, pullback = torch.func.vjp(local, h)
    torch.testing.assert_close(g, pullback(e)[0], rtol=0, atol=1e-10)


def test_closed_form_with_dilation():
    local = ConvLocal(Point("p", (3, 9, 9), ()), 4, kernel_size=3, padding=2).double()
    local.conv.dilation = (2, 2)  # the reach matrices read it: rebuild them
    local.reach = torch.kron(_taps_reaching(9, 9, local.conv, 0), _taps_reaching(9, 9, local.conv, 1)).double()
    local.positions = 81  # 9 x 9 output positions at dilation 2
    e = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(local.vjp(e), transposed_conv_vjp(local, e), rtol=0, atol=1e-10)


def test_reach_state_is_not_saved():
    """The reach matrices follow from the shapes: checkpoints keep only the conv weight."""
    local = ConvLocal(Point("p", (3, 8, 8), ()), 4)
    assert list(local.state_dict()) == ["conv.weight"]


@pytest.mark.parametrize("k,stride,padding,hw", CASES)
def test_closed_form_forward_equals_conv_then_mean(k, stride, padding, hw):
    torch.manual_seed(2)
    local = ConvLocal(Point("p", (5, *hw), ()), 7, kernel_size=k, stride=stride, padding=padding).double()
    h = torch.randn(4, 5, *hw, dtype=torch.float64, requires_grad=True)
    y = local(h)
    ref = torch.nn.functional.conv2d(h, local.conv.weight, stride=stride, padding=padding).mean(dim=(2, 3))
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-10)
    e = torch.randn_like(y)  # and the weight gradient that trains the module
    gw, = torch.autograd.grad(y, local.conv.weight, e)
    gw_ref, = torch.autograd.grad(ref, local.conv.weight, e)
    torch.testing.assert_close(gw, gw_ref, rtol=0, atol=1e-10)
