from typing import Callable, Literal

import torch
from torch import nn

from ..errors import DflearnError
from ..feedback.layout import forward_weight_product
from ..feedback.operators import ConvLocal, LinearLocal, local_module
from ..feedback.rule import optimizer_step, own_precision
from .base import Pass, Rule, register_rule
from .direct import matrix_pairs

# a local module for a point: factory(point, num_outputs) -> nn.Module mapping h_i to (N, *S, d_L)
LocalFactory = Callable[..., nn.Module]


@register_rule
class LAS(Rule):
    """Local Alignment Support (seed 001, Algorithm 1).

    Every hidden block but the last gets a local module M_i trained to mimic the
    logits: loss_i = 1/2 ||M_i(h_i) - a_L||^2, mean over batch and positions, h_i and
    a_L detached. The signal is the vector-Jacobian product of the *updated* M_i at
    h_i with cotangent e. The last hidden block gets the exact BP signal W_L^T e.

    Local modules: linear (g_i = e M_i, per position on sequence outputs) or, on conv
    maps, conv + global average pooling (seed 001, Figure 3), both with closed-form
    VJPs (tests/test_conv_vjp.py); or any `nn.Module` from `local`, a factory
    `(point, num_outputs) -> module` whose VJP autograd computes at h_i.

    `init`: 'product' (each linear M_i = W_L...W_{i+1} of the initial weights: the
    reference, for MLPs and for the fully connected part of a conv net; conv modules
    keep the default; refused where a linear module's layers above are not all Linear),
    'default' (as nn.Linear / nn.Conv2d), or 'auto' (product wherever the layers above
    are all Linear, default elsewhere).
    """

    name = "las"
    summary = "local alignment support: g_i = e dM_i/dh_i, M_i trained on ||M_i h_i - a_L||^2; last block by BP"

    def __init__(self, model, example_input, *, init: Literal["auto", "product", "default"] = "auto",
                 local: LocalFactory | None = None):
        super().__init__(model, example_input)
        self.cut_points(keep_last=True)
        modules = dict(model.named_modules())
        locals_ = []
        for point in self.layout.points[:-1]:
            if local is not None:
                locals_.append(local(point, self.layout.num_outputs))
                continue
            convs = [modules[n] for n in point.block if isinstance(modules[n], nn.Conv2d)]
            kernel = convs[-1].kernel_size[0] if convs else 3
            locals_.append(local_module(point, self.layout.num_outputs, kernel))
        self.local = nn.ModuleList(locals_)
        if init != "default":  # the product of the initial weights above, for each linear module
            products = forward_weight_product(model, self.layout, strict=False)
            for i, m in enumerate(self.local):
                if not isinstance(m, LinearLocal):
                    continue  # conv modules (and a user's) keep their own init
                if products[i] is None:
                    if init == "product":
                        raise DflearnError(f"{self.name}: init 'product' needs only Linear layers above feedback "
                                           f"point '{self.layout.points[i].name}'; use init=auto or default")
                    continue
                with torch.no_grad():
                    m.weight.copy_(products[i])

    def step(self, model, x, y, optimizer, feedback_optimizer=None, loss_fn=None, sync=None):
        """Algorithm 1 in one forward pass: update M_i first, then signal with the updated M_i."""
        optimizer.zero_grad(set_to_none=True)
        fwd = self.forward_pass(model, x, y, loss_fn)
        self.learn_feedback(model, fwd, feedback_optimizer, sync)
        self.backward(fwd)
        optimizer_step(optimizer, sync)
        return fwd.loss, fwd.logits

    def signals(self, fwd: Pass):
        return [vjp(m, h, fwd.error) for m, h in zip(self.local, fwd.points)] + [None]

    def feedback_loss(self, model, fwd: Pass) -> torch.Tensor:
        return sum(self.local_loss(m(h.detach()), fwd) for m, h in zip(self.local, fwd.points))

    def local_loss(self, y_i: torch.Tensor, fwd: Pass) -> torch.Tensor:
        # gradient h_i^T (y_i - a_L) / N: eq. 21, averaged over the batch (and positions) like e
        return 0.5 * (y_i - fwd.logits).pow(2).sum(-1).mean()

    def local_error(self, y_rows: torch.Tensor, fwd: Pass) -> torch.Tensor:
        """d local_loss / d y_i for rows (N prod(S), d_L) of a linear module's output: (y_i - a_L) / rows."""
        return (y_rows - self.layout.error_rows(fwd.logits).to(y_rows.dtype)) / len(y_rows)

    def learn_feedback(self, model, fwd, feedback_optimizer, sync=None):
        """The feedback optimizer's step on `feedback_loss`; for linear modules the gradient in
        closed form, local_error^T h_i (one matmul, no autograd graph; equal to autograd's,
        tests/test_engine.py), other modules by autograd."""
        if feedback_optimizer is None:
            return
        feedback_optimizer.zero_grad(set_to_none=True)
        others = []
        for point, m, h in zip(self.layout.points, self.local, fwd.points):
            if isinstance(m, LinearLocal):
                W = m.weight.detach()
                with own_precision(W):
                    H = point.rows(h.detach()).to(W.dtype)
                    m.weight.grad = self.local_error(H @ W.t(), fwd).t() @ H
            else:
                others.append(self.local_loss(m(h.detach()), fwd))
        if others:
            sum(others).backward()
        optimizer_step(feedback_optimizer, sync)

    def feedback_pairs(self, model):
        return matrix_pairs(model, self.layout, {i: m.weight.t() for i, m in enumerate(self.local)
                                                 if isinstance(m, LinearLocal)})

    def feedback_cost(self, batch_size):
        """Local module i: its forward, weight gradient and VJP cost the same MACs; its update
        receives e and its target (LAS: the logits, LTAS: one-hot labels)."""
        d, out = self.layout.num_outputs, {}
        for point, m in zip(self.layout.points, self.local):
            macs = batch_size * local_macs(m, point.shape)
            size = sum(p.numel() for p in m.parameters())
            rows = self.layout.rows(batch_size)
            out[point.name] = {"signal": macs, "feedback_update": 2 * macs, "feedback_values": size,
                               "received_errors": 2 * rows * d, "received_weights": size}
        return out


def vjp(module: nn.Module, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """e^T dM/dh at h: in closed form for the built-in local modules, by autograd otherwise."""
    if isinstance(module, (LinearLocal, ConvLocal)):
        return module.vjp(e)
    with torch.enable_grad():
        h = h.detach().requires_grad_()
        (g,) = torch.autograd.grad(module(h), h, e.to(h.dtype))
    return g


def local_macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Per-sample MACs of a local module's forward: the built-in ones say; any other module's
    Linear/Conv layers are counted by running it once on a zero point."""
    if isinstance(module, (LinearLocal, ConvLocal)):
        return module.macs()
    from ..feedback.counting import traced_macs
    return traced_macs(module, shape)
