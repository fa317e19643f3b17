"""dflearn benchmark: how fast a training step is under every rule, against BP.

    PYTHONPATH=src DFLEARN_DATA_DIR=../shared/data python benchmarks/bench.py
    PYTHONPATH=src python benchmarks/bench.py --quick --out /tmp/bench   # seconds, for the tests

Sections (all timings are medians of interleaved repeats, after warm-up):
  steps    a full dflearn.train_step (forward, signals, fused Adam on both sides),
           every rule round-robin with BP in the same run, as a ratio to BP;
  before/after  each optimisation against its straightforward version (naive.py);
  sdfa     sparse-DFA projection time as d_L grows, gather vs dense;
  epoch    an MLP-MNIST epoch through Trainer (data pipeline included) and the pipeline's share;
  memory   peak memory of each rule's training (last, as its allocator setting slows allocations).
Writes bench.json and bench.md to --out.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import dflearn
from dflearn import make_rule, train_step
from dflearn.feedback.layout import Layout, Point
from dflearn.feedback.operators import DenseFeedback, SparseFeedback
from dflearn.models import MODELS, build_model
from dflearn.training import Config, Trainer
from dflearn.training.trainer import make_optimizer

import naive

RULES = ["bp"] + sorted(r for r in dflearn.RULES if r != "bp")  # every registered rule, BP first
MODEL_INPUTS = {"mlp-mnist": (1, 28, 28), "mlp-cifar": (3, 32, 32), "conv3": (3, 32, 32), "resnet18": (3, 32, 32),
                "vit": (3, 32, 32), "gpt": (128,), "gpt-sublayer": (128,)}
TEXT = {"gpt": 65, "gpt-sublayer": 65}  # character models: ids of one context window, Tiny Shakespeare's vocabulary
LR = 1e-4


# ----------------------------------------------------------------- memory
class Memory:
    """Peak memory above what was live at `start()`. CUDA: the allocator's peak.
    CPU: the process's peak RSS (VmHWM, reset through /proc/self/clear_refs), with
    glibc's mmap threshold fixed so that every freed tensor leaves the RSS. That makes
    each large allocation fault in fresh pages, so it is set up after all timings."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.cpu_ok = False
        if not self.cuda:
            try:
                self.libc = ctypes.CDLL("libc.so.6")
                self.libc.mallopt(-3, 1 << 17)  # M_MMAP_THRESHOLD: 128 KiB, no adaptation
                self._reset()
                self.cpu_ok = True
            except OSError:
                pass

    @staticmethod
    def _reset():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1)) * 1024

    def start(self) -> int | None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        if not self.cpu_ok:
            return None
        self.libc.malloc_trim(0)  # hand back freed heap pages, so that reusing them counts again
        self._reset()
        return self._status("VmRSS")

    def peak_above(self, base: int | None) -> int | None:
        if base is None:
            return None
        return (torch.cuda.max_memory_allocated() if self.cuda else self._status("VmHWM")) - base


# ----------------------------------------------------------------- setups
@dataclass
class Variant:
    """One way of training: a rule (or a naive class), a step function, an Adam flavour."""

    label: str
    rule: str
    step: str = "library"  # library | hook | two_pass | sync | autograd_error
    adam: str = "fused"  # fused | foreach
    cls: type | None = None


STEPS: dict[str, Callable] = {
    "library": lambda s, x, y: train_step(s.model, s.rule, x, y, s.opt, s.fopt),
    "hook": lambda s, x, y: naive.hook_dfa_step(s.model, s.rule, x, y, s.opt),
    "two_pass": lambda s, x, y: naive.two_pass_step(s.model, s.rule, x, y, s.opt, s.fopt),
    "sync": lambda s, x, y: train_step(s.model, s.rule, x, y, s.opt, s.fopt)[0].item(),
    "autograd_error": lambda s, x, y: train_step(s.model, s.rule, x, y, s.opt, s.fopt, naive.autograd_error),
}


class Setup:
    def __init__(self, model_name: str, variant: Variant, device: torch.device, seed: int = 0):
        torch.manual_seed(seed)
        shape = MODEL_INPUTS[model_name]
        self.variant = variant
        self.model = build_model(model_name, shape, TEXT.get(model_name, 10)).to(device)
        example = torch.zeros(1, *shape, device=device, dtype=torch.long if model_name in TEXT else torch.float)
        rule = variant.cls(self.model, example) if variant.cls else make_rule(variant.rule, self.model, example)
        self.rule = rule.to(device)
        adam = naive.foreach_adam if variant.adam == "foreach" else (lambda p, lr: make_optimizer("adam", p, lr, 0.0))
        self.opt = adam(self.model.parameters(), LR)
        self.fopt = adam(self.rule.parameters(), LR) if list(self.rule.parameters()) else None
        self.step_fn = STEPS[variant.step]

    def step(self, x, y):
        self.step_fn(self, x, y)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


MIN_TIMING = 0.05  # s: a timing this short is dominated by the machine's jitter, so small nets time several steps


def round_robin(setups: list[Setup], x, y, warmup: int, repeats: int, device):
    """A B C A B C ...: the step times (s) of each setup after warm-up. Each timing runs
    enough steps of one setup to last MIN_TIMING (from the first setup's warm-up) and
    reports their mean, so a 10 ms step is timed over 5 steps and a 500 ms one over 1."""
    times, steps = [[] for _ in setups], 1
    for r in range(warmup + repeats):
        for i, s in enumerate(setups):
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                s.step(x, y)
            sync(device)
            elapsed = (time.perf_counter() - t) / steps
            if r >= warmup:
                times[i].append(elapsed)
            elif i == 0 and r == warmup - 1:
                steps = max(1, math.ceil(MIN_TIMING / elapsed))
    return times


def batch(model_name, device, n=64):
    g = torch.Generator().manual_seed(0)
    if model_name in TEXT:  # next-character prediction at every position of a window
        ids = torch.randint(0, TEXT[model_name], (n, MODEL_INPUTS[model_name][0] + 1), generator=g)
        return ids[:, :-1].to(device), ids[:, 1:].to(device)
    x = torch.randn(n, *MODEL_INPUTS[model_name], generator=g).to(device)
    return x, torch.randint(0, 10, (n,), generator=g).to(device)


def median_ms(ts):
    return 1000 * statistics.median(ts)


def ratio_noise(ts, base):
    """Half the interquartile range of the per-round ratios: how much the ratio moves with load."""
    rs = sorted(a / b for a, b in zip(ts, base))
    if len(rs) < 4:
        return (rs[-1] - rs[0]) / 2
    q = statistics.quantiles(rs, n=4)
    return (q[2] - q[0]) / 2


# ----------------------------------------------------------------- sections
def bench_steps(model_name, rules, args, device, log):
    """Every rule against BP; rules in groups so that at most a few nets live at once,
    DFA, LAS and LTAS in one group so their ratios to each other are interleaved too."""
    x, y = batch(model_name, device)
    groups = [[r for r in ("dfa", "las", "ltas") if r in rules]]
    rest = [r for r in rules if r not in groups[0] and r != "bp"]
    groups += [rest[i:i + 3] for i in range(0, len(rest), 3)]
    out = {}
    for group in [g for g in groups if g]:
        for name, row in _step_group(model_name, ["bp"] + group, x, y, args, device, log):
            if name == "bp":
                out.setdefault("bp_runs", []).append(row["ms"])
                out.setdefault("bp", row)
            else:
                out[name] = row
    return out


def _step_group(model_name, names, x, y, args, device, log):
    live, rows = [], []
    for name in names:
        try:
            live.append((name, Setup(model_name, Variant(name, name), device)))
        except Exception as exc:  # a rule that does not apply to this net
            log(f"  {model_name}/{name}: skipped ({str(exc).splitlines()[0]})")
            rows.append((name, {"skipped": str(exc).splitlines()[0]}))
    times = round_robin([s for _, s in live], x, y, args.warmup, args.repeats, device)
    bp = times[0]
    for (name, s), ts in zip(live, times):
        row = {"ms": median_ms(ts), "ratio": statistics.median(ts) / statistics.median(bp),
               "noise": ratio_noise(ts, bp), "group": names}
        if name in ("las", "ltas") and "dfa" in names:
            row["ratio_to_dfa"] = statistics.median(ts) / statistics.median(times[names.index("dfa")])
        rows.append((name, row))
        log(f"  {model_name:10s} {name:8s} {row['ms']:8.1f} ms  x{row['ratio']:.3f} BP (±{row['noise']:.3f})")
    return rows


OPTIMISATIONS = [  # (what, the library's variant, the straightforward one)
    ("graph cut: no input gradients (vs full BP backward + hooks)",
     Variant("dfa", "dfa"), Variant("dfa-hooks", "dfa", step="hook")),
    ("one feedback matmul per block (vs one stacked)",
     Variant("dfa", "dfa"), Variant("dfa-stacked", "dfa", cls=naive.StackedDFA)),
    ("e in closed form (vs a second autograd pass)",
     Variant("dfa", "dfa"), Variant("dfa-autograd-e", "dfa", step="autograd_error")),
    ("no host sync in the step (vs loss.item() every step)",
     Variant("dfa", "dfa"), Variant("dfa-sync", "dfa", step="sync")),
    ("fused Adam (vs default foreach), DFA", Variant("dfa", "dfa"), Variant("dfa-foreach", "dfa", adam="foreach")),
    ("fused Adam (vs default foreach), BP", Variant("bp", "bp"), Variant("bp-foreach", "bp", adam="foreach")),
    ("sparse DFA by gather (vs dense matmul)",
     Variant("sdfa", "sdfa"), Variant("sdfa-dense", "sdfa", cls=naive.DenseSparseDFA)),
    ("LAS in one forward pass (vs two)", Variant("las", "las"), Variant("las-2pass", "las", step="two_pass")),
    ("LTAS in one forward pass (vs two)", Variant("ltas", "ltas"), Variant("ltas-2pass", "ltas", step="two_pass")),
]


def bench_optimisations(model_name, args, device, log):
    x, y = batch(model_name, device)
    rows = []
    for what, after, before in OPTIMISATIONS:
        try:
            setups = [Setup(model_name, after, device), Setup(model_name, before, device)]
        except Exception as exc:
            log(f"  {model_name}: {what}: skipped ({str(exc).splitlines()[0]})")
            continue
        ta, tb = round_robin(setups, x, y, args.warmup, args.repeats, device)
        row = {"what": what, "model": model_name, "after": after.label, "before": before.label,
               "after_ms": median_ms(ta), "before_ms": median_ms(tb),
               "speedup": statistics.median(tb) / statistics.median(ta), "noise": ratio_noise(tb, ta)}
        rows.append(row)
        log(f"  {model_name:10s} {before.label:14s} {row['before_ms']:8.1f} ms -> {row['after_ms']:8.1f} ms  "
            f"x{row['speedup']:.2f}")
        del setups
    return rows


def bench_sdfa(args, device, log):
    """Projection alone, e (64, d_L) -> signals of the CIFAR MLP's three 4096-unit
    blocks: the library's gather, advanced indexing e[:, index], a dense matmul."""
    outputs, width, ops = [10, 20, 50, 100, 200], (512 if args.quick else 4096), {}
    for d in outputs:
        layout = Layout(tuple(Point(f"p{i}", (width,), ()) for i in range(3)), d, ())
        torch.manual_seed(0)
        sparse = SparseFeedback(layout, [0, 1, 2], k=1).to(device)
        e = torch.randn(64, d, device=device)
        ops[d] = {"gather": lambda s=sparse, e=e: s.project(e),
                  "indexing": lambda s=sparse, e=e: naive.indexed_projection(s, e),
                  "dense": lambda f=DenseFeedback(layout, [0, 1, 2]).to(device), e=e: f.project(e)}
    times = {d: {k: [] for k in ops[d]} for d in outputs}
    for r in range(args.warmup + 10 * args.repeats):
        for d in outputs:  # interleave the sizes and the methods
            for kind, fn in ops[d].items():
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                if r >= args.warmup:
                    times[d][kind].append(time.perf_counter() - t)
    rows = {d: {f"{k}_us": 1e6 * statistics.median(ts) for k, ts in times[d].items()} for d in outputs}
    for d, row in rows.items():
        log(f"  d_L={d:4d}  " + "   ".join(f"{k[:-3]} {v:9.1f} us" for k, v in row.items()))
    gather = [r["gather_us"] for r in rows.values()]
    return {"units": 3 * width, "rows": rows, "spread": max(gather) / min(gather) - 1}


def bench_memory(model_name, rules, device, log):
    """Each rule alone: building the net, rule and optimizers, then two steps; MiB above before."""
    memory, x, y, out = Memory(device), *batch(model_name, device), {}
    Setup(model_name, Variant("bp", "bp"), device).step(x, y)  # one-time allocations of the process
    for name in rules:
        base = memory.start()
        try:
            setup = Setup(model_name, Variant(name, name), device)
        except Exception:  # reported by the steps section
            continue
        for _ in range(2):  # the optimizer state appears on the first step
            setup.step(x, y)
        peak = memory.peak_above(base)
        del setup
        out[name] = None if peak is None else peak / 2**20
        log(f"  {model_name:10s} {name:8s} {'–' if peak is None else f'{peak / 2**20:.0f}'} MiB")
    return out


def bench_epoch(args, device, log):
    """One epoch through the Trainer (what `dflearn train` runs), then the data
    pipeline alone over the same epoch, Batches vs a per-sample DataLoader."""
    out = {}
    for rule in args.epoch_rules:
        with tempfile.TemporaryDirectory() as tmp:
            config = Config(rule=rule, model="mlp-mnist", dataset=args.dataset, epochs=1, lr=LR,
                            device=str(device), data_dir=args.data_dir)
            try:
                trainer = Trainer(config, Path(tmp) / "run", progress=False)
            except Exception as exc:
                log(f"  epoch: skipped ({str(exc).splitlines()[0]})")
                return {"skipped": str(exc).splitlines()[0]}
            t = time.perf_counter()
            trainer.train_epoch()
            epoch = time.perf_counter() - t
            pipeline = _drain(trainer.train_batches, device)
            row = {"epoch_s": epoch, "pipeline_s": pipeline, "share": pipeline / epoch, "steps": len(trainer.train_batches)}
            if "pipeline_naive_s" not in out:
                loader = naive.sample_loader(trainer.data, config.batch_size, torch.Generator().manual_seed(0))
                out["pipeline_naive_s"] = _drain(loader, device)
                out["pipeline_s"] = pipeline
            out[rule] = row
            log(f"  {args.dataset} epoch {rule}: {epoch:.2f} s, pipeline alone {pipeline:.3f} s "
                f"({100 * row['share']:.1f}%)")
    out["dataset"] = args.dataset
    if "pipeline_naive_s" in out:
        log(f"  pipeline: per-sample DataLoader {out['pipeline_naive_s']:.2f} s -> Batches {out['pipeline_s']:.3f} s")
    return out


def _drain(batches, device) -> float:
    sync(device)
    t = time.perf_counter()
    for x, y in batches:
        x.to(device), y.to(device)
    sync(device)
    return time.perf_counter() - t


# ----------------------------------------------------------------- report
TARGETS = [  # (what, value from results, limit): issue 16's targets, then the suite's own
    ("DFA step / BP step, mlp-mnist", lambda r: _get(r, "steps", "mlp-mnist", "dfa", "ratio"), 0.82),
    ("LAS step / BP step, mlp-mnist", lambda r: _get(r, "steps", "mlp-mnist", "las", "ratio"), 0.86),
    ("LTAS step / BP step, mlp-mnist", lambda r: _get(r, "steps", "mlp-mnist", "ltas", "ratio"), 0.86),
    ("DFA step / BP step, mlp-cifar", lambda r: _get(r, "steps", "mlp-cifar", "dfa", "ratio"), 0.78),
    ("LAS step / BP step, mlp-cifar", lambda r: _get(r, "steps", "mlp-cifar", "las", "ratio"), 0.82),
    ("LTAS step / BP step, mlp-cifar", lambda r: _get(r, "steps", "mlp-cifar", "ltas", "ratio"), 0.82),
    ("DFA step / BP step, conv3", lambda r: _get(r, "steps", "conv3", "dfa", "ratio"), 0.78),
    ("LAS step / DFA step, conv3", lambda r: _get(r, "steps", "conv3", "las", "ratio_to_dfa"), 1.03),
    ("sparse DFA (k=1) projection, d_L 10..200: max/min - 1", lambda r: _get(r, "sdfa", "spread"), 0.20),
    ("data pipeline share of an MLP-MNIST epoch (DFA)", lambda r: _get(r, "epoch", "dfa", "share"), 0.10),
]


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def markdown(res) -> str:
    fmt = lambda v, f="{:.2f}": "–" if v is None else f.format(v)  # noqa: E731
    steps = res["steps"]
    models = [m for m in steps if "skipped" not in steps[m]]
    lines = [f"Device: {res['device']}, torch {res['torch']}, threads {res['threads']}, batch 64, "
             f"fused Adam on both sides; median of {res['repeats']} interleaved repeats after {res['warmup']} warm-up. "
             f"Command: `{res['command']}`", "",
             "**Step time, ratio to BP** (± half the IQR of per-round ratios; BP row in ms)", "",
             "| rule | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    lines.append("| bp (ms) | " + " | ".join(fmt(steps[m]["bp"]["ms"], "{:.1f}") for m in models) + " |")
    for rule in [r for r in RULES[1:] if any(r in steps[m] for m in models)]:
        cells = []
        for m in models:
            row = steps[m].get(rule)
            cells.append("–" if row is None or "skipped" in row else f"{row['ratio']:.2f} ±{row['noise']:.2f}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    skipped = {m: steps[m]["skipped"] for m in steps if "skipped" in steps[m]}
    if skipped:
        lines += [""] + [f"{m}: skipped ({why})" for m, why in skipped.items()]
    mem = res.get("memory", {})
    if mem:
        lines += ["", "**Peak memory, MiB** (net, rule, optimizer state and the peak of a step)", "",
                  "| rule | " + " | ".join(mem) + " |", "|---|" + "---|" * len(mem)]
        for rule in [r for r in RULES if any(_get(mem, m, r) is not None for m in mem)]:
            lines.append(f"| {rule} | " + " | ".join(fmt(_get(mem, m, rule), "{:.0f}") for m in mem) + " |")
    lines += ["", "**Targets**", "", "| target | measured | limit | met |", "|---|---|---|---|"]
    for what, value, limit in TARGETS:
        v = value(res)
        lines.append(f"| {what} | {fmt(v, '{:.3f}')} | {limit} | {'–' if v is None else ('yes' if v <= limit else 'no')} |")
    lines += ["", "**Optimisations, before / after** (step times, ms)", "",
              "| optimisation | model | before | after | speed-up |", "|---|---|---|---|---|"]
    for r in res["optimisations"]:
        lines.append(f"| {r['what']} | {r['model']} | {r['before_ms']:.1f} | {r['after_ms']:.1f} | "
                     f"x{r['speedup']:.2f} ±{r['noise']:.2f} |")
    ep = res.get("epoch", {})
    if "pipeline_naive_s" in ep:
        lines.append(f"| data pipeline: Batches (vs per-sample DataLoader), one {ep['dataset']} epoch | – | "
                     f"{1000 * ep['pipeline_naive_s']:.0f} | {1000 * ep['pipeline_s']:.0f} | "
                     f"x{ep['pipeline_naive_s'] / ep['pipeline_s']:.1f} |")
    sd = res.get("sdfa")
    if sd:
        lines += ["", f"**Sparse DFA (k=1) projection, {sd['units']} units, batch 64** (µs)", "",
                  "| d_L | gather (library) | advanced indexing e[:, index] | dense matmul |", "|---|---|---|---|"]
        lines += [f"| {d} | {r['gather_us']:.0f} | {r['indexing_us']:.0f} | {r['dense_us']:.0f} |"
                  for d, r in sd["rows"].items()]
    if ep and "skipped" not in ep:
        lines += ["", f"**One epoch, mlp-mnist on {ep['dataset']}, through Trainer**", "",
                  "| rule | steps | epoch (s) | data pipeline alone (s) | share |", "|---|---|---|---|---|"]
        for rule in res["epoch_rules"]:
            r = ep[rule]
            lines.append(f"| {rule} | {r['steps']} | {r['epoch_s']:.2f} | {r['pipeline_s']:.3f} | {100 * r['share']:.1f}% |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp-mnist,mlp-cifar,conv3,resnet18,vit,gpt,gpt-sublayer")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--optimisation-models", default="mlp-mnist,mlp-cifar,conv3",
                   help="nets on which each optimisation is timed against its straightforward version")
    p.add_argument("--sections", default="steps,optimisations,sdfa,epoch,memory")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--dataset", default="mnist", help="data set of the epoch section")
    p.add_argument("--epoch-rules", default="bp,dfa")
    p.add_argument("--data-dir", default=None, help="default: $DFLEARN_DATA_DIR")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--quick", action="store_true", help="mlp-mnist only, few repeats, digits epoch: for the tests")
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.optimisation_models = "mlp-mnist"
        args.repeats, args.warmup, args.dataset, args.epoch_rules = 2, 1, "digits", "dfa"
    args.epoch_rules = args.epoch_rules.split(",")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    log = lambda s: print(s, flush=True)  # noqa: E731
    sections = args.sections.split(",")
    rules = args.rules.split(",")
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
           "warmup": args.warmup, "command": "python benchmarks/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "epoch_rules": args.epoch_rules, "steps": {}, "optimisations": []}
    if "steps" in sections:
        log("steps (ratio to BP, interleaved)")
        for m in args.models.split(","):
            if m not in MODELS:
                log(f"  {m}: skipped (not registered on this branch)")
                res["steps"][m] = {"skipped": "model not registered"}
                continue
            res["steps"][m] = bench_steps(m, rules, args, device, log)
    if "optimisations" in sections:
        log("optimisations (before -> after)")
        for m in args.optimisation_models.split(","):
            if m in MODELS:
                res["optimisations"] += bench_optimisations(m, args, device, log)
            else:
                log(f"  {m}: skipped (not registered on this branch)")
    if "sdfa" in sections:
        log("sparse DFA projection vs d_L")
        res["sdfa"] = bench_sdfa(args, device, log)
    if "epoch" in sections:
        log("epoch")
        res["epoch"] = bench_epoch(args, device, log)
    if "memory" in sections:  # last: its allocator setting would slow the timings
        log("peak memory")
        res["memory"] = {m: bench_memory(m, rules, device, log) for m in args.models.split(",") if m in MODELS}
    res["targets"] = {what: {"value": value(res), "limit": limit} for what, value, limit in TARGETS}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=1))
    (out / "bench.md").write_text(markdown(res))
    log(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return res


if __name__ == "__main__":
    main()
