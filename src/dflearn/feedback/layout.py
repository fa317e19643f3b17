"""What a model looks like to a rule: its feedback points, found by one probe pass."""
from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

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

    @property
    def sizes(self) -> list[int]:
        return [p.size for p in self.points]


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
    was_training = model.training
    model.eval()  # BN must not update its running statistics on a probe
    try:
        out = model(example_input)
    except RuntimeError as exc:
        raise DflearnError(f"the model cannot run on input of shape {tuple(example_input.shape[1:])}: "
                           f"{str(exc).splitlines()[0]}; check that model and data set match") from None
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()

    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise DflearnError("the model must return logits of shape (batch, outputs)")
    points, block, seen = [], [], set()
    for name, module, shape in order:
        if shape is None:
            block.append(name)
            continue
        if name in seen:
            raise DflearnError(f"feedback point '{name}' runs twice in one forward pass; give each use its own FeedbackPoint")
        seen.add(name)
        points.append(Point(name, shape, tuple(block)))
        block = []
    declared = [n for n, m in model.named_modules() if isinstance(m, FeedbackPoint)]
    missing = [n for n in declared if n not in seen]
    if missing:
        raise DflearnError(f"feedback point '{missing[0]}' is never reached in the forward pass; remove it or route data through it")
    return Layout(tuple(points), int(out.shape[1]), tuple(block))


def forward_weight_product(model: nn.Module, layout: Layout) -> list[torch.Tensor]:
    """For each point i, (W_L ... W_{i+1}) of the Linear layers above it (biases and
    activations ignored), shape (d_L, n_i): the paper's 'product' feedback init."""
    modules = dict(model.named_modules())
    chain = [[modules[n] for n in p.block] for p in layout.points[1:]] + [[modules[n] for n in layout.head]]
    products = []
    for i, point in enumerate(layout.points):
        above = [m for blk in chain[i:] for m in blk]
        if not above or not all(isinstance(m, nn.Linear) for m in above):
            raise DflearnError(f"init 'product' needs only Linear layers above feedback point '{point.name}'; "
                               f"use the default init for this model")
        p = above[0].weight.detach()
        for m in above[1:]:
            p = m.weight.detach() @ p
        if p.shape[1] != point.size:
            raise DflearnError(f"init 'product': the Linear layers above '{point.name}' do not chain to its size {point.size}")
        products.append(p.clone())
    return products
