import math
from typing import Literal

import torch

from ..errors import DflearnError
from ..feedback.layout import probing
from ..feedback.rule import optimizer_step, output_error
from ..feedback.tape import recording
from .base import Rule, register_rule


@register_rule
class PEPITA(Rule):
    """PEPITA (Dellaferrera & Kreiman, ICML 2022): two forward passes, no backward pass.

    Pass 1 on x gives the activities h_l = f(W_l h_{l-1}) at every feedback point and
    the error e = softmax(a_L) - onehot(y) (per sample). Pass 2 runs on the modulated
    input x_mod = x + F e, F a fixed random (input size, d_L) matrix, U(-s, s) with
    s = scale sqrt(6 / input size) (the authors' code: scale 0.05, mean zero, added to
    the input), and gives h_l^mod. Updates, batch means, applied by the optimizer:

        dW_1 = (h_1 - h_1^mod) x_mod^T
        dW_l = (h_l - h_l^mod) (h_{l-1}^mod)^T        hidden layers
        dW_L = e^mod (h_{L-1}^mod)^T                  the output layer

    with e^mod = softmax(a_L^mod) - onehot(y), the modulated pass's error, as the
    authors' code (GiorgiaD/PEPITA, main_pytorch.py) updates the last layer;
    `last_error='first'` uses pass 1's e instead, as the paper's Algorithm 1 reads.
    A bias gets the same update with input 1: db_l = mean(h_l - h_l^mod).

    No error travels through the layers: each block's update is formed locally. Here
    the outer products are taken by autograd through each block alone (the graph is
    cut at every point, the difference injected at the block's pre-activation), which
    is the same arithmetic as writing them out. Requirements, checked at build time:
    every block holds exactly one parametrised layer whose output has the point's shape
    (an elementwise activation after it, as in the paper's MLPs), the head one layer,
    an output without positions. The reference trains with SGD, momentum 0.9, lr 0.01,
    batch 50, lr x0.1 at epochs 60 and 90; dropout (consistent across the two passes
    there) is not modelled.
    """

    name = "pepita"
    summary = "PEPITA: 2nd forward on x + F e; dW_l = (h_l - h_l^mod) h_{l-1}^mod^T, no backward"

    def __init__(self, model, example_input, *, scale: float = 0.05,
                 last_error: Literal["modulated", "first"] = "modulated"):
        super().__init__(model, example_input)
        self.cut_points()
        layout = self.layout
        if layout.positions:
            raise DflearnError("pepita modulates the input with the error of each sample; it needs an output "
                               f"without positions, not (N, {', '.join(map(str, layout.positions))}, d)")
        if not scale > 0:
            raise DflearnError(f"pepita: scale must be > 0, got {scale}")
        for point in layout.points:
            if len(point.block) != 1:
                raise DflearnError(f"pepita: block '{point.name}' has {len(point.block)} parametrised layers "
                                   f"({', '.join(point.block) or 'none'}); PEPITA updates one layer per block, so "
                                   f"put a FeedbackPoint after each layer's activation")
        if len(layout.head) != 1:
            raise DflearnError(f"pepita: the head must be one layer, not {len(layout.head)} ({', '.join(layout.head)})")
        self._check_shapes(model, example_input)
        self.pre = [p.block[0] for p in layout.points]
        self.last_error = last_error
        n_in = example_input[0].numel()
        bound = scale * math.sqrt(6 / n_in)
        self.register_buffer("F", torch.empty(n_in, layout.num_outputs).uniform_(-bound, bound))

    def _check_shapes(self, model, x):
        modules = dict(model.named_modules())
        shapes = {}
        hooks = [modules[p.block[0]].register_forward_hook(
            lambda m, i, o, name=p.block[0]: shapes.__setitem__(name, tuple(o.shape[1:]))) for p in self.layout.points]
        with probing(model, hooks), torch.no_grad():
            model(x)
        for p in self.layout.points:
            if shapes[p.block[0]] != p.shape:
                raise DflearnError(f"pepita: layer '{p.block[0]}' gives {shapes[p.block[0]]} but point '{p.name}' "
                                   f"sees {p.shape}; PEPITA needs an elementwise activation between them (no pooling)")

    def step(self, model, x, y, optimizer, feedback_optimizer=None, loss_fn=None, sync=None):
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad(), recording(model, self.cuts) as first:
            logits = model(x)
        loss, error = output_error(logits, y, loss_fn)
        e = error * y.numel()  # softmax - onehot per sample (the mean's gradient times N)
        x_mod = x + (e @ self.F.t()).view_as(x)
        modules = dict(model.named_modules())
        pre: dict[int, torch.Tensor] = {}
        hooks = [modules[name].register_forward_hook(lambda m, i, o, k=k: pre.__setitem__(k, o))
                 for k, name in enumerate(self.pre)]
        try:
            with recording(model, self.cuts) as second:
                out_mod = model(x_mod)
        finally:
            for h in hooks:
                h.remove()
        _, error_mod = output_error(out_mod, y, loss_fn)
        tensors, grads = [out_mod], [error_mod if self.last_error == "modulated" else error]
        for k, (h, h_mod) in enumerate(zip(first.outputs, second.outputs)):
            if pre[k].requires_grad:
                tensors.append(pre[k])
                grads.append((h - h_mod.detach()) / len(x))
        if out_mod.requires_grad:
            torch.autograd.backward(tensors, grads)
        optimizer_step(optimizer, sync)
        return loss, logits

    def feedback_cost(self, batch_size):
        """F e: N x (input size) x d_L MACs into the first block, which holds F and receives e.
        The second forward pass and the layers' updates are traced with the step."""
        first = self.layout.points[0].name
        return {first: {"signal": batch_size * self.F.numel(), "feedback_values": self.F.numel(),
                        "received_errors": batch_size * self.layout.num_outputs,
                        "received_weights": self.F.numel()}}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", F={tuple(self.F.shape)}, last_error={self.last_error}"
