"""`dflearn reproduce NAME --budget smoke|short|paper`: the papers' experiments as grids."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from . import configfile
from .compare import _list, add_grid_output, finish
from .train import ALIGN_MEASURE


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 7200 else f"~{seconds / 3600:.0f} h"


def list_presets() -> None:
    from ..experiments.presets import BUDGETS, PRESETS, estimate_seconds

    for p in PRESETS.values():
        print(f"{p.name}\n  {p.summary}\n  compare with: {p.source}")
        for budget in BUDGETS:
            grid = p.grid(budget)
            runs = grid.runs()
            c = runs[0][1]
            rules = sorted({r.rule for _, r in runs}, key=lambda r: r)
            cells = sorted({f"{r.dataset}/{r.model}" + (f"/{r.augment}" if r.augment else "") for _, r in runs})
            print(f"  {budget:<5}  {len(runs)} runs ({', '.join(rules)}; seeds {grid.seeds}) on "
                  f"{'; '.join(cells)}; {c.optimizer} lr {c.lr:g}, epochs {sorted({r.epochs for _, r in runs})}"
                  + (f", {c.max_steps_per_epoch} batches/epoch" if c.max_steps_per_epoch else "")
                  + f"; CPU {_duration(estimate_seconds(grid))}")
    print("\nCPU times are rough estimates for 2 cores and the full official training sets.")


def run(args: argparse.Namespace) -> int:
    from ..errors import DflearnError
    from ..experiments.plots import plot_all
    from ..experiments.presets import get_preset

    if args.list:
        list_presets()
        return 0
    if not args.name:
        raise DflearnError("name a preset (e.g. dflearn reproduce las-alignment --budget smoke) or use --list")
    grid = get_preset(args.name).grid(args.budget)
    if args.only_dataset:
        grid = grid.filtered(dataset=args.only_dataset)
    if args.seeds:
        grid = dataclasses.replace(grid, seeds=_list(args.seeds, int))
    if args.rules:  # the preset's experiment with other rules, the user's own too (module:Class, plugins)
        rules = _list(args.rules)
        from ..plugins import find_rule
        for r in rules:
            find_rule(r)
        grid = dataclasses.replace(grid, rules=rules, rule_options={r: grid.rule_options.get(r, {}) for r in rules},
                                   variants=[{k: x for k, x in v.items() if k != "rules"} for v in grid.variants])
    changes = {k: getattr(args, k) for k in ("epochs", "max_steps_per_epoch", "align_every", "align_measure",
                                             "device", "data_dir") if getattr(args, k) is not None}
    grid = dataclasses.replace(grid, base={**grid.base, **changes},
                               variants=[{**v, **{k: x for k, x in changes.items() if k in v}} for v in grid.variants])
    out = Path(args.out or f"runs/reproduce/{args.name}-{args.budget}")
    finish(grid.runs(), out, args)
    for path in plot_all([out], out / "plots"):
        print(f"plot: {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="run one of the papers' experiments at a budget (--list shows them)",
                       description="Run a paper's experiment as a grid of runs (same machinery and resume "
                                   "behaviour as 'dflearn compare'), write its table and plots.",
                       epilog="Example: dflearn reproduce las-alignment --budget smoke; dflearn reproduce --list")
    p.add_argument("name", nargs="?", help="preset name (see --list)")
    p.add_argument("--list", action="store_true", help="show the presets, their settings and estimated costs")
    p.add_argument("--budget", choices=["smoke", "short", "paper"], default="smoke",
                   help="smoke: a minute; short: about an hour of a 2-core CPU; paper: the papers' settings")
    p.add_argument("--out", help="grid folder (default runs/reproduce/NAME-BUDGET)")
    g = p.add_argument_group("cutting a budget down (say so when you report numbers)")
    g.add_argument("--dataset", dest="only_dataset", help="run only the part of the preset on this data set")
    g.add_argument("--seeds", help="comma-separated seeds instead of the preset's")
    g.add_argument("--rules", help="comma-separated rules instead of the preset's: names, module:Class or plugins "
                                   "(a preset rule keeps its options, e.g. dfa init=product)")
    g.add_argument("--epochs", type=int, help="epochs instead of the preset's")
    g.add_argument("--max-steps-per-epoch", type=int, help="end each epoch after N batches")
    g.add_argument("--align-every", type=int, help="alignment interval instead of the preset's")
    g.add_argument("--align-measure", **ALIGN_MEASURE)
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--data-dir", help="folder holding the data sets")
    add_grid_output(p)
    configfile.add_arguments(p)
    p.set_defaults(func=run)
