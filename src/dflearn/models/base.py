"""The model registry: a name -> a builder `fn(input_shape, num_classes, **options)`."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from .. import options as _options
from ..errors import DflearnError

ModelBuilder = Callable[..., nn.Module]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str, **preset):
    """Decorator: register a builder under `name`; `preset` fixes some of its options
    (so one builder can serve several named paper nets)."""
    def wrap(fn: ModelBuilder) -> ModelBuilder:
        MODELS[name] = (lambda *a, **kw: fn(*a, **{**preset, **kw})) if preset else fn
        MODELS[name].__doc__ = fn.__doc__
        MODELS[name].builder = fn
        MODELS[name].preset = preset
        return fn
    return wrap


def model_options(name: str) -> dict[str, inspect.Parameter]:
    return _options.parameters(MODELS[name].builder, 2)


def check_model_options(name: str, options: dict) -> dict:
    """The options checked against the builder's signature and converted to their types."""
    from ..plugins import find_model
    find_model(name)
    if name not in MODELS:
        raise DflearnError(f"unknown model '{name}'; choose one of: {', '.join(sorted(MODELS))}")
    return _options.check(f"model '{name}'", MODELS[name].builder, options, 2)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options) -> nn.Module:
    """Build a registered model for data of `input_shape` (C, H, W) and `num_classes`."""
    from ..plugins import find_model
    find_model(name)  # module:function or an installed plugin registers itself here
    if name not in MODELS:
        raise DflearnError(f"unknown model '{name}'; choose one of: {', '.join(sorted(MODELS))}")
    options = _options.check(f"model '{name}'", MODELS[name].builder, options, 2)
    try:
        return MODELS[name](tuple(input_shape), num_classes, **options)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DflearnError(f"model '{name}' cannot be built for input {tuple(input_shape)} with options {options}: "
                           f"{str(exc).splitlines()[0]}; see 'dflearn models'") from None
