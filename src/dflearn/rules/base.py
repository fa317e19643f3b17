"""The common base of every learning rule, and the registry that names them.

A rule is an `nn.Module` built from a model and an example input. It never
holds the model; it holds only its own feedback state (matrices, local modules),
created here, eagerly, so that `state_dict` round-trips it. It answers three
questions for `train_step`:

- `cuts[i]`: is feedback point i cut from the layers above (direct feedback)
  or left attached (exact BP reaches it)?
- `signals(fwd)`: the signal g_i injected at each cut point (None: nothing).
- `feedback_loss(fwd)`: for rules that learn their feedback, a loss whose
  gradient with respect to the rule's parameters is the feedback update.
- `forward_context(model)`: entered around the model's forward pass; rules whose
  backward differs inside the blocks (FA and the sequential family) swap their
  layers in here. Default: nothing.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import ClassVar

import torch
from torch import nn

from ..errors import DflearnError
from ..feedback.layout import Layout, probe
from ..feedback.step import Pass


class Rule(nn.Module):
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line of maths, shown by `dflearn rules`
    learns_feedback: ClassVar[bool] = False
    update_feedback_first: ClassVar[bool] = False  # LAS/LTAS: update M_i, then signal with it
    needs_points: ClassVar[bool] = True  # False for rules that work on any model as it is (bp, fa, ...)
    # optimizer settings for learned feedback where the reference code differs from the network's
    feedback_defaults: ClassVar[dict] = {}

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        super().__init__()
        self.layout: Layout = probe(model, example_input)
        if self.needs_points and not self.layout.points:
            raise DflearnError(f"rule '{self.name}': the model has no feedback points; insert "
                               f"dflearn.FeedbackPoint() after each block whose output should get a signal")
        self.cuts: list[bool] = [True] * len(self.layout.points)

    @property
    def last(self) -> int:
        return len(self.layout.points) - 1

    def signals(self, fwd: Pass) -> list[torch.Tensor | None]:
        raise NotImplementedError

    def on_cut_points(self, values) -> list[torch.Tensor | None]:
        """Place one value per cut point (in order) into a per-point list, None elsewhere."""
        it = iter(values)
        return [next(it) if cut else None for cut in self.cuts]

    def feedback_loss(self, fwd: Pass) -> torch.Tensor:
        raise NotImplementedError(f"rule '{self.name}' has no learned feedback")

    def forward_context(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Context around `model(x)` in a training step (and in the alignment measure)."""
        return contextlib.nullcontext()

    def extra_repr(self) -> str:
        return f"points={[p.name for p in self.layout.points]}, outputs={self.layout.num_outputs}"


RULES: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a Rule subclass available under `cls.name`."""
    RULES[cls.name] = cls
    return cls


def rule_options(cls: type[Rule]) -> dict[str, inspect.Parameter]:
    """The keyword options a rule accepts beyond (model, example_input)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[3:]
    return {p.name: p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def make_rule(name: str, model: nn.Module, example_input: torch.Tensor, **options) -> Rule:
    """Build a registered rule by name, checking its options first."""
    from ..plugins import find_rule
    find_rule(name)  # module:Class or an installed plugin registers itself here
    if name not in RULES:
        raise DflearnError(f"unknown rule '{name}'; choose one of: {', '.join(sorted(RULES))}")
    cls = RULES[name]
    known = rule_options(cls)
    for key in options:
        if key not in known:
            listed = ", ".join(known) or "none"
            raise DflearnError(f"rule '{name}' has no option '{key}' (its options: {listed})")
    return cls(model, example_input, **options)
