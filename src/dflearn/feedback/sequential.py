"""Sequential feedback: layer-by-layer backward in which a feedback weight B
takes W's place in every Linear/Conv2d input gradient (FA, sign-symmetry, KP, WM).

B is stored in W's own shape (out, in[, kh, kw]); in the papers' notation the
backward matrix is B^T of ours, so "B = W^T" there is "B = W" here. A layer's
weight and bias gradients stay exact given the delta that reaches it; only the
gradient passed to the layer below changes:

    Linear:  dx = delta @ B                     (B_paper delta, eq. 11)
    Conv2d:  dx = conv_transpose(delta, B)      (the transposed convolution with B)

`substituted(model, names, feedback)` swaps these in for the named modules for
the length of a forward pass, by an instance-level `forward` that is removed
afterwards: the model's parameters, state_dict keys and hooks stay as they were.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from ..errors import DflearnError
from .layout import probing

LAYERS = (nn.Linear, nn.Conv2d)


class LinearFeedback(torch.autograd.Function):
    """F.linear(x, W, b) whose input gradient uses B (W's shape) instead of W."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = grad @ feedback
        if ctx.needs_input_grad[1]:
            dw = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[2]:
            db = grad.reshape(-1, grad.shape[-1]).sum(0)
        return dx, dw, db, None


class Conv2dFeedback(torch.autograd.Function):
    """F.conv2d whose input gradient is the transposed convolution with B."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, stride, padding, dilation, groups):
        ctx.save_for_backward(x, feedback)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.weight_shape = weight.shape
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = conv2d_input(x.shape, feedback, grad, *ctx.conf)
        if ctx.needs_input_grad[1]:
            dw = conv2d_weight(x, ctx.weight_shape, grad, *ctx.conf)
        if ctx.needs_input_grad[2]:
            db = grad.sum((0, 2, 3))
        return dx, dw, db, None, None, None, None, None


def linear(module: nn.Linear, feedback: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return LinearFeedback.apply(x, module.weight, module.bias, feedback)


def conv2d(module: nn.Conv2d, feedback: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    padding = module.padding
    if module.padding_mode != "zeros" or isinstance(padding, str):
        # as nn.Conv2d does for these modes: pad explicitly (exact backward), then convolve unpadded
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x, padding = F.pad(x, module._reversed_padding_repeated_twice, mode=mode), (0, 0)
    return Conv2dFeedback.apply(x, module.weight, module.bias, feedback, module.stride, padding,
                                module.dilation, module.groups)


def layer_function(module: nn.Module, feedback: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (conv2d if isinstance(module, nn.Conv2d) else linear)(module, feedback, x)


def feedback_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[str, ...]:
    """Names of the Linear/Conv2d modules, in execution order, whose input needs a
    gradient (it depends on a parameter); the first layer reading the data is left
    out, since nobody needs its input gradient and autograd never computes it."""
    names = {m: n for n, m in model.named_modules()}
    found: list[str] = []

    def record(module, inputs, output):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad \
                and names[module] not in found:
            found.append(names[module])

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, LAYERS)]
    with probing(model, hooks), torch.enable_grad():
        model(example_input)
    return tuple(found)


@contextmanager
def substituted(model: nn.Module, names: tuple[str, ...],
                feedback: Callable[[int, nn.Module], torch.Tensor], rule: str = "") -> Iterator[None]:
    """Within the block, module `names[k]` of `model` runs with feedback weight
    `feedback(k, module)` (called at every forward, so B may follow W)."""
    modules = dict(model.named_modules())
    patched = []

    def make(k, module):
        def forward(x):
            return layer_function(module, feedback(k, module), x)
        return forward

    try:
        for k, name in enumerate(names):
            module = modules.get(name)
            if not isinstance(module, LAYERS):
                raise DflearnError(f"rule '{rule}' was built for another model (no Linear/Conv2d '{name}' here); "
                                   f"build the rule from the model it trains")
            if "forward" in module.__dict__:
                raise DflearnError(f"module '{name}' already has its own forward attribute; sequential rules "
                                   f"replace it during the forward pass, so remove it")
            module.forward = make(k, module)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


@torch.no_grad()
def mirror(module: nn.Module, batch: int, sigma: float) -> torch.Tensor:
    """The weight mirror's Hebbian term (Akrout et al. 2019), in W's shape: drive the
    layer with noise x ~ N(0, sigma^2), y = W x (no bias), return y x^T averaged
    over the batch, whose expectation is sigma^2 W. A Conv2d is driven with single
    receptive fields (one output position: the mirror of its unfolded kernel)."""
    w = module.weight
    if isinstance(module, nn.Conv2d):
        (kh, kw), (dh, dw) = module.kernel_size, module.dilation
        x = torch.randn(batch, module.in_channels, (kh - 1) * dh + 1, (kw - 1) * dw + 1,
                        device=w.device, dtype=w.dtype) * sigma
        y = F.conv2d(x, w, None, 1, 0, module.dilation, module.groups)
        return conv2d_weight(x, w.shape, y, 1, 0, module.dilation, module.groups) / batch
    x = torch.randn(batch, module.in_features, device=w.device, dtype=w.dtype) * sigma
    return F.linear(x, w).t() @ x / batch
