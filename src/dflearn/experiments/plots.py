"""Headless plots of runs and grids: learning curves and alignment per block.

Each function returns the matplotlib Figure. Every run is drawn as a thin line
(gid 'run:DIR'); runs that differ only in the seed are grouped and, when there
are several, drawn again as their mean (gid 'mean:LABEL') with a ±1 std band.

Conventions, the same in every figure:
- a rule has one colour and one marker everywhere (`rule_style`): each built-in rule has its
  own entry in STYLES, colours picked to stay apart in CIELAB (the rules plotted together
  most, bp/shallow/dfa/sdfa/drtp/dkp/las/ltas, by a colour difference of at least 28) and
  a marker no other rule has; other rules (plugins, module:Class) hash into EXTRA colours,
  which no built-in rule uses. Options of one rule (dfa vs dfa[init=product]) change the
  line style.
- markers on every line (every point when a run has up to 20, else about 10), so a
  one-epoch run is a visible dot;
- accuracy in %, losses on a log scale, integer epoch ticks; titles name the data
  set, model and budget; legends name what varies (`lr=0.001`);
- alignment per measurement (its training step), with mean ± std over seeds.
"""
from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from ..errors import DflearnError  # noqa: E402
from .grid import NOT_A_CELL, _rule_key, as_cell_config, rule_label, sets_cells_apart  # noqa: E402

DIAGNOSTICS = {"alignment": ("signal alignment with BP", "cosine"),
               "update_alignment": ("weight-update alignment with BP", "cosine"),
               "feedback_angle": (r"angle between $B_i$ and $(W_L \cdots W_{i+1})^T$", "angle (degrees)")}

# rule -> (colour, marker): a fixed pair per built-in rule, the same in every figure
STYLES = {"bp": ("#000000", "o"), "shallow": ("#7f7f7f", "*"), "dfa": ("#ff7f0e", "s"), "sdfa": ("#d62728", "v"),
          "drtp": ("#8c564b", "d"), "dkp": ("#9467bd", "h"), "las": ("#1f77b4", "^"), "ltas": ("#2ca02c", "D"),
          "fa": ("#e377c2", "<"), "kp": ("#17becf", ">"), "usf": ("#bcbd22", "p"), "frsf": ("#000080", "8"),
          "brsf": ("#800000", "P"), "wm": ("#556b2f", "X"), "pepita": ("#ff00ff", "H"), "localheads": ("#b8860b", "+")}
# for any other rule (a plugin, module:Class, a built-in rule not in STYLES yet), by a hash of its name
EXTRA = ["#008080", "#ff1493", "#4b0082", "#00bfff", "#a0522d", "#32cd32", "#6a5acd", "#cd853f"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8"]
LINESTYLES = ["-", "--", "-."]
SHORT = {"max_steps_per_epoch": "steps/epoch", "batch_size": "batch", "model_options": "model",
         "weight_decay": "wd", "init_from": "from", "init_blocks": "copied", "freeze": "frozen"}


def rule_style(rule: str) -> dict:
    """{'color', 'marker'} of a rule name, the same in every figure."""
    if rule in STYLES:
        color, marker = STYLES[rule]
    else:
        h = zlib.crc32(rule.encode())
        color, marker = EXTRA[h % len(EXTRA)], MARKERS[h // len(EXTRA) % len(MARKERS)]
    return {"color": color, "marker": marker}


def load_runs(paths) -> list[dict]:
    """Run directories, or grid folders holding them; each with its config and epoch rows."""
    from ..training.rundir import read_json, read_jsonl

    runs = []
    for path in map(Path, paths):
        dirs = [path] if (path / "metrics.jsonl").exists() else sorted(p.parent for p in path.glob("*/metrics.jsonl"))
        if not dirs:
            raise DflearnError(f"{path} is neither a run directory nor a grid folder (no metrics.jsonl found)")
        for d in dirs:
            rows = read_jsonl(d / "metrics.jsonl")  # a torn last line (a writer killed mid-line) is dropped
            if rows:
                try:
                    config = read_json(d / "config.json", "config.json")
                except FileNotFoundError:
                    raise DflearnError(f"{d} has metrics.jsonl but no config.json; the run directory is damaged") from None
                if not isinstance(config, dict):
                    raise DflearnError(f"{d / 'config.json'} does not hold a configuration; the run directory is damaged")
                config = as_cell_config(config)
                runs.append({"dir": str(d), "config": config, "rows": rows})
    if not runs:
        raise DflearnError("no finished epoch in the given runs; nothing to plot")
    return runs


def _value(key: str, v) -> str:
    if v is None or v == []:
        return "none"
    if key == "init_from":  # a grid's source run: its rule and seed say which (dataset, model, lr are the cell's)
        name = Path(str(v)).name
        return re.sub(r"^.*-lr[^-]+-", "", name)
    if isinstance(v, list):
        return ",".join(map(str, v))
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ",".join(f"{k}={_value(k, x)}" for k, x in sorted(v.items()))
    return str(v)


def _cell(c: dict) -> dict:
    return {k: v for k, v in c.items() if k not in NOT_A_CELL + ("rule", "rule_options")}


def group(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs equal but for the seed, labelled by rule and `name=value` of whatever else varies."""
    def derived(k):  # feedback_lr that follows lr in every run says nothing new
        base = k.removeprefix("feedback_")
        return k != base and all(r["config"][k] == r["config"].get(base) for r in runs)
    configs = [r["config"] for r in runs]
    varying = [k for k in _cell(runs[0]["config"]) if sets_cells_apart(k, configs) and not derived(k)]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        c = r["config"]
        label = " ".join([rule_label(c)] + [f"{SHORT.get(k, k)}={_value(k, c[k])}" for k in varying])
        groups.setdefault(label, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: _rule_key(kv[0])))


def _style(members: list[dict]) -> dict:
    """The rule's colour and marker; the options of the rule pick the line style."""
    c = members[0]["config"]
    options = json.dumps(c["rule_options"], sort_keys=True)
    return {**rule_style(c["rule"]),
            "linestyle": LINESTYLES[0] if options == "{}" else LINESTYLES[1 + zlib.crc32(options.encode()) % 2]}


def _markevery(n: int) -> int:
    return 1 if n <= 20 else max(1, n // 10)


def _series(ax, runs: list[dict], label: str, style: dict, points) -> None:
    """One thin line per run (points(run) -> (x, y)), then the mean and a ±1 std band if there are several."""
    curves = [points(r) for r in runs]
    single = len(runs) == 1
    for r, (x, y) in zip(runs, curves):
        ax.plot(x, y, **style, lw=2 if single else 0.6, alpha=1 if single else 0.35, ms=5 if single else 2,
                markevery=_markevery(len(x)), label=label if single else None, gid=f"run:{r['dir']}")
    if not single:
        n = min(len(x) for x, _ in curves)
        ys = np.array([y[:n] for _, y in curves], dtype=float)
        mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0, ddof=1)
        x = curves[0][0][:n]
        ax.plot(x, mean, **style, lw=2, ms=5, markevery=_markevery(n), label=f"{label} (mean of {len(runs)} seeds)",
                gid=f"mean:{label}")
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.2, lw=0)


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def title(runs: list[dict]) -> str:
    """'mnist · mlp-mnist · 3 epochs (200 steps each) · 2 seeds': what was trained, at what budget."""
    def values(key):
        return sorted({_value(key, r["config"][key]) for r in runs})
    epochs = values("epochs")
    steps = values("max_steps_per_epoch")
    budget = f"{'/'.join(epochs)} epoch{'s' if epochs != ['1'] else ''}"
    if steps != ["0"]:
        budget += f" ({'/'.join(s if s != '0' else 'all' for s in steps)} steps each)"
    seeds = len({r["config"]["seed"] for r in runs})
    shared = []  # settings every run shares, as they matter for reading the curves
    if len(values("augment")) == 1 and values("augment") != ["None"]:
        shared.append(f"augment={values('augment')[0]}")
    if len(values("optimizer")) == 1 and len(values("lr")) == 1:
        shared.append(f"{values('optimizer')[0]} lr={values('lr')[0]}")
    return " · ".join([", ".join(values("dataset")), ", ".join(values("model")), *shared, budget,
                       f"{seeds} seed{'s' if seeds > 1 else ''}"])


def _epochs_axis(ax, last: int) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if last <= 3:  # a few epochs: whole-epoch ticks with room around them, not 0.945..1.05
        ax.set_xlim(0.5, last + 0.5)
        ax.set_xticks(range(1, last + 1))
    ax.grid(alpha=0.3)


def selected_row(run: dict) -> dict:
    """The epoch a table reports: the validation-best when the run has a validation split (the
    first on ties), else the best test accuracy (the paper protocol), as in summary.json."""
    rows = run["rows"]
    if all("val_acc" in row for row in rows):
        return max(rows, key=lambda row: row["val_acc"])
    return max(rows, key=lambda row: row["test_acc"])


def learning_curves(runs: list[dict]) -> Figure:
    """Test accuracy (%) and test loss (log scale) per epoch; when every run has a
    validation split, a third panel of validation accuracy, and on the test-accuracy
    panel an open diamond at each run's validation-best epoch (the figure the tables
    report as 'at val-best'; gid 'selected:DIR')."""
    val = all("val_acc" in row for r in runs for row in r["rows"])
    fig, axes = plt.subplots(1, 3 if val else 2, figsize=(16 if val else 11, 4.2), layout="constrained")
    for label, members in group(runs).items():
        style = _style(members)
        _series(axes[0], members, label, style,
                lambda r: ([row["epoch"] for row in r["rows"]], [100 * row["test_acc"] for row in r["rows"]]))
        _series(axes[1], members, label, style,
                lambda r: ([row["epoch"] for row in r["rows"]], [row["test_loss"] for row in r["rows"]]))
        if val:
            _series(axes[2], members, label, style,
                    lambda r: ([row["epoch"] for row in r["rows"]], [100 * row["val_acc"] for row in r["rows"]]))
            for r in members:
                chosen = selected_row(r)
                axes[0].plot([chosen["epoch"]], [100 * chosen["test_acc"]], marker="D", ms=7, mfc="none",
                             color=style["color"], ls="none", gid=f"selected:{r['dir']}")
    axes[0].set(ylabel="test accuracy (%)", title="test accuracy (◇: at the validation-best epoch)" if val
                else "test accuracy")
    if val:
        axes[2].set(ylabel="validation accuracy (%)", title="validation accuracy (selects the epoch)")
    axes[1].set(ylabel="test loss (cross-entropy, log scale)", title="test loss", yscale="log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")  # 0.15, not 1.5×10⁻¹
    axes[1].yaxis.set_major_formatter(plain)
    low, high = axes[1].get_ylim()
    if high / low < 10:  # within a decade only minor ticks fall in range: label them
        axes[1].yaxis.set_minor_formatter(plain)
    last = max(row["epoch"] for r in runs for row in r["rows"])
    for ax in axes:
        _epochs_axis(ax, last)
    _legend_below(fig, axes)
    fig.suptitle(title(runs), wrap=True)
    return fig


def accuracy_by_rule(runs: list[dict]) -> Figure | None:
    """The tables' figure as a picture: one panel per data set and model, a column per rule
    (label as in `group`), a small dot per seed (gid 'run:DIR') and the mean with a ±1 std bar
    (gid 'mean:LABEL'), its value written beside it. What a one-epoch grid's learning curves
    cannot show. None for runs without test accuracy (language models)."""
    runs = [r for r in runs if all("test_acc" in row for row in r["rows"])]
    if not runs:
        return None
    panels = [group(members) for members in _cells(runs).values()]  # per cell: label -> runs
    val = all("val_acc" in row for r in runs for row in r["rows"])
    cols = 2 if len(panels) == 4 else min(len(panels), 3)  # four panels as 2 x 2, not a strip
    rows = math.ceil(len(panels) / cols)
    width = max(5.0, 1.0 + 0.9 * max(map(len, panels)))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 4.0 * rows + 0.4), layout="constrained", squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, groups in zip(axes.flat, panels):
        config = next(iter(groups.values()))[0]["config"]
        for x, (label, rs) in enumerate(groups.items()):
            style = _style(rs)
            ys = [100 * selected_row(r)["test_acc"] for r in rs]
            offsets = np.linspace(-0.12, 0.12, len(rs)) if len(rs) > 1 else [0.0]
            for r, y, dx in zip(rs, ys, offsets):
                ax.plot([x + 0.18 + dx], [y], ls="none", marker=style["marker"], color=style["color"], ms=4,
                        alpha=0.5, gid=f"run:{r['dir']}")
            mean = float(np.mean(ys))
            std = float(np.std(ys, ddof=1)) if len(ys) > 1 else 0.0
            bar = ax.errorbar([x], [mean], yerr=[std], ls="none", marker=style["marker"], color=style["color"], ms=8,
                              capsize=4, lw=1.5)
            bar.lines[0].set_gid(f"mean:{label}")  # the marker, not the caps
            ax.annotate(f"{mean:.1f}" + (f" ± {std:.1f}" if len(ys) > 1 else ""), (x, mean), xytext=(-8, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=8)
        ax.set_xticks(range(len(groups)), list(groups), rotation=30 if max(map(len, groups)) > 8 else 0)
        ax.set_xlim(-1.1, len(groups) - 0.4)  # room on the left for the first mean's value
        ax.set(title=f"{config['dataset']} · {config['model']}", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3, axis="y")
    what = "at the validation-best epoch" if val else "best over epochs (selected on test: the paper protocol)"
    fig.suptitle(f"test accuracy {what}; mean ± std over seeds, a dot per seed\n{title(runs)}", wrap=True)
    return fig


def _legend_below(fig: Figure, axes) -> None:
    """One legend for the panels, below them, where it hides no curve (matplotlib >= 3.7; older:
    in the first panel)."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        try:
            fig.legend(handles.values(), handles.keys(), fontsize=8, loc="outside lower center",
                       ncol=min(len(handles), 4 if max(map(len, handles)) < 40 else 2))
        except ValueError:
            axes[0].legend(handles.values(), handles.keys(), fontsize=8)


def block_name(point: str) -> str:
    """A feedback point's module path as Python spells it: '3' -> 'model[3]', 'blocks.0.point' -> 'model.blocks[0].point'."""
    parts = [f"[{p}]" if p.isdigit() else f".{p}" for p in point.split(".")] if point else []
    return "model" + "".join(parts)


def _trace(r: dict, key: str, i: int):
    """(steps, values) of diagnostic `key` at feedback point i: every measurement when the run
    recorded them (alignment_trace), else the epoch means at each epoch's last step."""
    xs, ys = [], []
    for row in r["rows"]:
        if row.get("alignment_trace"):
            for m in row["alignment_trace"]:
                if key in m and i < len(m[key]):
                    xs.append(m["step"])
                    ys.append(_nan(m[key][i]))
        elif key in row and i < len(row[key]):
            xs.append(row["step"])
            ys.append(_nan(row[key][i]))
    return xs, ys


def alignment_curves(runs: list[dict], key: str = "alignment") -> Figure | None:
    """One panel per hidden block: diagnostic `key` per measurement per rule; None if no run logged it."""
    runs = [r for r in runs if key in r["rows"][0]]
    if not runs:
        return None
    points = max(len(r["rows"][0][key]) for r in runs)
    names = max((r["rows"][0].get("alignment_points", []) for r in runs), key=len)
    fig, axes = plt.subplots(1, points, figsize=(4.6 * points, 4.0), layout="constrained", squeeze=False)
    for label, members in group(runs).items():
        style = _style(members)
        for i, ax in enumerate(axes[0]):
            kept = [m for m in members if not all(math.isnan(v) for v in _trace(m, key, i)[1])]
            if kept:
                _series(ax, kept, label, style, lambda r, i=i: _trace(r, key, i))
    what, unit = DIAGNOSTICS.get(key, (key, key))
    if key == "alignment":  # say how a batch was pooled; runs from before the choice used the whole batch
        measures = {r["config"].get("align_measure", "batch") for r in runs}
        unit = {"sample": "cosine, mean over samples", "batch": "cosine over the whole batch"}.get(
            measures.pop(), unit) if len(measures) == 1 else "cosine (measures differ between runs)"
    for i, ax in enumerate(axes[0]):
        name = f" ({block_name(names[i])})" if i < len(names) else ""
        ax.set(xlabel="training step", ylabel=unit, title=f"hidden block {i + 1}{name}")
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0])
    fig.suptitle(f"{what}\n{title(runs)}", wrap=True)  # two lines: a long title fits the figure
    return fig


def _cells(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs split by data set and model: one figure each, so no figure mixes data sets."""
    cells: dict[str, list[dict]] = {}
    for r in runs:
        cells.setdefault(f"{r['config']['dataset']}-{r['config']['model']}", []).append(r)
    return cells


def plot_all(paths, out: str | Path) -> list[Path]:
    """Write accuracy.png (every data set and model, side by side), learning_curves.png and one
    PNG per logged diagnostic into `out` (the last two with a -DATASET-MODEL suffix each when
    the runs span several)."""
    runs = load_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = _cells(runs)
    written = []
    fig = accuracy_by_rule(runs)  # every cell in one figure, side by side
    if fig is not None:
        fig.savefig(out / "accuracy.png", dpi=80)
        plt.close(fig)
        written.append(out / "accuracy.png")
    for cell, members in cells.items():
        suffix = f"-{cell}" if len(cells) > 1 else ""
        figures = {"learning_curves": learning_curves(members)}
        figures.update({key: alignment_curves(members, key) for key in DIAGNOSTICS})
        for name, fig in figures.items():
            if fig is not None:
                path = out / f"{name}{suffix}.png"
                fig.savefig(path, dpi=80)
                plt.close(fig)
                written.append(path)
    return written
