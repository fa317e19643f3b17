"""Does a preset's run train at a learning rate? The training loss over the first steps.

    DFLEARN_DATA_DIR=../shared/data PYTHONPATH=src python scripts/lr_probe.py dkp-cifar100 dfa 0.01
    ... dkp-cifar100 dfa 0.1 --init kaiming_n

Takes the preset's run for RULE at seed 0 (its model, data, optimiser, batch size; budget
--budget), changes only lr (and the feedback init with --init), takes --steps steps and prints the
mean training loss of every 5. It stops at the first loss above 50 or not finite, which it
reports as a divergence, with the step. A probe for choosing a learning rate before a grid,
on the training loss only: it never reads validation or test data, and chooses nothing itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time

from dflearn import DflearnError, Trainer, train_step
from dflearn.experiments.presets import get_preset


def probe(preset: str, rule: str, lr: float, budget: str, steps: int, init: str | None) -> str:
    configs = [c for _, c in get_preset(preset).grid(budget).runs()]  # refuses an unknown preset
    runs = [c for c in configs if c.rule == rule and c.seed == 0]
    if not runs:
        raise DflearnError(f"preset {preset} has no {rule} run at seed 0; its rules are "
                           f"{', '.join(sorted({c.rule for c in configs}))}")
    extra = {"rule_options": {**runs[0].rule_options, "init": init}} if init else {}
    config = dataclasses.replace(runs[0], epochs=1, max_steps_per_epoch=0, lr=lr, **extra)
    t = Trainer(config, tempfile.mkdtemp() + "/probe", progress=False, log=lambda *a: None)
    losses, start = [], time.time()
    while len(losses) < steps:  # as many passes over the training split as the steps need
        for x, y in t.train_batches:
            loss, _ = train_step(t.model, t.rule, x, y, t.optimizer, t.feedback_optimizer)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]) or losses[-1] > 50:
                return f"{rule} lr {lr:g}: diverged at step {len(losses)}"
            if len(losses) == steps:
                break
    means = " ".join(f"{sum(losses[i:i + 5]) / len(losses[i:i + 5]):.2f}" for i in range(0, steps, 5))
    return f"{rule} lr {lr:g}: loss by 5 steps {means} ({time.time() - start:.0f} s)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preset")
    p.add_argument("rule")
    p.add_argument("lr", type=float)
    p.add_argument("--budget", default="short", choices=["smoke", "short", "paper"])
    p.add_argument("--steps", type=int, default=70)
    p.add_argument("--init", default=None, help="the feedback init instead of the preset's (e.g. kaiming_n)")
    args = p.parse_args()
    try:
        print(probe(args.preset, args.rule, args.lr, args.budget, args.steps, args.init), flush=True)
    except DflearnError as exc:
        print(f"lr_probe: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
