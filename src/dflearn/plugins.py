"""The user's own models and rules, by name, wherever dflearn takes a name.

Three ways a name that is not built in resolves (`register_model` / `register_rule` in the user's
own Python stay the fourth):

- `package.module:attribute` — imported on first use and registered under that very string, so
  `config.json` records it and every process that reads the config (`--nproc` workers, `compare
  --jobs` workers, a rerun from config.json) imports the same module. The current directory is on
  the import path, as for `python -m`, so `--model mynets:wide` finds ./mynets.py.
- an entry point of an installed distribution, group `dflearn.models` (a builder
  `fn(input_shape, num_classes, **options) -> nn.Module`) or `dflearn.rules` (a `Rule` subclass),
  registered under the entry point's name: `pip install dflearn-mynets` and `--model wide` works.
- an object: `fit(model=nn.Module(...), rule=MyRule or MyRule(model, x))`, see `split_objects`.

`find_model(name)` / `find_rule(name)` are the hooks the registries call on a miss: they register
what the name resolves to, or leave the registry as it was (it then reports the unknown name).
"""
from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from torch import nn

from .errors import DflearnError

GROUPS = {"model": "dflearn.models", "rule": "dflearn.rules"}
_loaded: set[str] = set()


def import_attribute(name: str, what: str):
    """'pkg.mod:attr' -> the attribute, or a one-line DflearnError."""
    module_name, _, attr = name.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: ./mynets.py is importable
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise DflearnError(f"{what} '{name}': cannot import module '{module_name}' ({exc}); "
                           f"is it on PYTHONPATH or in the current directory?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DflearnError(f"{what} '{name}': module '{module_name}' has no '{attr}'")
        obj = getattr(obj, part)
    return obj


def load_entry_points(kind: str) -> None:
    """Register every installed plugin of `kind` ('model' or 'rule') not registered yet (once)."""
    if kind in _loaded:
        return
    _loaded.add(kind)
    registry = _registry(kind)
    for ep in entry_points(group=GROUPS[kind]):
        if ep.name not in registry:
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not stop dflearn; say which one
                print(f"dflearn: warning: plugin {ep.name} ({ep.value}) failed to load: "
                      f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
                continue
            _register(kind, ep.name, obj)


def _registry(kind: str) -> dict:
    if kind == "model":
        from .models.base import MODELS
        return MODELS
    from .rules.base import RULES
    return RULES


def _register(kind: str, name: str, obj) -> None:
    if kind == "model":
        from .models.base import register_model
        if not callable(obj):
            raise DflearnError(f"model '{name}' is not a builder fn(input_shape, num_classes, **options)")
        register_model(name)(obj)
    else:
        from .rules.base import RULES, Rule
        if not (isinstance(obj, type) and issubclass(obj, Rule)):
            raise DflearnError(f"rule '{name}' is not a subclass of dflearn.Rule")
        RULES[name] = obj


def _find(kind: str, name) -> None:
    if not isinstance(name, str) or name in _registry(kind):
        return
    if ":" in name:
        _register(kind, name, import_attribute(name, kind))
    else:
        load_entry_points(kind)


def find_model(name) -> None:
    """Hook for build_model: register `name` if it is module:function or an installed plugin."""
    _find("model", name)


def find_rule(name) -> None:
    """Hook for make_rule and Config: register `name` if it is module:Class or an installed plugin."""
    _find("rule", name)


def object_name(obj) -> str:
    """'package.module:Qualname' of a class or function (or an instance's class)."""
    cls = obj if isinstance(obj, type) or callable(obj) and not isinstance(obj, nn.Module) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def split_objects(config):
    """A Config whose `model` is an nn.Module or whose `rule` is a Rule (class or instance) ->
    (config with names in their place, model or None, rule instance or None).

    A Rule class is registered under its own `name` when that is free (else module:Class) and is
    then built like any rule. An instance is used as it is; config.json records its class as
    'module:Class' (a rerun from that file must be able to build it from there, or be given the
    object again)."""
    import dataclasses

    from .rules.base import RULES, Rule

    model = rule = None
    changes = {}
    if isinstance(config.model, nn.Module):
        model, changes["model"] = config.model, object_name(config.model)
    if isinstance(config.rule, type) and issubclass(config.rule, Rule):
        cls = config.rule
        key = cls.name if cls.name and RULES.get(cls.name, cls) is cls else object_name(cls)
        RULES[key] = cls
        changes["rule"] = key
    elif isinstance(config.rule, Rule):
        rule = config.rule
        RULES.setdefault(object_name(rule), type(rule))
        changes["rule"] = object_name(rule)
    for key in ("model", "rule"):
        value = changes.get(key, getattr(config, key))
        if not isinstance(value, str):
            raise DflearnError(f"{key} must be a name, a 'module:attribute' or "
                               f"{'an nn.Module' if key == 'model' else 'a Rule class or instance'}, "
                               f"not {type(value).__name__}")
    return dataclasses.replace(config, **changes), model, rule
