"""Choosing each rule's learning rate on the validation split (`compare --lrs`).

For every cell of a table that differs from others only in `lr`, the winner is
the lr with the highest validation accuracy at its validation-best epoch, mean
over seeds (ties: the smaller lr). Its reported figure is the test accuracy at
that same epoch: neither the lr nor the epoch saw the test set. Beside it, for
contrast, the paper protocol's figure (best test accuracy over lrs and epochs).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import DflearnError
from .grid import _pct, _rule_key


def winners(rows: list[dict]) -> list[dict]:
    """One row per rule (and other varied field), the lr chosen on validation."""
    if not rows or "lr" not in rows[0]:
        return []  # a single lr: nothing to choose
    if any(math.isnan(r["val_mean"]) for r in rows):
        raise DflearnError("choosing the learning rate on validation needs a validation split in every run; "
                           "run the grid with --val-fraction above 0")
    # feedback_lr follows lr where the rule has no own default (it is then not a separate choice)
    fixed = [k for k in rows[0] if k not in ("lr", "feedback_lr", "seeds", "epochs") and not k.endswith(("_mean", "_std"))]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps([r[k] for k in fixed]), []).append(r)
    out = []
    for members in groups.values():
        best = max(sorted(members, key=lambda r: r["lr"]), key=lambda r: r["val_mean"])  # first max: smaller lr
        paper = max(members, key=lambda r: r["best_mean"])
        out.append({**{k: best[k] for k in fixed}, "lr": best["lr"], "lrs": sorted(r["lr"] for r in members),
                    "seeds": best["seeds"], "val_mean": best["val_mean"], "val_std": best["val_std"],
                    "selected_mean": best["selected_mean"], "selected_std": best["selected_std"],
                    "paper_lr": paper["lr"], "paper_mean": paper["best_mean"], "paper_std": paper["best_std"]})
    out.sort(key=lambda r: (tuple(json.dumps(r[k]) for k in fixed if k != "rule"), _rule_key(r["rule"])))
    return out


def markdown(chosen: list[dict]) -> str:
    fixed = [k for k in chosen[0] if k not in ("lr", "lrs", "seeds", "paper_lr") and not k.endswith(("_mean", "_std"))]
    head = fixed + ["lr chosen on validation", "of lrs", "seeds", "val acc (%)", "test acc at val-best (%)",
                    "paper protocol: lr, best test acc (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in chosen:
        lines.append("| " + " | ".join([str(r[k]) for k in fixed] + [
            f"{r['lr']:g}", ", ".join(f"{x:g}" for x in r["lrs"]), str(r["seeds"]), _pct(r["val_mean"], r["val_std"]),
            _pct(r["selected_mean"], r["selected_std"]), f"{r['paper_lr']:g}: {_pct(r['paper_mean'], r['paper_std'])}"])
            + " |")
    lines.append("\nEach rule's learning rate is the one with the best mean validation accuracy (at each run's "
                 "validation-best epoch); the test accuracy is that of the same runs at the same epochs. The last "
                 "column chooses lr and epoch on the test set, as the LAS paper's grid search did (optimistic).")
    return "\n".join(lines) + "\n"


def write(folder: str | Path, rows: list[dict]) -> list[dict]:
    """Append the winners to results.md and write lr_selection.json; returns them ([] for a single lr)."""
    from ..training.rundir import atomic_write

    chosen = winners(rows)
    if chosen:
        folder = Path(folder)
        text = (folder / "results.md").read_text() + "\n## Learning rate chosen on validation\n\n" + markdown(chosen)
        atomic_write(folder / "results.md", lambda f: f.write(text.encode()))
        data = json.dumps(chosen, indent=2) + "\n"
        atomic_write(folder / "lr_selection.json", lambda f: f.write(data.encode()))
    return chosen
