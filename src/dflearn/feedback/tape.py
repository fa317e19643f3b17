"""Cutting the graph at feedback points for the length of one forward pass."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .point import FeedbackPoint


class Tape:
    """The feedback points' tensors of one forward pass, in execution order.

    `outputs[i]` keeps its graph back to the block's parameters; at a cut point
    the network above sees `outputs[i].detach()`, so a backward pass from the
    loss stops there and nothing computes the (unused) gradient of a block's input.
    """

    def __init__(self, num_points: int):
        self.outputs: list[torch.Tensor | None] = [None] * num_points


@contextmanager
def recording(model: nn.Module, cut: list[bool]) -> Iterator[Tape]:
    """Within the block, a forward pass of `model` fills a Tape; point i is cut if cut[i]."""
    points = [m for m in model.modules() if isinstance(m, FeedbackPoint)]
    tape = Tape(len(cut))
    order = iter(range(len(cut)))
    handles = []

    def hook(module, inputs, output):
        i = next(order)
        tape.outputs[i] = output
        return output.detach() if cut[i] else output

    for m in points:
        handles.append(m.register_forward_hook(hook))
    try:
        yield tape
    finally:
        for h in handles:
            h.remove()
