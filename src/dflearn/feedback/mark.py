"""Feedback points in a model you did not write for dflearn.

    dflearn.mark(model, ["blocks.0", "blocks.1", "blocks.2"])
    print(dflearn.feedback_report(model, example_batch))

Each named submodule's output becomes a feedback point: a rule cuts the graph
there and injects its signal, and autograd does exact BP inside each block (the
modules run between two points). Marking adds no parameters or buffers, so the
model's state_dict keys stay the same.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import DflearnError
from .layout import probe
from .point import FeedbackPoint

CHILD = "feedback_point"  # the marker's name under the marked module


def mark(model: nn.Module, names: list[str]) -> nn.Module:
    """Make the output of each named submodule a feedback point; returns `model`.

    A Sequential gets the FeedbackPoint as its last layer; any other module gets
    it as a child plus a forward hook that routes the module's output through it.
    """
    modules = dict(model.named_modules())
    for name in names:
        if name == "":
            raise DflearnError("the whole model cannot be a feedback point (its output is the logits); "
                               "name the blocks inside it")
        if name not in modules:
            near = [n for n in modules if n and n.count(".") == name.count(".")][:8]
            raise DflearnError(f"the model has no submodule '{name}' (some that exist: {', '.join(near)})")
        target = modules[name]
        if isinstance(target, FeedbackPoint) or hasattr(target, CHILD):
            raise DflearnError(f"'{name}' is already a feedback point or marked; mark each block once")
        if isinstance(target, (nn.ModuleList, nn.ModuleDict)):
            raise DflearnError(f"'{name}' is a {type(target).__name__}, which has no output; mark its members")
        point = FeedbackPoint()
        target.add_module(CHILD, point)
        if not isinstance(target, nn.Sequential):  # a Sequential runs its new last child itself
            target.register_forward_hook(_through(point))
    return model


def _through(point: FeedbackPoint):
    def hook(module, inputs, output):
        return point(output)
    return hook


def feedback_report(model: nn.Module, example_input: torch.Tensor) -> str:
    """A table of the model's feedback points (in execution order): each point's
    tensor shape per sample, its size n_i, the dense feedback matrix B_i a direct
    rule gives it (n_i x d_L), and the parametrised modules of its block.
    Raises DflearnError for a point that gets no tensor or is never reached."""
    layout = probe(model, example_input)
    if not layout.points:
        raise DflearnError("the model has no feedback points; use dflearn.mark(model, names) or insert "
                           "dflearn.FeedbackPoint() modules")
    d = layout.num_outputs
    rows = [("feedback point", "shape", "size", "feedback B_i", "block")]
    for p in layout.points:
        rows.append((p.name, "x".join(map(str, p.shape)), str(p.size), f"{p.size}x{d}", ", ".join(p.block) or "-"))
    rows.append(("(head, exact BP)", "", "", "", ", ".join(layout.head) or "-"))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    total = sum(p.size for p in layout.points) * d
    lines.append(f"{len(layout.points)} feedback points, {d} outputs; dense direct feedback: {total:,} numbers")
    return "\n".join(lines)
