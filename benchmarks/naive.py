"""Straightforward ("before") versions of what dflearn optimises, kept out of the
library: the benchmark times them against the library, and the tests check
that both give the same parameter updates.

- `hook_dfa_step`: DFA as the public code does it (TinyDFA style): a full BP
  backward whose gradient at every feedback point a hook replaces by B_i e, so
  autograd still computes every input gradient and throws it away.
- `PerBlockDFA`: one matmul per block instead of one stacked matmul.
- `DenseSparseDFA`: sparse DFA as a dense (n, d_L) matmul instead of a gather.
- `two_pass_step`: LAS/LTAS as the authors' code: a first forward pass to update
  the local modules, then a second forward pass for the network's update.
- `autograd_error`: the output error e by a second autograd pass through the
  cross-entropy (a loss the engine does not recognise as its default) instead of
  the default loss's closed form.
- `foreach_adam`: PyTorch's default Adam instead of the fused one.
- `SampleLoader`: a per-sample Dataset + DataLoader with default collation,
  normalising each image on its own (torchvision style).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dflearn.feedback import FeedbackPoint
from dflearn.feedback.step import train_step
from dflearn.rules.dfa import DFA
from dflearn.rules.sdfa import SparseDFA


def hook_dfa_step(model, rule: DFA, x, y, optimizer, loss_fn=F.cross_entropy):
    """One DFA step through BP's full backward with gradient-replacing hooks."""
    optimizer.zero_grad(set_to_none=True)
    points = [m for m in model.modules() if isinstance(m, FeedbackPoint)]
    signals: list[torch.Tensor] = []
    order = iter(range(len(points)))

    def at_point(module, inputs, output):
        i = next(order)
        if rule.cuts[i] and output.requires_grad:
            output.register_hook(lambda grad: signals[i])
        return output

    handles = [m.register_forward_hook(at_point) for m in points]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()

    def at_output(e):  # runs first in the backward: project the error for all points
        signals.extend(rule.on_cut_points(rule.feedback.project(e)))

    logits.register_hook(at_output)
    loss = loss_fn(logits, y)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def _split(flat: torch.Tensor, layout, points) -> list[torch.Tensor]:
    """(N, sum n_i) -> per-point tensors of the points' own shapes (outputs without positions)."""
    sizes = [layout.points[i].size for i in points]
    return [g.view(len(flat), *layout.points[i].shape) for i, g in zip(points, flat.split(sizes, dim=1))]


class StackedDFA(DFA):
    """DFA with one stacked matmul e B^T for all blocks, then split (same B, same maths;
    the library projects per block, which measured faster on both MLPs)."""

    def signals(self, fwd):
        fb = self.feedback
        return self.on_cut_points(_split(fwd.error @ fb.B.detach().t(), fb.layout, fb.points))


class DenseSparseDFA(SparseDFA):
    """Sparse DFA through its dense matrix: O(d_L) per unit instead of O(k).
    The dense copy is made at the first step (load any saved state before)."""

    _dense = None

    def signals(self, fwd):
        if self._dense is None:
            self._dense = self.feedback.dense()
        fb = self.feedback
        return self.on_cut_points(_split(fwd.error @ self._dense.t(), fb.layout, fb.points))


def two_pass_step(model, rule, x, y, optimizer, feedback_optimizer, loss_fn=F.cross_entropy):
    """LAS/LTAS in the reference code's order, with two forward passes: update
    the local modules on a first pass, then forward again and signal with them."""
    first = rule.forward_pass(model, x, y, loss_fn)
    rule.learn_feedback(model, first, feedback_optimizer)
    return train_step(model, rule, x, y, optimizer, None, loss_fn)  # no feedback optimizer: no second update


def autograd_error(logits, target):
    """The default loss under another name: the engine then takes e from autograd."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def foreach_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """PyTorch's default (multi-tensor) Adam, as the public implementations use."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


class SampleSet(torch.utils.data.Dataset):
    """One normalised float image per __getitem__, as torchvision's ToTensor + Normalize."""

    def __init__(self, data):
        self.x, self.y = data.x_train, data.y_train
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return (self.x[i].float() / 255 - self.mean) / self.std, self.y[i]


def sample_loader(data, batch_size: int, generator: torch.Generator):
    return torch.utils.data.DataLoader(SampleSet(data), batch_size=batch_size, shuffle=True, generator=generator)


def indexed_projection(op, e):
    """Sparse projection by advanced indexing, e[:, index] (dflearn's first version)."""
    return (e[:, op.index] * op.value).sum(-1)
