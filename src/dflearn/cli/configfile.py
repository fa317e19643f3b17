"""`--config FILE` and `--print-config` for the commands that build runs (train, compare, reproduce).

A config file is YAML or JSON (JSON is YAML, so one loader reads both); a run directory, or its
`config.json`, is a config file too, so a finished run can start a new one. The file's keys are the
command's long options with '-' or '_' (`batch_size: 32` is `--batch-size 32`); `rule_options` and
`model_options` (the names in config.json) are mappings for `-o` and `-m`; for `compare`, `rule` and
`rule` (as in a run's config.json) stands for a one-element `rules`, and `seed` is one seed.

How: the file's values become the parser's defaults and the command line is parsed again, so a flag
always wins over the file (and `-o k=v` over the file's `rule_options` key by key). Chosen over
jsonargparse/omegaconf: the Config dataclass already is the schema and `Config.from_dict` already
checks it, argparse already converts and checks each value, and PyYAML is the only new dependency;
a second schema library would duplicate that validation.
"""
from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from ..errors import DflearnError

OPTION_MAPS = {"rule_options": "rule_opt", "model_options": "model_opt"}
SKIP = {"help", "config", "print_config"}
RECORDS = {"versions"}  # what a run's config.json records but no option sets: ignored when read


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("config file")
    g.add_argument("--config", metavar="FILE",
                   help="YAML or JSON file (or a run directory / its config.json) of this command's options; "
                        "flags given beside it override it")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (a file --config accepts) and exit")
    p.set_defaults(_parser=p)


def read(path: str) -> dict:
    """The mapping in a YAML/JSON file or a run directory's config.json, or a one-line DflearnError."""
    import yaml

    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise DflearnError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) if p.suffix != ".json" else json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DflearnError(f"config file {p} is not valid YAML/JSON: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DflearnError(f"config file {p} must hold a mapping of option names to values")
    return data


def _keys(parser: argparse.ArgumentParser) -> dict[str, str]:
    """File key -> argparse dest: each long option with '_' (and '-'), and each dest."""
    keys = {}
    for action in parser._actions:  # argparse has no public list of a parser's actions
        if action.dest in SKIP or action.dest == argparse.SUPPRESS:
            continue
        for s in action.option_strings:
            if s.startswith("--"):
                keys[s[2:].replace("-", "_")] = action.dest
                keys[s[2:]] = action.dest
        if not action.option_strings:  # positional, e.g. reproduce NAME
            keys[action.dest] = action.dest
    for key, dest in OPTION_MAPS.items():
        if dest in keys.values():
            keys[key] = dest
    if "rules" in keys and "rule" not in keys:
        keys["rule"] = "rules"
    return keys


def _as_default(action: argparse.Action, key: str, value):
    """A file value in the form the parser's default takes."""
    if action.dest in OPTION_MAPS.values():
        if isinstance(value, list):  # ['k=1', ...] as on the command line
            return [str(v) for v in value]
        if not isinstance(value, dict):
            raise DflearnError(f"config key '{key}' must be a mapping, e.g. {{k: 1}}")
        return [f"{k}={v!r}" for k, v in value.items()]
    if isinstance(value, list) and action.type is None and action.nargs is None and action.dest.endswith("s"):
        return ",".join(str(v) for v in value)  # comma-separated lists (rules, seeds, lrs...)
    if action.dest in ("rules", "seeds") and value is not None and not isinstance(value, list):
        return str(value)
    return value


def file_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    """The file's values as {dest: default}; an unknown key is refused with the nearest valid one."""
    data = read(path)
    keys = _keys(parser)
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for key, value in data.items():
        if key in RECORDS:
            continue
        if key not in keys:
            near = difflib.get_close_matches(str(key), [k for k in keys if "-" not in k], n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(sorted(k for k in keys if '-' not in k))}"
            raise DflearnError(f"unknown key '{key}' in config file {path}{hint}")
        dest = keys[key]
        out[dest] = _typed(actions[dest], key, _as_default(actions[dest], key, value), path)
    return out


def _typed(action: argparse.Action, key: str, value, path: str):
    """A file value the option's type accepts (argparse would otherwise stop with its usage text)."""
    kind = action.type
    if kind in (int, float) and value is not None and not isinstance(value, bool):
        try:
            converted = kind(value)
        except (TypeError, ValueError):
            raise DflearnError(f"config file {path}: '{key}' must be a{'n integer' if kind is int else ' number'}, "
                               f"got {value!r}") from None
        if kind is int and isinstance(value, float) and converted != value:
            raise DflearnError(f"config file {path}: '{key}' must be an integer, got {value!r}")
        return converted
    if action.choices is not None and value is not None and not isinstance(value, list) and value not in action.choices:
        raise DflearnError(f"config file {path}: '{key}' must be one of {', '.join(map(str, action.choices))}, "
                           f"got {value!r}")
    return value


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; with --config, parse again with the file's values as defaults (flags win)."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if path:
        sub = args._parser
        sub.set_defaults(**file_defaults(sub, path))
        args = parser.parse_args(argv)
    return args


def options(args: argparse.Namespace) -> dict:
    """The command's options as a file --config accepts (underscore keys, option mappings as dicts)."""
    from .train import parse_options

    out = {}
    for action in args._parser._actions:
        dest = action.dest
        longs = [s for s in action.option_strings if s.startswith("--")]
        if dest in SKIP or not hasattr(args, dest) or not (longs or not action.option_strings):
            continue
        key = longs[0][2:].replace("-", "_") if longs else dest
        value = getattr(args, dest)
        if dest in OPTION_MAPS.values():
            key = next(k for k, d in OPTION_MAPS.items() if d == dest)
            value = parse_options(value, key.split("_")[0])
        out[key] = value
    return out


def print_config(args: argparse.Namespace) -> int:
    """--print-config: train prints what config.json will hold; compare and reproduce their options."""
    import yaml

    resolved = getattr(args, "resolved_config", None)
    data = resolved(args) if resolved else options(args)

    class Dumper(yaml.SafeDumper):
        """One key per line (the top level always in block style, even when every value is a scalar);
        a mapping or list of scalars inside it on one line, as `rule_options: {init: product}`."""

    def flat(value) -> bool:
        return not any(isinstance(v, (dict, list, tuple)) for v in (value.values() if isinstance(value, dict) else value))

    Dumper.add_representer(dict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(),
                                                                  flow_style=flat(v) and v is not data))
    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=flat(v)))
    print(yaml.dump(data, Dumper=Dumper, sort_keys=False), end="")
    return 0
