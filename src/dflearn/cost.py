"""What one training step costs under a rule, beside BP: multiply-accumulates,
feedback state and data movement, counted from the model's own layers.

The unit of account is the block: the parametrised modules between two feedback
points (the rule's Layout); the head is the modules after the last point.
Conventions (docs/cost.md):

- 1 MAC = one multiply-add of a Linear or Conv layer, or of a rule's feedback
  operator. Biases, activations, BN, pooling, softmax and the loss are
  elementwise and not counted, as in torch.utils.flop_counter (FLOPs = 2 x MACs).
- Backward of a Linear/Conv: its input gradient costs as many MACs as its
  forward, and so does its weight gradient. Which of them a rule computes is
  not assumed: one forward and backward under the rule's cuts is traced.
- A rule's own feedback (its projections, local modules, feedback updates and extra
  passes such as the weight mirror's) is what the rule itself describes
  (`Rule.feedback_cost`); the network's layers are traced under the rule's own step.
- Data movement: the values a block must receive per step to form its update,
  each counted once per receiving block (a weight once per step, an error once
  per sample); the block's own activations and weights are local. fp32 values
  (4 bytes), int32 indices (4 bytes).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import nn

from .errors import DflearnError
from .feedback.counting import layer_macs
from .feedback.dry_run import dry_step
from .feedback.point import FeedbackPoint
from .rules.base import Rule, make_rule

VALUE_BYTES = 4  # fp32
INDEX_BYTES = 4  # int32


@dataclass
class BlockCost:
    """One block's counts for one step of batch N: MACs, values and indices."""

    name: str
    modules: tuple[str, ...] = ()
    forward: int = 0  # MACs of the forward pass
    signal: int = 0  # MACs forming the block's learning signal (propagation into it, or feedback projection / VJP)
    weight_grad: int = 0  # MACs of the block's weight gradients
    feedback_update: int = 0  # MACs learning the feedback (LAS/LTAS local forward + update, DKP's h^T e)
    extra_pass: int = 0  # MACs of passes beyond the step's forward and backward (the weight mirror's)
    feedback_values: int = 0  # feedback parameters held for this block (fp32)
    feedback_indices: int = 0  # their column indices (sparse feedback, int32)
    received_errors: int = 0  # error / delta values the block receives
    received_weights: int = 0  # weights it receives: the next layer's (BP), its B_i or M_i (direct rules)
    received_indices: int = 0  # indices it receives with sparse weights

    @property
    def learning(self) -> int:
        return self.signal + self.weight_grad + self.feedback_update + self.extra_pass

    @property
    def step(self) -> int:
        return self.forward + self.learning

    @property
    def feedback_bytes(self) -> int:
        return VALUE_BYTES * self.feedback_values + INDEX_BYTES * self.feedback_indices

    @property
    def received_bytes(self) -> int:
        return VALUE_BYTES * (self.received_errors + self.received_weights) + INDEX_BYTES * self.received_indices

    def add(self, **counts: int) -> None:
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + int(value))

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["modules"] = list(self.modules)
        for key in ("learning", "step", "feedback_bytes", "received_bytes"):
            out[key] = getattr(self, key)
        return out


COUNTS = [f.name for f in fields(BlockCost)][2:]
RATIOS = ("forward", "learning", "step", "feedback_bytes", "received_bytes")


@dataclass
class StepCost:
    """A rule's cost of one training step, per block (head last) and in total."""

    rule: str
    options: dict
    batch_size: int
    blocks: list[BlockCost]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> BlockCost:
        total = BlockCost("total")
        for b in self.blocks:
            total.add(**{k: getattr(b, k) for k in COUNTS})
        return total

    def ratios(self, baseline: StepCost) -> dict:
        """This rule's totals divided by the baseline's (None where the baseline's is 0)."""
        mine, base = self.total, baseline.total
        return {k: (getattr(mine, k) / getattr(base, k) if getattr(base, k) else None) for k in RATIOS}

    def to_dict(self, baseline: StepCost | None = None) -> dict:
        out = {"rule": self.rule, "options": self.options, "batch_size": self.batch_size,
               "blocks": [b.to_dict() for b in self.blocks], "total": self.total.to_dict(), "notes": self.notes}
        if baseline is not None:
            out["ratio_to_" + baseline.rule] = self.ratios(baseline)
        return out


def step_cost(model: nn.Module, rule: Rule | str, example_input: torch.Tensor, batch_size: int | None = None,
              **options) -> StepCost:
    """Cost of one training step of `batch_size` (default: the example's) under `rule`
    (a Rule built on this model, or a registered name built here with `options`)."""
    if isinstance(rule, str):
        rule = make_rule(rule, model, example_input, **options)  # bad options: one DflearnError
    n = batch_size or len(example_input)
    layout = rule.layout
    blocks = [BlockCost(p.name, p.block) for p in layout.points] + [BlockCost("head", layout.head)]
    owner = {m: b for b in blocks for m in b.modules}
    records, notes, own = _trace(model, rule, example_input), [], blocks[0]
    for name, r in records.items():  # in the order of the forward pass
        own = owner.get(name, own)  # a parameter-free module: the block it runs in
        if r.macs is None:
            notes.append(f"{name or 'the model itself'} ({r.kind}): MACs not counted (not Linear/Conv; "
                         f"a module can state its own with a macs(inputs, output) method)")
        macs, input_grad_macs = (n * m for m in (r.macs or (0, 0)))
        own.add(forward=macs * r.calls)
        if r.reached and r.trainable:
            own.add(weight_grad=macs)
        if r.reached and r.input_grad:
            # the gradient of an input read from feedback point i is block i's signal:
            # block i receives this module's weights and its output deltas (BP's weight transport)
            for i in r.sources:
                blocks[i].add(received_weights=r.weights, received_errors=n * r.out)
            (blocks[max(r.sources)] if r.sources else own).add(signal=input_grad_macs)
    if any(records[m].reached for m in layout.head if m in records):
        blocks[-1].add(received_errors=n * layout.num_outputs)  # e = dLoss/da_L, from the loss
    _add_feedback(rule, blocks, n)
    return StepCost(rule.name, dict(options), n, blocks, notes)


def compare(model: nn.Module, rules: list[str], example_input: torch.Tensor, batch_size: int | None = None,
            baseline: str = "bp", **options) -> dict[str, StepCost]:
    """step_cost for the baseline and each named rule; each option goes to the rules that take it."""
    from .rules.base import RULES, rule_options

    names = [baseline] + [r for r in rules if r != baseline]
    for r in names:
        if r not in RULES:
            raise DflearnError(f"unknown rule '{r}'; choose one of: {', '.join(sorted(RULES))}")
    for key in options:
        if not any(key in rule_options(RULES[r]) for r in names):
            raise DflearnError(f"none of the rules {', '.join(names)} has option '{key}'; see 'dflearn rules'")
    return {r: step_cost(model, r, example_input, batch_size,
                         **{k: v for k, v in options.items() if k in rule_options(RULES[r])}) for r in names}


@dataclass
class _Record:
    kind: str
    macs: tuple[int, int] | None  # per sample, forward and input gradient; None: a type the convention does not cover
    out: int  # output values per sample
    weights: int
    trainable: bool
    input_grad: bool  # its input needs a gradient under the rule's cuts
    sources: set[int]  # feedback points its input is read from
    reached: bool = False  # a gradient reached its output in the rule's backward pass
    calls: int = 1  # forward calls in one step (two for rules with two forward passes)


def _trace(model: nn.Module, rule: Rule, x: torch.Tensor) -> dict[str, _Record]:
    """The rule's own step on `x`, run dry (nothing changes), recording per parametrised
    module what the step computes: forward calls, input and weight gradients."""
    names = {m: n for n, m in model.named_modules()}
    index = {p.name: i for i, p in enumerate(rule.layout.points)}
    owned = {n for p in rule.layout.points for n in p.block} | set(rule.layout.head)
    stops: dict = {}  # grad_fn -> point index, or None for a module's output
    records: dict[str, _Record] = {}

    def on_point(module, inputs, output):
        if inputs[0].grad_fn is not None:
            stops[inputs[0].grad_fn] = index[names[module]]

    def on_module(module, inputs, output):
        name = names[module]
        h = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        out = output if isinstance(output, torch.Tensor) else output[0]
        weight = module.weight if isinstance(getattr(module, "weight", None), torch.Tensor) else None
        input_grad = h is not None and h.requires_grad
        sources = _sources(h.grad_fn if h is not None else None, stops)
        if name in records:  # called again in the same step (a second forward pass)
            r = records[name]
            r.calls += 1
            r.input_grad |= input_grad
            r.sources |= sources
        else:
            r = records[name] = _Record(
                type(module).__name__, layer_macs(module, inputs, out), out[0].numel(),
                weight.numel() if weight is not None else sum(p.numel() for p in module.parameters(False)),
                any(p.requires_grad for p in module.parameters(False)), input_grad, sources)
        if out.requires_grad:
            out.register_hook(lambda g: setattr(r, "reached", True))
        if out.grad_fn is not None:
            stops[out.grad_fn] = None

    # parameter-free modules that state their MACs (attention) are recorded too: they belong to the
    # block that is running when they run (see step_cost)
    hooks = [m.register_forward_hook(on_point if isinstance(m, FeedbackPoint) else on_module)
             for m in model.modules()
             if isinstance(m, FeedbackPoint) or names[m] in owned or callable(getattr(m, "macs", None))]
    was_training = model.training
    model.eval()  # BN: no running-statistics update, and a batch of one is fine
    try:
        y = torch.zeros(len(x), *rule.layout.positions, dtype=torch.long, device=x.device)
        dry_step(model, rule, x, y)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return records


def _sources(fn, stops: dict) -> set[int]:
    """The feedback points an input is computed from through parameter-free ops
    (reshape, pooling, residual adds): walk the graph back to the nearest module outputs."""
    found, seen, todo = set(), set(), [fn]
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        if f in stops:
            if stops[f] is not None:
                found.add(stops[f])
            continue
        todo.extend(g for g, _ in f.next_functions)
    return found


def _add_feedback(rule: Rule, blocks: list[BlockCost], n: int) -> None:
    """Add what the rule says its own feedback costs (`Rule.feedback_cost`)."""
    by_name = {b.name: b for b in blocks}
    for block, counts in rule.feedback_cost(n).items():
        if block not in by_name:
            raise DflearnError(f"rule '{rule.name}' describes the cost of a block '{block}' the model does not have; "
                               f"its feedback_cost must name feedback points or 'head'")
        unknown = set(counts) - set(COUNTS)
        if unknown:
            raise DflearnError(f"rule '{rule.name}' describes unknown cost counts {sorted(unknown)}; "
                               f"use {', '.join(COUNTS)}")
        by_name[block].add(**counts)


def _si(x: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return str(x)


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3g}"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A Markdown table, numbers right-aligned, readable as plain text too."""
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]
    left = [c < text_columns for c in range(len(header))]

    def line(r):
        return "| " + " | ".join(v.ljust(w) if lt else v.rjust(w) for v, w, lt in zip(r, widths, left)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ("-" if lt else ":") for w, lt in zip(widths, left)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def format_blocks(cost: StepCost) -> str:
    """Markdown table of one rule's counts per block and in total."""
    header = ["block", "modules", "fwd MACs", "signal MACs", "wgrad MACs", "fb-update MACs", "extra MACs",
              "fb params", "fb bytes", "recv errors", "recv weights", "recv bytes"]
    rows = []
    for b in cost.blocks + [cost.total]:
        mods = ",".join(b.modules) if len(b.modules) <= 2 else f"{b.modules[0]}..{b.modules[-1]} ({len(b.modules)})"
        rows.append([b.name, mods] + [_si(getattr(b, k)) for k in (
            "forward", "signal", "weight_grad", "feedback_update", "extra_pass", "feedback_values", "feedback_bytes",
            "received_errors", "received_weights", "received_bytes")])
    opts = ", ".join(f"{k}={v}" for k, v in cost.options.items())
    return f"{cost.rule}{f' ({opts})' if opts else ''}, batch {cost.batch_size}\n\n" + _table(header, rows, 2)


def format_summary(costs: dict[str, StepCost], baseline: str = "bp") -> str:
    """Markdown table of every rule's totals and their ratios to the baseline."""
    base = costs[baseline]
    header = ["rule", "fwd MACs", "learning MACs", "x BP", "step MACs", "x BP", "fb params", "fb bytes",
              "moved bytes", "x BP"]
    rows = []
    for name, cost in costs.items():
        t, r = cost.total, cost.ratios(base)
        opts = ",".join(f"{k}={v}" for k, v in cost.options.items())
        rows.append([name + (f" ({opts})" if opts else ""), _si(t.forward), _si(t.learning), _ratio(r["learning"]),
                     _si(t.step), _ratio(r["step"]), _si(t.feedback_values),
                     _si(t.feedback_bytes), _si(t.received_bytes), _ratio(r["received_bytes"])])
    return _table(header, rows)
