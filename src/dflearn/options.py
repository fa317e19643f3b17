"""One validator for the options of rules and models, read from their signatures.

An option's type is its annotation: `int`, `float`, `bool`, `str`, a
`Literal['a', 'b']` (strings from a stated set), `X | None`, a tuple or list of
numbers, or a callable (given in the API as an object, on the command line as
`package.module:attribute`). Values from the command line arrive as Python
literals or bare words and are converted here; booleans accept true/false,
1/0, yes/no in any case. A wrong name, type or value is one `DflearnError`
naming the option, the value and what is allowed.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import math
import types
import typing
from typing import Any, Callable

from .errors import DflearnError

TRUE, FALSE = {"true", "1", "yes", "y", "on"}, {"false", "0", "no", "n", "off"}
NONE = {"none", "null"}


def parameters(fn: Callable, skip: int) -> dict[str, inspect.Parameter]:
    """The keyword options of `fn` after its first `skip` positional parameters."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: leave such options unchecked
        return {}


def describe(annotation: Any) -> str:
    """What an annotation allows, in words for a user ('true or false', 'one of a, b')."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return "true or false"
    if annotation in (int, float, str):
        return {int: "an integer", float: "a number", str: "a string"}[annotation]
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or none" if type(None) in args else "")
    if origin in (tuple, list, collections.abc.Sequence):
        return f"a list of {describe(args[0]) if args else 'values'}" + ("s" if args else "")
    if origin is collections.abc.Callable or annotation is Callable:
        return "a callable (package.module:attribute)"
    return getattr(annotation, "__name__", str(annotation))


def convert(value: Any, annotation: Any) -> Any:
    """`value` as the annotation's type; ValueError if it cannot be."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in NONE):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a)
            except ValueError:
                pass
        raise ValueError
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in TRUE | FALSE:
            return value.lower() in TRUE
        raise ValueError
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())  # '1.5', 'abc': ValueError
        raise ValueError
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = float(value.strip())
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        raise ValueError
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if origin in (tuple, list, collections.abc.Sequence):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # widths=512: a list of one
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError
        inner = args[0] if args else Any
        items = [convert(v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is collections.abc.Callable or annotation is Callable:
        if callable(value):
            return value
        if isinstance(value, str) and ":" in value:
            from .plugins import import_attribute
            return import_attribute(value, "option")
        raise ValueError
    return value


def check(owner: str, fn: Callable, options: dict, skip: int) -> dict:
    """`options` checked against the keyword parameters of `fn` (after `skip` positional
    ones) and converted to their annotated types. `owner` names it in errors ("rule 'dfa'")."""
    known, types_ = parameters(fn, skip), hints(fn)
    out = {}
    for key, value in options.items():
        if key not in known:
            listed = ", ".join(known) or "none"
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise DflearnError(f"{owner} has no option '{key}'{hint} (its options: {listed})")
        annotation = types_.get(key, inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty and known[key].default not in (None, inspect.Parameter.empty):
            annotation = type(known[key].default)  # unannotated: the default's type
        try:
            out[key] = convert(value, annotation)
        except (ValueError, TypeError):
            raise DflearnError(f"{owner}: option {key}={value!r} is not {describe(annotation)}") from None
    return out
