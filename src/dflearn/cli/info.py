"""`dflearn rules`, `dflearn models`, `dflearn datasets`: what is available."""
from __future__ import annotations

import inspect


def _options(fn, params, preset: dict | None = None) -> str:
    """'k (an integer) = 1, init (one of kaiming, product) = 'kaiming'': each option with what it
    allows and its default (a preset's value where the entry fixes it)."""
    from ..options import describe, hints

    preset, types = preset or {}, hints(fn)
    shown = []
    for n, p in params.items():
        text = f"{n} ({describe(types[n])})" if n in types else n
        if n in preset:
            text += f" = {preset[n]!r} (preset)"
        elif p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        shown.append(text)
    return ", ".join(shown)


def list_rules(args) -> None:
    from ..plugins import load_entry_points
    from ..rules import RULES, rule_options

    load_entry_points("rule")  # installed plugins are listed too
    width = max(map(len, RULES))
    for name in sorted(RULES):
        cls = RULES[name]
        print(f"{name:<{width}}  {cls.summary}")
        opts = rule_options(cls)
        if opts:
            print(f"{'':<{width}}  options (-o KEY=VALUE): {_options(cls.__init__, opts)}")


def list_models(args) -> None:
    from ..models import MODELS, model_options
    from ..plugins import load_entry_points

    load_entry_points("model")
    width = max(map(len, MODELS))
    for name in sorted(MODELS):
        doc = ((MODELS[name].__doc__ or "").strip().splitlines() or ["(no description)"])[0]
        preset = MODELS[name].preset
        print(f"{name:<{width}}  {doc}" + (f" [preset: {preset}]" if preset else ""))
        print(f"{'':<{width}}  options (-m KEY=VALUE): {_options(MODELS[name].builder, model_options(name), preset)}")


def list_datasets(args) -> None:
    from ..data import DATASETS, data_root

    from ..data import load_dataset
    from ..errors import DflearnError

    width = max(map(len, DATASETS))
    for name in sorted(DATASETS):
        print(f"{name:<{width}}  {(DATASETS[name].__doc__ or '').strip().splitlines()[0]}")
        if name == "text":  # not one corpus but any file
            print(f"{'':<{width}}  reads the file named: --dataset text:PATH")
            continue
        try:  # the loader's own checks (files, checksums), never a download
            d = load_dataset(name)
            state = f"present: {len(d.x_train)} train / {len(d.x_test)} test" + (f" in {d.source}" if d.source else "")
        except DflearnError:
            state = f"not found: dflearn train --dataset {name} --download, or put its files in {data_root() / name}"
        print(f"{'':<{width}}  {state}")
    print(f"\ndata folder: {data_root()} (set DFLEARN_DATA_DIR or --data-dir)")


def register(sub) -> None:
    for name, fn, text in (("rules", list_rules, "list the learning rules with one line of maths and their options"),
                           ("models", list_models, "list the models and their options"),
                           ("datasets", list_datasets, "list the data sets, which are present locally and where they are read from")):
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=fn)
