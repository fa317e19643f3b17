"""What a model looks like to a rule: its feedback points, found by one probe pass.

Shapes. The model's output is (N, *S, d_L): the last dimension holds the outputs
(classes, or the vocabulary of a language model), S the positions (tokens; pixels
of a dense prediction), empty for a classifier. A feedback point's per-sample
shape is P. Direct rules read a point in one of two ways:

- S empty: the point's whole tensor is one feature vector of prod(P) values per
  sample (a conv map (C, H, W), a ViT's tokens (T, D) under a pooled classifier):
  B_i is (prod(P), d_L), as for the classic DFA on conv nets;
- P starts with S: per position, with prod(P[len(S):]) features at each; one B_i
  is shared over positions, g[n, s] = e[n, s] B_i^T (Launay et al. 2020).

Any other point (positions the output lacks, or other ones) has no defined direct
signal; `Layout.check_direct` refuses it in one line.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import DflearnError
from .point import FeedbackPoint


@dataclass(frozen=True)
class Point:
    """One feedback point: its module name, the per-sample shape of its tensor,
    and the parametrised modules run between the previous point and this one
    (the block), the last of which gives the block's pre-activation."""

    name: str
    shape: tuple[int, ...]
    block: tuple[str, ...]
    positions: tuple[int, ...] = ()  # the output's positions S when the point has them (P starts with S)

    @property
    def size(self) -> int:
        """Values per sample: prod(P)."""
        return math.prod(self.shape)

    @property
    def features(self) -> int:
        """Values per position: prod(P[len(S):]) (the whole point when the output has no positions)."""
        return math.prod(self.shape[len(self.positions):])

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """A point tensor (N, *P) as a matrix (N * prod(S), features): one row per sample and position."""
        return t.reshape(-1, self.features)

    @property
    def preactivation(self) -> str | None:
        return self.block[-1] if self.block else None


@dataclass(frozen=True)
class Layout:
    """Feedback points in execution order, the output size d_L, and the modules
    with parameters after the last point (the head, always trained by BP)."""

    points: tuple[Point, ...]
    num_outputs: int
    head: tuple[str, ...]
    positions: tuple[int, ...] = ()  # S of the output (N, *S, d_L)

    @property
    def sizes(self) -> list[int]:
        return [p.size for p in self.points]

    def rows(self, batch_size: int) -> int:
        """Rows of `error_rows` for a batch: one per sample and position, N prod(S)."""
        return batch_size * math.prod(self.positions)

    def error_rows(self, e: torch.Tensor) -> torch.Tensor:
        """The output error (N, *S, d_L) as (N * prod(S), d_L), rows matching `Point.rows`."""
        return e.reshape(-1, self.num_outputs)

    def check_direct(self, rule: str) -> None:
        """Refuse, in one line, points a direct signal cannot be defined for."""
        if not self.points:
            raise DflearnError(f"rule '{rule}': the model has no feedback points; insert "
                               f"dflearn.FeedbackPoint() after each block whose output should get a signal")
        for p in self.points:
            if p.positions != self.positions:
                raise DflearnError(
                    f"rule '{rule}': feedback point '{p.name}' has shape {p.shape}, which does not start with the "
                    f"output's positions {self.positions}; place points where the tensor is (N, "
                    f"{', '.join(map(str, self.positions))}, features), or pool the output")

    def block_of(self, module: str) -> str:
        """The block (a point's name, or 'head') whose parametrised modules include `module`."""
        for p in self.points:
            if module in p.block:
                return p.name
        if module in self.head:
            return "head"
        raise DflearnError(f"module '{module}' belongs to no block of this model's layout")


@contextmanager
def probing(model: nn.Module, hooks: list) -> Iterator[None]:
    """A look at the model that changes nothing: eval mode within (no BN statistics update, no
    dropout draw), then the mode restored and the given hook handles removed."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


def _has_own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


@torch.no_grad()
def probe(model: nn.Module, example_input: torch.Tensor) -> Layout:
    """Run `model` once on `example_input` (a batch, e.g. of one) and record, in
    execution order, every FeedbackPoint and every module with parameters."""
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
    hooks = []

    def record(module, inputs, output):
        is_point = isinstance(module, FeedbackPoint)
        if is_point and not isinstance(output, torch.Tensor):
            raise DflearnError(f"feedback point '{names[module]}' receives a {type(output).__name__}, "
                               f"not a tensor; place FeedbackPoint where a single tensor flows")
        order.append((names[module], module, tuple(output.shape[1:]) if is_point else None))

    for m in model.modules():
        if isinstance(m, FeedbackPoint) or _has_own_params(m):
            # prepend: a marked module (see mark.py) must be recorded before the point its own hook feeds
            hooks.append(m.register_forward_hook(record, prepend=True))
    try:
        with probing(model, hooks):
            out = model(example_input)
    except RuntimeError as exc:
        raise DflearnError(f"the model cannot run on input of shape {tuple(example_input.shape[1:])}: "
                           f"{str(exc).splitlines()[0]}; check that model and data set match") from None

    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise DflearnError("the model must return logits of shape (batch, outputs) or (batch, *positions, outputs)")
    positions = tuple(out.shape[1:-1])
    points, block, seen = [], [], set()
    for name, module, shape in order:
        if shape is None:
            block.append(name)
            continue
        if name in seen:
            raise DflearnError(f"feedback point '{name}' runs twice in one forward pass; give each use its own FeedbackPoint")
        seen.add(name)
        points.append(Point(name, shape, tuple(block), positions if shape[:len(positions)] == positions else ()))
        block = []
    declared = [n for n, m in model.named_modules() if isinstance(m, FeedbackPoint)]
    missing = [n for n in declared if n not in seen]
    if missing:
        raise DflearnError(f"feedback point '{missing[0]}' is never reached in the forward pass; remove it or route data through it")
    return Layout(tuple(points), int(out.shape[-1]), tuple(block), positions)


def forward_weight_product(model: nn.Module, layout: Layout, strict: bool = True) -> list[torch.Tensor | None]:
    """For each point i, (W_L ... W_{i+1}) of the Linear layers above it (biases and
    activations ignored), shape (d_L, n_i): the paper's 'product' feedback init.
    Where the layers above are not all Linear (or do not chain), a one-line error;
    with `strict=False`, None for that point instead."""
    modules = dict(model.named_modules())
    chain = [[modules[n] for n in p.block] for p in layout.points[1:]] + [[modules[n] for n in layout.head]]
    products = []
    for i, point in enumerate(layout.points):
        above = [m for blk in chain[i:] for m in blk]
        problem = None
        if not above or not all(isinstance(m, nn.Linear) for m in above):
            problem = (f"init 'product' needs only Linear layers above feedback point '{point.name}'; "
                       f"use the default init for this model")
        else:
            p = above[0].weight.detach()
            for m in above[1:]:
                p = m.weight.detach() @ p if m.weight.shape[1] == p.shape[0] else None
                if p is None:
                    break
            if p is None or p.shape[1] != point.features:
                problem = (f"init 'product': the Linear layers above '{point.name}' do not chain to its "
                           f"size {point.features}")
        if problem and strict:
            raise DflearnError(problem)
        products.append(None if problem else p.clone())
    return products
