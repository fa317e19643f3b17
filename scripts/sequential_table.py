"""MNIST table for the sequential feedback family beside the direct one.

    DFLEARN_DATA_DIR=../shared/data PYTHONPATH=src python scripts/sequential_table.py

Trains 784-1024-1024-10 (mlp-mnist) for 2 epochs, Adam lr 1e-4, batch 64, seed 0,
under bp, fa, usf, frsf, kp, wm, dfa and las, one after another on one thread,
and prints the final test accuracy per rule, then the angle between B and W^T
of every substituted layer over training for fa, kp and wm (docs/sequential.md).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from dflearn import Config, Trainer, feedback_angles, train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", default="bp,fa,usf,frsf,kp,wm,dfa,las")
    p.add_argument("--angles", default="fa,kp,wm", help="rules whose B-W^T angle is traced")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--angle-every", type=int, default=200, help="steps between angle measurements")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)  # shared machine
    accuracy, traces = {}, {}
    for rule in args.rules.split(","):
        config = Config(rule=rule, dataset="mnist", model="mlp-mnist", epochs=args.epochs, lr=1e-4,
                        batch_size=64, seed=args.seed, device="cpu")
        with tempfile.TemporaryDirectory() as out:
            t = Trainer(config, out, progress=False, log=lambda *a: None)
            trace, step, start = [], 0, time.perf_counter()
            for _ in range(args.epochs):
                t.model.train()
                for x, y in t.train_batches:
                    if rule in args.angles.split(",") and step % args.angle_every == 0:
                        trace.append((step, feedback_angles(t.model, t.rule)))
                    train_step(t.model, t.rule, x, y, t.optimizer, t.feedback_optimizer)
                    step += 1
            if rule in args.angles.split(","):
                trace.append((step, feedback_angles(t.model, t.rule)))
                traces[rule] = trace
            accuracy[rule] = t.evaluate()["test_acc"]
        print(f"{rule}: test accuracy {accuracy[rule]:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\n| rule | MNIST test accuracy ({args.epochs} epochs) |\n|---|---|")
    for rule, acc in accuracy.items():
        print(f"| {rule} | {acc:.4f} |")
    for rule, trace in traces.items():
        layers = list(trace[0][1])
        print(f"\nangle(B, W^T) in degrees, {rule}\n\n| step | " + " | ".join(layers) + " |")
        print("|---" * (len(layers) + 1) + "|")
        for step, angles in trace:
            print(f"| {step} | " + " | ".join(f"{angles[n]:.1f}" for n in layers) + " |")


if __name__ == "__main__":
    main()
