"""A grid of runs (rules x seeds x variants), each a normal run directory, and its table.

`run_grid` runs what is missing: a run with `summary.json` is skipped, one with
a checkpoint but no summary is resumed (bit-exact, see training/trainer.py),
one that never finished an epoch starts again. The table is computed from the
run directories alone, so an interrupted and restarted grid gives the same table.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from ..errors import DflearnError
from ..training import Config, Trainer
from ..training.checkpoint import CHECKPOINT
from ..training.transfer import names_list

# columns in the papers' order; rules not listed follow alphabetically
RULE_ORDER = ("bp", "shallow", "dfa", "sdfa", "drtp", "dkp", "las", "ltas")
NOT_A_CELL = ("seed",) + Config.RUNTIME  # runs differing only in these are repeats of one cell
# the optimiser's settings: what a rule's recipe may fix for itself (`follows_the_rule`)
RECIPE = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "gamma")


@dataclass
class Grid:
    """Every rule x seed for each variant. `base` holds the Config fields all runs
    share; a variant overrides some (dataset, model, augment, lr, ...) and may
    carry its own 'rules' and 'rule_options' (which win over the per-rule ones);
    `rule_options` are per rule (e.g. {'dfa': {'init': 'product'}}). An `init_from`
    may hold '{seed}' (each seed starts from its own source run) and may name
    another run of the grid by its folder name: that run then goes first."""

    base: dict
    rules: list[str]
    seeds: list[int]
    variants: list[dict] = field(default_factory=lambda: [{}])
    rule_options: dict[str, dict] = field(default_factory=dict)

    def runs(self) -> list[tuple[str, Config]]:
        """(directory name, Config) of every run, in order; names are unique."""
        out: dict[str, Config] = {}
        for variant in self.variants:
            fields = {k: v for k, v in variant.items() if k not in ("rules", "rule_options")}
            for rule in variant.get("rules", self.rules):
                for seed in self.seeds:
                    options = {**self.base.get("rule_options", {}), **self.rule_options.get(rule, {}),
                               **variant.get("rule_options", {})}
                    config = Config.from_dict({**self.base, **fields, "rule": rule, "seed": seed,
                                               "rule_options": options})
                    if isinstance(config.init_from, str) and "{seed}" in config.init_from:
                        config.init_from = config.init_from.replace("{seed}", str(seed))
                    name = run_name(config)
                    if name in out:
                        raise DflearnError(f"two runs of the grid would share the folder '{name}'; "
                                           f"vary only dataset, model, augment, lr, rule (options) and seed")
                    out[name] = config
        return list(out.items())

    def filtered(self, **only) -> "Grid":
        """Keep the variants whose fields equal `only` (e.g. dataset='mnist')."""
        variants = [v for v in self.variants if all(v.get(k, self.base.get(k)) == x for k, x in only.items())]
        if not variants:
            raise DflearnError(f"no part of the grid has {only}; see 'dflearn reproduce --list'")
        return Grid(self.base, self.rules, self.seeds, variants, self.rule_options)


def rule_label(config: Config | dict) -> str:
    """'dfa', or 'dfa[init=product]' when the rule has options."""
    c = config if isinstance(config, dict) else config.to_dict()
    opts = ",".join(f"{k}={v}" for k, v in sorted(c["rule_options"].items()))
    return f"{c['rule']}[{opts}]" if opts else c["rule"]


def run_name(config: Config) -> str:
    c = config
    name = f"{c.dataset}-{c.model}-{c.augment or 'noaug'}-lr{c.lr:g}-{rule_label(c)}-seed{c.seed}"
    if c.init_from:  # a transferred run never shares the folder of the run it starts from
        name += "-init" + ("=" + "+".join(names_list(c.init_blocks)) if c.init_blocks else "")
    if c.freeze:
        name += "-freeze=" + "+".join(names_list(c.freeze))
    return re.sub(r"[^\w.+=,-]", "_", name)


# ------------------------------------------------------------------ running
def run_one(out: Path, config: Config, progress: bool = False, log=print, loggers: dict | None = None) -> dict:
    """Finish the run in `out`: skip it if done, resume it if interrupted, else start it.

    The run directory is locked first, so two grids sharing a folder never write one run at once."""
    from ..training import rundir

    lock = rundir.RunLock(out)
    try:
        return _run_locked(out, config, progress, log, loggers, lock)
    finally:
        lock.release()


def _run_locked(out: Path, config: Config, progress, log, loggers, lock) -> dict:
    from ..training import rundir

    saved = None
    if (out / "config.json").is_file():
        try:
            saved = Config.from_dict(rundir.read_json(out / "config.json", "config.json"))
        except (DflearnError, TypeError):
            saved = None  # damaged: the run starts again below
    done = _summary(out)
    if saved is not None and done is not None:
        diff = saved.differences(config.resolved())
        if diff:
            raise DflearnError(f"{out} holds a run with another configuration (differs in {', '.join(diff)}); "
                               f"give the grid another --out folder")
        if done.get("diverged") or done.get("epochs", 0) >= config.epochs:
            return done  # finished (or diverged: resuming would repeat it)
    from .loggers import make_observers

    observers = make_observers(**(loggers or {}))
    if saved is not None and (out / CHECKPOINT).exists():
        return Trainer.resume(out, config, progress=progress, log=log, observers=observers, _lock=lock).fit()
    for name in ("config.json", CHECKPOINT, "summary.json"):  # never really started: start again
        (out / name).unlink(missing_ok=True)
    return Trainer(config, out, progress=progress, log=log, observers=observers, _lock=lock).fit()


def _diverged_too(fn, out: Path, *args) -> dict:
    """fn(out, ...)'s summary; a run that diverged gives its summary.json (diverged: true) instead of
    stopping the grid: the other runs go on, the table leaves it out and the command says so."""
    from ..training.trainer import Diverged

    try:
        return fn(out, *args)
    except Diverged as exc:
        return {**(_summary(out) or {}), "diverged": True, "message": str(exc), "out": str(out)}


def _summary(out: Path) -> dict | None:
    """A run's summary.json, or None if missing or half-written."""
    from ..training import rundir

    try:
        done = rundir.read_json(out / "summary.json", "summary.json")
    except (FileNotFoundError, DflearnError):
        return None
    return done if isinstance(done, dict) else None


def _worker(out: Path, config: Config, threads: int, loggers: dict | None = None) -> dict:
    import dataclasses

    from ..training.distributed import die_with_parent

    os.environ.setdefault("DFLEARN_LAUNCHER_PID", str(os.getppid()))
    die_with_parent()  # a grid killed hard takes its workers with it
    if not config.threads:
        config = dataclasses.replace(config, threads=threads)
    return run_one(out, config, progress=False, log=lambda *a: None, loggers=loggers)


def run_grid(runs: list[tuple[str, Config]], out: str | Path, *, jobs: int = 1, progress: bool = False,
             log=print, loggers: dict | None = None) -> list[dict]:
    """Run (or finish) every run under `out/NAME`; returns their summaries in order."""
    from ..training.rundir import check_out

    check_out(out)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DflearnError(f"cannot use {out} as a grid folder: {exc.strerror or exc}; choose another --out") from None
    for name, config in runs:
        config.resolved()  # bad names fail now, not after hours of other runs
    by_name = dict(runs)
    sources = _sources(runs)  # runs that start from another run of the grid (--init-from NAME) wait for it
    done: dict[str, dict] = {}
    if jobs <= 1:
        for k, name in enumerate(_in_order(sources), 1):
            log(f"[{k}/{len(runs)}] {name}")
            done[name] = _diverged_too(run_one, out / name, by_name[name], progress, log, loggers)
        return [done[name] for name, _ in runs]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending, submitted = list(by_name), {}
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        while pending or submitted:
            # a run starts as soon as its source has finished, not when a whole wave of sources has
            for name in [n for n in pending if sources[n] is None or sources[n] in done]:
                pending.remove(name)
                submitted[pool.submit(_diverged_too, _worker, out / name, by_name[name], threads, loggers)] = name
            finished, _ = wait(submitted, return_when=FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: list(by_name).index(submitted[f])):  # in the grid's order
                name = submitted.pop(f)
                done[name] = f.result()
                log(f"{'diverged' if done[name].get('diverged') else 'done'} {name}")
    return [done[name] for name, _ in runs]


def _sources(runs: list[tuple[str, Config]]) -> dict[str, str | None]:
    """Each run's source: the run of the grid its init_from names (it must finish first), or None."""
    names = {n for n, _ in runs}
    sources = {}
    for n, config in runs:
        first = Path(config.init_from).parts[0] if config.init_from else None
        sources[n] = first if first in names else None
    for n in sources:  # a circle would wait for ever
        seen, at = {n}, sources[n]
        while at is not None:
            if at in seen:
                raise DflearnError(f"runs of the grid start from each other in a circle ({n}); check init_from")
            seen.add(at)
            at = sources[at]
    return sources


def _in_order(sources: dict[str, str | None]) -> list[str]:
    """The runs in the grid's order, each moved after its source."""
    order: list[str] = []

    def place(name: str) -> None:
        if name not in order:
            if sources[name] is not None:
                place(sources[name])
            order.append(name)

    for name in sources:
        place(name)
    return order


# ------------------------------------------------------------------ tables
def as_cell_config(config: dict) -> dict:
    """A run's config as tables and plots group it: an `init_from` that names the same
    seed's source run ('...-seed3') counts as one setting across seeds ('...-seed*')."""
    source = config.get("init_from")
    if isinstance(source, str) and re.search(rf"seed{config.get('seed')}(?!\d)", source):
        return {**config, "init_from": re.sub(rf"seed{config.get('seed')}(?!\d)", "seed*", source)}
    return config


def collect(folder: str | Path) -> list[dict]:
    """Every finished run under `folder` (or `folder` itself): its config merged with its summary
    (the config as `as_cell_config` gives it). Runs with a half-written or diverged summary, or a
    damaged config.json, are left out."""
    from ..training import rundir

    folder = Path(folder)
    dirs = [folder] if (folder / "summary.json").exists() else sorted(p.parent for p in folder.glob("*/summary.json"))
    rows = []
    for d in dirs:
        summary = _summary(d)
        try:
            config = rundir.read_json(d / "config.json", "config.json")
        except (FileNotFoundError, DflearnError):
            continue
        if not summary or summary.get("diverged") or "best_test_accuracy" not in summary or not isinstance(config, dict):
            continue
        rows.append({"dir": str(d), "config": as_cell_config(config), **summary})
    return rows


def _cell(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in NOT_A_CELL}, sort_keys=True)


def _rule_key(label: str):
    rule = re.split(r"[\[ ]", label)[0]  # 'sdfa[k=1]', or a legend's 'bp from=bp-seed*'
    return (RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER), label)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1); std is NaN for a single seed."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _optional(runs: list[dict], key: str) -> tuple[float, float]:
    """Mean and std of a summary key that older runs (or runs without validation) lack: NaN unless all have it."""
    values = [r.get(key) for r in runs]
    return _mean_std(values) if all(v is not None for v in values) else (math.nan, math.nan)


def sets_cells_apart(key: str, configs: list[dict]) -> bool:
    """Whether `key` takes several values among `configs` and is not merely `follows_the_rule`:
    a setting that tables show as a column and legends name."""
    return len({json.dumps(c.get(key)) for c in configs}) > 1 and not follows_the_rule(key, configs)


def shown_settings(configs: list[dict]) -> list[str]:
    """The settings a table names for each row: data set, model, and whatever else sets cells apart."""
    keys = dict.fromkeys(k for c in configs for k in c)  # in the configs' order
    return ["dataset", "model"] + [k for k in keys if k not in NOT_A_CELL + ("rule", "rule_options", "dataset", "model")
                                   and sets_cells_apart(k, configs)]


def follows_the_rule(key: str, configs: list[dict]) -> bool:
    """Whether `key` takes one value per rule among `configs`, so that it differs only between
    rules: part of each rule's recipe, not a setting of the cell. DKP's own feedback optimizer
    (feedback_lr 1e-4 and its schedule, from `Rule.feedback_defaults`) is one; the weight decay
    the DKP reference gives its forward weights (1e-6 against BP's 1e-4, preset dkp-cifar100)
    another. Shown as a column it would split the papers' layout into a row per rule;
    `rule_recipes` names such settings under the table instead. A setting that varies within a
    rule (an lr sweep) still shows; settings other than the optimisers' (the data, the model, where
    the weights come from and which stay frozen) always do."""
    if key not in RECIPE and not key.startswith("feedback_"):
        return False
    values: dict[str, set] = {}
    for c in configs:
        values.setdefault(rule_label(c), set()).add(json.dumps(c.get(key)))
    return all(len(v) == 1 for v in values.values())


def rule_recipes(configs: list[dict]) -> str:
    """A line naming the settings that differ only between rules (`follows_the_rule`), each
    rule's value; the feedback optimizer's are left to the rules' documentation (a rule without
    feedback parameters ignores them). '' when there are none."""
    keys = [k for k in configs[0] if k not in NOT_A_CELL + ("rule", "rule_options") and not k.startswith("feedback_")
            and len({json.dumps(c.get(k)) for c in configs}) > 1 and follows_the_rule(k, configs)]
    parts = []
    for k in keys:
        by_rule = {rule_label(c): c.get(k) for c in configs}
        parts.append(f"{k}: " + ", ".join(f"{r} {by_rule[r]}" for r in sorted(by_rule, key=_rule_key)))
    return f"Settings that differ by rule, part of each rule's recipe: {'; '.join(parts)}.\n" if parts else ""


def table(folder: str | Path) -> list[dict]:
    """One row per cell (runs equal but for the seed): mean and std over seeds of
    the best test accuracy over epochs (`best`, the paper protocol), the final one
    (`final`), seconds per epoch, and, when every run has a validation split, the
    test accuracy at the validation-best epoch (`selected`) and that validation
    accuracy (`val`)."""
    cells: dict[str, list[dict]] = {}
    for run in collect(folder):
        cells.setdefault(_cell(run["config"]), []).append(run)
    if not cells:
        raise DflearnError(f"{folder} holds no finished run (no */summary.json); run the grid first")
    shown = shown_settings([runs[0]["config"] for runs in cells.values()])
    rows = []
    for runs in cells.values():
        c = runs[0]["config"]
        row = {k: c[k] for k in shown}
        row["rule"] = rule_label(c)
        row["seeds"] = len(runs)
        for key, name in (("best_test_accuracy", "best"), ("final_test_accuracy", "final"),
                          ("seconds_per_epoch", "seconds_per_epoch"), ("final_test_bpc", "final_bpc")):
            if key in runs[0]:  # bits per character: language-model runs only
                row[f"{name}_mean"], row[f"{name}_std"] = _mean_std([r[key] for r in runs])
        for key, name in (("test_accuracy_at_val_best", "selected"), ("val_best_accuracy", "val")):
            row[f"{name}_mean"], row[f"{name}_std"] = _optional(runs, key)
        row["epochs"] = c["epochs"]
        rows.append(row)
    rows.sort(key=lambda r: (tuple(json.dumps(r[k]) for k in shown), _rule_key(r["rule"])))
    if any("final_bpc_mean" in r for r in rows):  # one set of columns for every row (CSV)
        for r in rows:
            r.setdefault("final_bpc_mean", math.nan), r.setdefault("final_bpc_std", math.nan)
    return rows


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def _bpc(row: dict) -> str:
    mean, std = row.get("final_bpc_mean", math.nan), row.get("final_bpc_std", math.nan)
    return "–" if math.isnan(mean) else f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")


METRICS = {  # what a papers-layout cell shows, and how the table says so
    "selected": ("selected", "Test accuracy at the epoch of best validation accuracy (%; selected on the "
                             "validation split, never on test)"),
    "paper": ("best", "Best test accuracy over epochs (%; the LAS paper's protocol: the epoch is chosen on the "
                      "test set, so the figure is optimistic)"),
    "final": ("final", "Test accuracy after the last epoch (%)"),
}


def table_metric(rows: list[dict], metric: str = "auto") -> str:
    """'auto': the validation-selected figure when every cell has one, else the paper protocol's."""
    if metric == "auto":
        return "selected" if all(not math.isnan(r["selected_mean"]) for r in rows) else "paper"
    if metric not in METRICS:
        raise DflearnError(f"unknown table metric '{metric}'; choose auto, selected, paper or final")
    return metric


def markdown(rows: list[dict], layout: str = "rows", metric: str = "auto") -> str:
    """A Markdown table: one row per cell ('rows': every figure, each named), or the
    papers' layout with rules as columns and one figure in the cells ('papers';
    `metric`: selected, paper, final or auto, see `table_metric`; language-model runs:
    final test bits per character), named below the table."""
    shown = [k for k in rows[0] if k not in ("rule", "seeds", "epochs") and not k.endswith(("_mean", "_std"))]
    if layout == "papers":
        rules = sorted({r["rule"] for r in rows}, key=_rule_key)
        groups: dict[tuple, dict] = {}
        for r in rows:
            groups.setdefault(tuple(str(r[k]) for k in shown), {})[r["rule"]] = r
        lines = ["| " + " | ".join(shown + rules) + " |", "|" + "---|" * (len(shown) + len(rules))]
        text = all(not math.isnan(r.get("final_bpc_mean", math.nan)) for r in rows)
        name, label = METRICS[table_metric(rows, metric)]
        for key, by_rule in groups.items():
            cells = [("–" if x not in by_rule else _bpc(by_rule[x]) if text
                      else _pct(by_rule[x][f"{name}_mean"], by_rule[x][f"{name}_std"])) for x in rules]
            lines.append("| " + " | ".join(list(key) + cells) + " |")
        seeds = sorted({r["seeds"] for r in rows})
        what = "Final test bits per character" if text else label
        lines.append(f"\n{what}, mean ± std over {'/'.join(map(str, seeds))} seed(s).")
        return "\n".join(lines) + "\n"
    bpc = "final_bpc_mean" in rows[0]
    head = shown + ["rule", "seeds", "epochs", "test acc at val-best epoch (%)",
                    "best test acc over epochs, paper protocol (%)", "final test acc (%)", "s/epoch"] + \
        (["final test bpc"] if bpc else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        spe = f"{r['seconds_per_epoch_mean']:.2f}" + ("" if math.isnan(r["seconds_per_epoch_std"])
                                                      else f" ± {r['seconds_per_epoch_std']:.2f}")
        selected = "–" if math.isnan(r["selected_mean"]) else _pct(r["selected_mean"], r["selected_std"])
        lines.append("| " + " | ".join([str(r[k]) for k in shown] + [r["rule"], str(r["seeds"]), str(r["epochs"]),
                     selected, _pct(r["best_mean"], r["best_std"]), _pct(r["final_mean"], r["final_std"]), spe]
                                       + ([_bpc(r)] if bpc else [])) + " |")
    lines.append("\nMean ± sample std over seeds; s/epoch is the median training time of an epoch. "
                 "'At val-best epoch': the test accuracy of the epoch with the best validation accuracy "
                 "(– : a run without a validation split); 'paper protocol': the best test accuracy over "
                 "epochs, chosen on test as the LAS paper reports it.")
    return "\n".join(lines) + "\n"


def write_table(folder: str | Path, layout: str = "rows", metric: str = "auto") -> list[dict]:
    """Write results.md and results.csv into `folder`; returns the rows."""
    folder = Path(folder)
    import io

    from ..training.rundir import atomic_write

    rows = table(folder)
    text = markdown(rows, layout, metric) + rule_recipes([r["config"] for r in collect(folder)])
    atomic_write(folder / "results.md", lambda f: f.write(text.encode()))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows([{k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows])
    atomic_write(folder / "results.csv", lambda f: f.write(buf.getvalue().encode()))
    return rows
