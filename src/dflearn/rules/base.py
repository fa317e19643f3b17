"""The registry that names the rules, and the checking of their options.

The contract a rule fulfils (`Rule`, its step and its descriptions) lives in the
engine, `dflearn.feedback.rule`; a rule's options are its `__init__`'s keyword
parameters, checked and converted by `dflearn.options` from their annotations.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .. import options as _options
from ..errors import DflearnError
from ..feedback.rule import Pass, Rule  # noqa: F401  (re-exported: rules subclass Rule from here)

RULES: dict[str, type[Rule]] = {}


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a Rule subclass available under `cls.name`."""
    RULES[cls.name] = cls
    return cls


def rule_options(cls: type[Rule]) -> dict[str, inspect.Parameter]:
    """The keyword options a rule accepts beyond (model, example_input)."""
    return _options.parameters(cls.__init__, 3)


def rule_class(name: str) -> type[Rule]:
    """The registered rule of that name (a `module:Class` or an installed plugin registers itself)."""
    from ..plugins import find_rule
    find_rule(name)
    if name not in RULES:
        raise DflearnError(f"unknown rule '{name}'; choose one of: {', '.join(sorted(RULES))}")
    return RULES[name]


def check_rule_options(name: str, options: dict) -> dict:
    """The options checked against the rule's signature and converted to their types."""
    return _options.check(f"rule '{name}'", rule_class(name).__init__, options, 3)


def make_rule(name: str, model: nn.Module, example_input: torch.Tensor, **options) -> Rule:
    """Build a registered rule by name, checking its options first."""
    cls = rule_class(name)
    checked = check_rule_options(name, options)
    try:
        return cls(model, example_input, **checked)
    except ValueError as exc:  # a value the rule itself rejects
        raise DflearnError(f"rule '{name}': {str(exc).splitlines()[0]}") from None
