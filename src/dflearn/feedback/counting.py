"""Multiply-accumulates of layers, under the convention of `dflearn.cost`: 1 MAC = one
multiply-add of a Linear or Conv layer; biases, activations, norms and lookups are
elementwise and count 0 (as in torch.utils.flop_counter, FLOPs = 2 x MACs).

A module whose own arithmetic (its submodules' excluded) is none of these, such as attention's
batched products, which have no weights, states its per-sample counts with a method
`macs(inputs, output)` returning (forward MACs, input-gradient MACs); see
`dflearn.models.gpt.Attention`."""
from __future__ import annotations

import math

import torch
from torch import nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# parametrised but elementwise (or a lookup): no MACs under the convention
ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Embedding, nn.PReLU)


def layer_macs(module: nn.Module, inputs: tuple, out: torch.Tensor) -> tuple[int, int] | None:
    """Per-sample MACs of one module call (bias ignored): its forward, and the gradient with
    respect to its input (a Linear or Conv layer: as many as its forward); None if the
    convention does not cover the module's type."""
    h = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if callable(getattr(module, "macs", None)):
        return module.macs(inputs, out)
    if isinstance(module, nn.Linear):
        forward = out[0].numel() * module.in_features
    elif isinstance(module, CONVS):
        forward = out[0].numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    elif isinstance(module, TRANSPOSED) and h is not None:
        forward = h[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    elif isinstance(module, ELEMENTWISE):
        forward = 0
    else:
        return None
    return forward, forward


def traced_macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Per-sample MACs of `module`'s forward on a zero input of `shape`, from its Linear and
    Conv layers; a module that is a bare matrix (d_L, n) counts one MAC per entry."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, *CONVS))]
    if not layers:
        return module.weight.numel()
    total = 0

    def count(m, inputs, output):
        nonlocal total
        total += (layer_macs(m, inputs, output) or (0, 0))[0]

    hooks = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            p = next(module.parameters())
            module(torch.zeros(1, *shape, device=p.device, dtype=p.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return total
