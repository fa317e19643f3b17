"""Where a rule's step spends its time, against BP's: the profile behind bench.md's ratios.

    PYTHONPATH=src:benchmarks python benchmarks/profile_step.py --model mlp-mnist --rules dfa,las,ltas

Prints, for batch 64 at --threads:
  1. the step time of BP and each rule (medians of interleaved rounds, as bench.py);
  2. the engine's limit in place: a DFA whose signals cost nothing (the first step's g_i kept),
     timed in the same rounds; and the *time* limit of a direct rule: BP's step less what a
     cut drops (the input gradient of the layer that reads each cut point's tensor, timed on
     its own at the net's shape) plus what it adds (the projections e B_i). The FLOP ratio
     counts every multiply-add alike; the time limit weighs each at the speed this CPU runs
     its shape;
  3. torch.profiler's per-step self time of each op (top ops), BP beside the rules, and the
     remainder outside any op (Python, dispatch, autograd engine).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from bench import Setup, Variant, batch, round_robin
from dflearn.rules.dfa import DFA


class FreeSignalDFA(DFA):
    """DFA whose signals cost nothing: the first step's g_i, kept and injected again. Its step
    is everything a direct rule's step must do (forward with cuts, e, one backward, Adam) and
    nothing else, so its time over BP's is the limit of the engine, measured in place."""

    name = "dfa-free-signals"
    kept = None

    def signals(self, fwd):
        if self.kept is None:
            self.kept = [g.clone() if g is not None else None for g in super().signals(fwd)]
        return self.kept


def timed(fn, repeats=200, warmup=20):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def time_limit(setup: Setup, x) -> tuple[float, float]:
    """(seconds BP spends on the input gradients that a direct rule does not compute, seconds
    of the projections e B_i it adds), each matmul or convolution timed on its own at the net's
    shapes. A cut point's tensor h_i is read by the first layer of the next block (or the head),
    so BP's gradient with respect to that layer's input is the work a cut drops."""
    layout, modules = setup.rule.layout, dict(setup.model.named_modules())
    readers = [p.block[0] for p in layout.points[1:] if p.block] + list(layout.head[:1])
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes[name] = (inputs[0].shape, output.shape)
        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for n in readers]
    with torch.no_grad():
        setup.model(x)
    for h in hooks:
        h.remove()
    dropped = []
    for n in readers:
        m, (in_shape, out_shape) = modules[n], shapes[n]
        g, w = torch.randn(out_shape), m.weight.detach().clone()
        if isinstance(m, nn.Linear):
            dropped.append(lambda g=g, w=w: g @ w)
        elif isinstance(m, nn.Conv2d):
            dropped.append(lambda g=g, w=w, m=m, s=in_shape: torch.nn.grad.conv2d_input(
                s, w, g, m.stride, m.padding, m.dilation, m.groups))
        else:
            print(f"  ({n}: a {type(m).__name__}, its input gradient not timed)")
    e = torch.randn(layout.rows(len(x)), layout.num_outputs)
    added = [lambda b=torch.randn(layout.num_outputs, p.features): e @ b for p in layout.points[:-1]]
    return sum(timed(f) for f in dropped), sum(timed(f) for f in added)


def op_table(setup: Setup, x, y, steps: int) -> tuple[dict[str, float], float]:
    """Self CPU time per op per step (s), and the step's wall time under the profiler."""
    for _ in range(10):
        setup.step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            setup.step(x, y)
        wall = (time.perf_counter() - t) / steps
    ops = {e.key: e.self_cpu_time_total / 1e6 / steps for e in prof.key_averages()}
    return ops, wall


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp-mnist")
    p.add_argument("--rules", default="dfa,las,ltas")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--profile-steps", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    x, y = batch(args.model, device)
    rules = args.rules.split(",")
    setups = [Setup(args.model, Variant(r, r), device) for r in ["bp"] + rules]
    free = Setup(args.model, Variant("dfa-free-signals", "dfa", cls=FreeSignalDFA), device)
    times = round_robin(setups + [free], x, y, 20, args.repeats, device)
    free_ratio = statistics.median(a / b for a, b in zip(times.pop(), times[0]))
    bp_ms = 1000 * statistics.median(times[0])
    print(f"{args.model}, batch {len(x)}, {args.threads} threads, torch {torch.__version__}")
    print(f"step ms (median of {args.repeats} interleaved rounds): bp {bp_ms:.2f}  " + "  ".join(
        f"{r} {1000 * statistics.median(t):.2f} ({statistics.median(a / b for a, b in zip(t, times[0])):.3f})"
        for r, t in zip(rules, times[1:])))
    print(f"DFA with free signals (the engine's limit, in place): {free_ratio:.3f} x BP")
    dropped, added = time_limit(setups[0], x)
    print(f"time limit of a direct rule: BP less its input gradients at the cut points ({1000 * dropped:.2f} ms) plus the "
          f"projections ({1000 * added:.3f} ms) = {(bp_ms / 1000 - dropped + added) / (bp_ms / 1000):.3f} x BP")
    tables = [op_table(s, x, y, args.profile_steps) for s in setups]
    keys = sorted({k for ops, _ in tables for k in ops}, key=lambda k: -max(ops.get(k, 0) for ops, _ in tables))
    print(f"\nself time per step, us (torch.profiler, {args.profile_steps} steps; its own overhead inflates small ops)")
    print(f"{'op':<40}" + "".join(f"{n:>10}" for n in ["bp"] + rules))
    for k in keys[:args.top]:
        print(f"{k[:40]:<40}" + "".join(f"{1e6 * ops.get(k, 0):>10.0f}" for ops, _ in tables))
    print(f"{'(other ops)':<40}" + "".join(f"{1e6 * sum(v for k, v in ops.items() if k not in keys[:args.top]):>10.0f}"
                                            for ops, _ in tables))
    print(f"{'(outside ops: Python, engine)':<40}" + "".join(f"{1e6 * (wall - sum(ops.values())):>10.0f}"
                                                             for ops, wall in tables))
    print(f"{'step wall under the profiler':<40}" + "".join(f"{1e6 * wall:>10.0f}" for _, wall in tables))


if __name__ == "__main__":
    main()
