"""`dflearn compare`: rules x seeds (x models, data sets, learning rates) and a results table."""
from __future__ import annotations

from . import configfile

import argparse
from pathlib import Path

from ..errors import DflearnError
from .train import ALIGN_MEASURE, S, add_config_arguments, config_overrides


def _list(text: str, kind=str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DflearnError(f"'{text}' is not a comma-separated list of {kind.__name__} values (e.g. 0,1,2)") from None


def split_rule_options(rules: list[str], options: dict) -> dict[str, dict]:
    """-o KEY=VALUE goes to every rule of the grid that has the option (dfa gets init=product, bp nothing)."""
    from ..plugins import find_rule
    from ..rules import RULES, rule_options

    for r in rules:
        find_rule(r)
    per_rule = {r: {k: v for k, v in options.items() if r in RULES and k in rule_options(RULES[r])} for r in rules}
    unused = set(options) - {k for opts in per_rule.values() for k in opts}
    if unused:
        raise DflearnError(f"no rule of {', '.join(rules)} has the option(s) {', '.join(sorted(unused))}; "
                           f"see 'dflearn rules'")
    return per_rule


def add_grid_output(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("grid")
    g.add_argument("--layout", choices=["rows", "papers"], default="rows",
                   help="results.md: one row per cell (default) or the papers' layout, rules as columns")
    g.add_argument("--table-metric", choices=["auto", "selected", "paper", "final"], default="auto",
                   help="the figure in the papers layout's cells: selected = test accuracy at the validation-best "
                        "epoch, paper = best test accuracy over epochs (the LAS paper's protocol), final; auto "
                        "(default): selected when every run has a validation split, else paper")
    g.add_argument("--jobs", type=int, default=1, help="runs at once, in separate processes (default 1)")
    g.add_argument("-q", "--quiet", action="store_true", help="no per-epoch lines")
    from ..experiments import loggers
    loggers.add_arguments(g)


def finish(runs, out: Path, args) -> None:
    """Run the grid, write results.md / results.csv and print the table."""
    from ..experiments import lrsearch, spread
    from ..experiments.grid import run_grid, write_table

    log = (lambda *a: None) if args.quiet else print
    from ..experiments import loggers

    loggers.make_observers(**loggers.from_args(args))  # a missing package fails now, not in a worker
    if args.jobs < 1:
        raise DflearnError(f"--jobs must be at least 1, got {args.jobs}")
    summaries = run_grid(runs, out, jobs=args.jobs, log=log, loggers=loggers.from_args(args))
    diverged = [s for s in summaries if s.get("diverged")]
    if len(diverged) < len(summaries):
        rows = write_table(out, args.layout, getattr(args, "table_metric", "auto"))
        lrsearch.write(out, rows)  # several lrs: each rule's chosen on validation, appended to results.md
        spread.write(out)  # which differences between rules exceed the seeds' spread, appended too
        print((out / "results.md").read_text(), end="")
        print(f"table written to {out / 'results.md'} and {out / 'results.csv'}")
    if diverged:
        raise DflearnError(f"{len(diverged)} of {len(summaries)} run(s) diverged and are left out of the table "
                           f"(first: {diverged[0].get('out')}: step {diverged[0].get('diverged_at_step')}); "
                           f"run them again with a smaller --lr")


def run(args: argparse.Namespace) -> int:
    from ..experiments.grid import Grid

    base = config_overrides(args)
    if not args.out:
        raise DflearnError("compare needs --out DIR (the grid folder), on the command line or in --config")
    if "seed" in base:  # --seed N (or a run's config.json) means that one seed, not the default three
        if args.seeds is not None:
            raise DflearnError("give --seeds or --seed, not both")
        args.seeds = str(base.pop("seed"))
    rules = _list(args.rules)
    options = base.pop("rule_options", {})
    variants = [{}]
    for name, field, kind in (("models", "model", str), ("datasets", "dataset", str), ("lrs", "lr", float)):
        values = getattr(args, name)
        if values:
            variants = [{**v, field: x} for v in variants for x in _list(values, kind)]
    grid = Grid(base, rules, _list(args.seeds or "0,1,2", int), variants, split_rule_options(rules, options))
    finish(grid.runs(), Path(args.out), args)
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="run rules x seeds (x models, data sets, lrs) and tabulate test accuracy",
                       description="Run a grid of runs, one run directory each under --out, and write "
                                   "results.md and results.csv there: per cell the mean ± std over seeds of the "
                                   "best and final test accuracy and the seconds per epoch. Running the same "
                                   "command again skips finished runs and resumes interrupted ones.",
                       epilog="Example: dflearn compare --rules bp,dfa,las,ltas --seeds 0,1,2 --dataset mnist "
                              "--model mlp-mnist --epochs 2 --out runs/fc-mnist --layout papers")
    p.add_argument("--rules", default="bp,dfa,las,ltas", help="comma-separated rules (default bp,dfa,las,ltas)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; --seed N is --seeds N)")
    p.add_argument("--models", help="comma-separated models (overrides --model)")
    p.add_argument("--datasets", help="comma-separated data sets (overrides --dataset)")
    p.add_argument("--lrs", help="comma-separated learning rates (overrides --lr); each rule's is then chosen on "
                                 "the validation split (results.md, lr_selection.json)")
    p.add_argument("--out", help="grid folder (required): one run directory per run, results.md, results.csv")
    p.add_argument("--align-every", type=int, default=S, help="measure alignment with BP every K steps")
    p.add_argument("--align-measure", default=S, **ALIGN_MEASURE)
    add_config_arguments(p)
    add_grid_output(p)
    configfile.add_arguments(p)
    p.set_defaults(func=run)
