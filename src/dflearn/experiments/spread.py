"""Which differences between rules exceed the seeds' spread (appended to results.md).

Two rules of one cell (runs equal but for the rule and the seed) with means m_a, m_b
and sample stds s_a, s_b over their seeds differ, for this table, when

    |m_a - m_b| > 2 sqrt(s_a² + s_b²),

twice the std of the difference of one run of each: a conservative bar (the std of the
difference of the *means* would divide by the seeds), the one REPRODUCTION.md judges the
papers' claims by. Beside it, the paired view: a seed gives every rule the same initial
network and batch order, so "a ahead on k of n seeds" compares like with like.

The figure is the table's own: the test accuracy at the validation-best epoch when every
run has a validation split, else the best test accuracy over epochs (the paper protocol);
language-model runs: the final test bits per character (lower is better).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .grid import NOT_A_CELL, _mean_std, _rule_key, collect, follows_the_rule, rule_label, shown_settings

FIGURES = {  # summary key: (what the section calls it, scale to the unit shown, the unit, +1: higher is better)
    "final_test_bpc": ("final test bits per character", 1.0, "bpc", -1),
    "test_accuracy_at_val_best": ("test accuracy at the validation-best epoch", 100.0, "points", 1),
    "best_test_accuracy": ("best test accuracy over epochs (the paper protocol)", 100.0, "points", 1),
}


def figure(runs: list[dict]) -> str:
    """The summary key the comparison uses (see the module docstring)."""
    for key in FIGURES:
        if runs and all(r.get(key) is not None for r in runs):
            return key
    return "best_test_accuracy"


def differences(runs: list[dict]) -> list[dict]:
    """Every pair of rules within a cell that both have at least two seeds: the difference
    of their means, the bar it is judged by, the verdict, and the paired count."""
    key = figure(runs)
    _, scale, _, better = FIGURES[key]
    configs = [r["config"] for r in runs]
    keys = dict.fromkeys(k for c in configs for k in c)
    ignored = set(NOT_A_CELL) | {"rule", "rule_options"} | {k for k in keys if follows_the_rule(k, configs)}
    shown = shown_settings(configs)  # the table's columns
    cells: dict[str, dict[str, dict[int, float]]] = {}
    for r in runs:
        cell = json.dumps({k: v for k, v in r["config"].items() if k not in ignored}, sort_keys=True)
        cells.setdefault(cell, {}).setdefault(rule_label(r["config"]), {})[r["config"]["seed"]] = scale * r[key]
    out = []
    for cell, by_rule in cells.items():
        config = json.loads(cell)
        rules = sorted((x for x in by_rule if len(by_rule[x]) > 1), key=_rule_key)
        for i, a in enumerate(rules):
            for b in rules[i + 1:]:
                (ma, sa), (mb, sb) = _mean_std(list(by_rule[a].values())), _mean_std(list(by_rule[b].values()))
                bar = 2 * math.sqrt(sa ** 2 + sb ** 2)
                seeds = sorted(set(by_rule[a]) & set(by_rule[b]))
                out.append({**{k: config.get(k) for k in shown}, "a": a, "b": b, "difference": ma - mb, "bar": bar,
                            "apart": abs(ma - mb) > bar, "paired_seeds": len(seeds),
                            "better": better * (ma - mb) > 0,
                            "a_ahead": sum(better * (by_rule[a][s] - by_rule[b][s]) > 0 for s in seeds)})
    return out


def markdown(rows: list[dict], key: str) -> str:
    name, _, unit, better = FIGURES[key]
    shown = [k for k in rows[0] if k not in ("a", "b", "difference", "bar", "apart", "better", "paired_seeds", "a_ahead")]
    head = shown + ["a", "b", f"a − b ({unit})", "bar: 2 sd of the difference", "verdict", "a ahead on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        verdict = ("a better" if r["better"] else "a worse") if r["apart"] else "within the spread"
        lines.append("| " + " | ".join([str(r[k]) for k in shown] + [
            r["a"], r["b"], f"{r['difference']:+.2f}", f"{r['bar']:.2f}", verdict,
            f"{r['a_ahead']} of {r['paired_seeds']} seeds"]) + " |")
    lines.append(f"\nThe figure: {name}. A difference counts when it exceeds twice the std of the difference of "
                 "one run of each rule, 2 √(s_a² + s_b²); 'a ahead on' pairs the runs by seed (the same initial "
                 "network and batch order), counting the seeds where a is better." + (" Lower is better." if better < 0 else ""))
    return "\n".join(lines) + "\n"


def write(folder: str | Path) -> list[dict]:
    """Append the pairs to results.md; returns them ([] when no two rules of a cell have two seeds)."""
    from ..training.rundir import atomic_write

    folder = Path(folder)
    runs = collect(folder)
    rows = differences(runs)
    if rows:
        text = ((folder / "results.md").read_text() + "\n## Differences between rules against the seeds' spread\n\n"
                + markdown(rows, figure(runs)))
        atomic_write(folder / "results.md", lambda f: f.write(text.encode()))
    return rows
