"""Headless plots of runs and grids: learning curves and alignment per layer.

Each function returns the matplotlib Figure. Every run is drawn as a thin line
(gid 'run:DIR'); runs that differ only in the seed are grouped and, when there
are several, drawn again as their mean (gid 'mean:LABEL') with a ±1 std band.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..errors import DflearnError  # noqa: E402
from .grid import NOT_A_CELL, _rule_key, rule_label  # noqa: E402

DIAGNOSTICS = {"alignment": "signal alignment with BP (cosine)",
               "update_alignment": "weight-update alignment with BP (cosine)",
               "feedback_angle": "angle between B_i and (W_L...W_{i+1})^T (degrees)"}


def load_runs(paths) -> list[dict]:
    """Run directories, or grid folders holding them; each with its config and epoch rows."""
    runs = []
    for path in map(Path, paths):
        dirs = [path] if (path / "metrics.jsonl").exists() else sorted(p.parent for p in path.glob("*/metrics.jsonl"))
        if not dirs:
            raise DflearnError(f"{path} is neither a run directory nor a grid folder (no metrics.jsonl found)")
        for d in dirs:
            rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
            if rows:
                runs.append({"dir": str(d), "config": json.loads((d / "config.json").read_text()), "rows": rows})
    if not runs:
        raise DflearnError("no finished epoch in the given runs; nothing to plot")
    return runs


def group(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs equal but for the seed, labelled by rule (and whatever else varies)."""
    def cell(c):
        return {k: v for k, v in c.items() if k not in NOT_A_CELL + ("rule", "rule_options")}
    varying = [k for k in cell(runs[0]["config"]) if len({json.dumps(r["config"][k]) for r in runs}) > 1]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        label = " ".join([rule_label(r["config"])] + [f"{r['config'][k]}" for k in varying])
        groups.setdefault(label, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: _rule_key(kv[0])))


def _series(ax, runs: list[dict], label: str, color, value) -> None:
    """One thin line per run, then mean and band if there are several."""
    curves = []
    for r in runs:
        x = [row["epoch"] for row in r["rows"]]
        y = [value(row) for row in r["rows"]]
        curves.append((x, y))
        ax.plot(x, y, color=color, lw=2 if len(runs) == 1 else 0.6, alpha=1 if len(runs) == 1 else 0.35,
                label=label if len(runs) == 1 else None, gid=f"run:{r['dir']}")
    if len(runs) > 1:
        n = min(len(x) for x, _ in curves)
        ys = np.array([y[:n] for _, y in curves], dtype=float)
        mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0, ddof=1)
        ax.plot(curves[0][0][:n], mean, color=color, lw=2, label=f"{label} (n={len(runs)})", gid=f"mean:{label}")
        ax.fill_between(curves[0][0][:n], mean - std, mean + std, color=color, alpha=0.2, lw=0)


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def learning_curves(runs: list[dict]) -> Figure:
    """Test accuracy and test loss per epoch."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, members) in enumerate(group(runs).items()):
        for ax, key in zip(axes, ("test_acc", "test_loss")):
            _series(ax, members, label, colors[k % len(colors)], lambda row, key=key: row[key])
    for ax, title in zip(axes, ("test accuracy", "test loss")):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def alignment_curves(runs: list[dict], key: str = "alignment") -> Figure | None:
    """One panel per feedback point: the epoch means of diagnostic `key` per rule; None if no run logged it."""
    runs = [r for r in runs if key in r["rows"][0]]
    if not runs:
        return None
    points = max(len(r["rows"][0][key]) for r in runs)
    names = max((r["rows"][0].get("alignment_points", []) for r in runs), key=len)
    fig, axes = plt.subplots(1, points, figsize=(4.5 * points, 3.8), layout="constrained", squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, members) in enumerate(group(runs).items()):
        for i, ax in enumerate(axes[0]):
            kept = [m for m in members if i < len(m["rows"][0][key]) and
                    not all(_nan(row[key][i]) != _nan(row[key][i]) for row in m["rows"])]
            if kept:
                _series(ax, kept, label, colors[k % len(colors)], lambda row, i=i: _nan(row[key][i]))
    for i, ax in enumerate(axes[0]):
        ax.set(xlabel="epoch", title=f"layer {i + 1}" + (f" (point '{names[i]}')" if i < len(names) else ""))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(DIAGNOSTICS.get(key, key))
    return fig


def plot_all(paths, out: str | Path) -> list[Path]:
    """Write learning_curves.png and one PNG per logged diagnostic into `out`."""
    runs = load_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"learning_curves": learning_curves(runs)}
    figures.update({key: alignment_curves(runs, key) for key in DIAGNOSTICS})
    written = []
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(out / f"{name}.png", dpi=80)
            plt.close(fig)
            written.append(out / f"{name}.png")
    return written
