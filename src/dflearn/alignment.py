"""How close a rule's learning is to backprop's (seed 001, Figure 4), per feedback point.

- signal alignment: cosine of the rule's error signal at the block's
  pre-activation (delta_i = g_i * f'(a_i), carried by autograd through the
  block) with BP's delta_i, measured one of two ways (`MEASURES`):
  per sample (the default, as TinyDFA reports it): c_n = cos(delta_rule[n], delta_BP[n])
  for each sample n, each flattened over positions and features, then the mean and
  the std of c_n over the samples; or per batch: one cosine of the two deltas
  flattened whole (batch, positions and features together), which weighs samples
  by the size of their delta;
- update alignment: cosine of the rule's gradient of block i's parameters with BP's;
- feedback angle: the angle in degrees between each feedback matrix the rule
  describes (`Rule.feedback_pairs`) and its forward counterpart: B_i and
  (W_L ... W_{i+1})^T for direct rules, B and W for the sequential ones.

All on the same batch and the same parameters. The rule's side is measured on its
own step, run dry (`feedback.dry_run`): the signal it injects and the gradient it
hands the optimizer, for any rule, whatever its step; given the feedback optimizer,
the step learns its feedback first where the rule does (LAS/LTAS signal with the
updated local modules, as in training). Nothing is changed: parameters, BN
statistics, the rule's state and the random generators are put back. 1 (or 0
degrees) means the rule moves that layer exactly as BP would. A frozen block
(`--freeze`: it has parameters and none is trained) learns nothing: its signal and
update alignments are NaN.
`diagnostics` gathers all three.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import DflearnError
from .feedback.dry_run import dry_step, gradients_at, preserved
from .feedback.rule import Loss, Rule, default_loss

MEASURES = ("sample", "batch")  # how signal alignment pools a batch; the first is the default


def check_measure(per: str) -> str:
    """`per` if it names a measure of `MEASURES`, else one line saying which there are."""
    if per not in MEASURES:
        raise DflearnError(f"unknown alignment measure {per!r}; choose sample (the mean over samples of each "
                           f"sample's cosine, the default) or batch (one cosine over the whole batch)")
    return per


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors flattened whole (batch included); NaN if either is zero."""
    a, b = a.flatten().double(), b.flatten().double()
    denom = a.norm() * b.norm()
    return float(a @ b / denom) if denom > 0 else math.nan


def sample_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """c_n = <a[n], b[n]> / (|a[n]| |b[n]|) for each sample n (the first dimension), each
    flattened over the others (positions and features), in float64. Samples where either
    is zero have no direction and are left out, so the result may be shorter than the batch."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    kept = norms > 0
    return (a * b).sum(1)[kept] / norms[kept]


def sample_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean, std) over samples of `sample_cosines(a, b)`; the std with Bessel's correction
    (n - 1, as torch.std and TinyDFA), so NaN for a single sample; (NaN, NaN) if no sample has
    a direction."""
    c = sample_cosines(a, b)
    if len(c) == 0:
        return math.nan, math.nan
    return float(c.mean()), float(c.std()) if len(c) > 1 else math.nan


def measure(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor, loss_fn: Loss | None = None,
            feedback_optimizer: torch.optim.Optimizer | None = None) -> dict:
    """BP's and the rule's deltas at each point's pre-activation and gradients of every
    parameter, on one batch: {'bp_deltas', 'deltas', 'bp_grads', 'grads'}."""
    points = [p.name for p in rule.layout.points]
    at = [p.preactivation for p in rule.layout.points]
    params = list(model.parameters())
    with preserved(model), torch.enable_grad(), gradients_at(model, at, points) as bp_deltas:
        loss = (loss_fn or default_loss)(model(x), y)
        bp_grads = torch.autograd.grad(loss, [p for p in params if p.requires_grad], allow_unused=True)
    it = iter(bp_grads)
    bp_grads = [next(it) if p.requires_grad else None for p in params]
    with gradients_at(model, at, points) as deltas:
        grads = dry_step(model, rule, x, y, loss_fn, feedback_optimizer)
    return {"bp_deltas": list(bp_deltas), "deltas": list(deltas), "bp_grads": bp_grads, "grads": grads}


def signal_alignment(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor,
                     loss_fn: Loss | None = None, feedback_optimizer: torch.optim.Optimizer | None = None,
                     per: str = "sample", _measured: dict | None = None) -> list[float]:
    """Per feedback point, delta_rule against delta_BP at the block's pre-activation (the point
    itself when its block has no parametrised module): with per='sample' (the default) the mean
    over samples n of cos(delta_rule[n], delta_BP[n]), each flattened over positions and
    features (`sample_cosine`; `diagnostics` also gives the std); with per='batch' the cosine of
    the two flattened over batch and positions together. Points that get no gradient (Shallow's
    untrained blocks, a rule without a backward) and frozen blocks give NaN."""
    return [mean for mean, _ in _signal(model, rule, x, y, loss_fn, feedback_optimizer, per, _measured)]


def _signal(model, rule, x, y, loss_fn, feedback_optimizer, per, measured) -> list[tuple[float, float]]:
    """(value, std over samples) per point; the std is NaN for per='batch'."""
    check_measure(per)
    m = measured or measure(model, rule, x, y, loss_fn, feedback_optimizer)
    out = []
    for d, b, frozen in zip(m["deltas"], m["bp_deltas"], _frozen(model, rule)):
        if d is None or b is None or frozen:  # a frozen block still passes BP's delta on; it learns nothing
            out.append((math.nan, math.nan))
        else:
            out.append(sample_cosine(d, b) if per == "sample" else (cosine(d, b), math.nan))
    return out


def _frozen(model: nn.Module, rule: Rule) -> list[bool]:
    """Per point: its block has parameters and none is trained (`--freeze` set requires_grad=False)."""
    modules = dict(model.named_modules())
    out = []
    for point in rule.layout.points:
        params = [p for n in point.block for p in modules[n].parameters(recurse=False)]
        out.append(bool(params) and not any(p.requires_grad for p in params))
    return out


def update_alignment(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor,
                     loss_fn: Loss | None = None, feedback_optimizer: torch.optim.Optimizer | None = None,
                     _measured: dict | None = None) -> list[float]:
    """Per feedback point: cos(rule's gradient of the block's parameters, BP's): what the
    rule's step hands the optimizer (before weight decay). Blocks the rule leaves without a
    gradient give NaN."""
    m = _measured or measure(model, rule, x, y, loss_fn, feedback_optimizer)
    modules = dict(model.named_modules())
    index = {id(p): k for k, p in enumerate(model.parameters())}
    result = []
    for point in rule.layout.points:
        ks = [index[id(p)] for n in point.block for p in modules[n].parameters(recurse=False)]
        a, b = [m["grads"][k] for k in ks], [m["bp_grads"][k] for k in ks]
        if not ks or all(g is None for g in a):
            result.append(math.nan)
            continue
        # per tensor, no concatenation or float64 copies: this runs every align_every steps
        pairs = [(g.flatten(), h.flatten()) for g, h in zip(a, b) if g is not None and h is not None]
        dot = sum(float(g @ h) for g, h in pairs)
        norms = math.prod(math.sqrt(sum(float(g.flatten() @ g.flatten()) for g in gs if g is not None))
                          for gs in (a, b))
        result.append(dot / norms if norms > 0 else math.nan)
    return result


def feedback_angles(model: nn.Module, rule: Rule) -> dict[str, float]:
    """{name: angle in degrees} between each of the rule's feedback matrices and its forward
    counterpart (`Rule.feedback_pairs`): per point for direct rules (B_i vs (W_L...W_{i+1})^T,
    where the layers above are Linear), per layer for the sequential ones (B vs W; 0: BP's
    backward). Empty for a rule without feedback matrices."""
    return {name: _degrees(cosine(B, W)) for name, B, W in rule.feedback_pairs(model)}


def _degrees(cos: float) -> float:
    return math.nan if math.isnan(cos) else math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def diagnostics(model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor,
                loss_fn: Loss | None = None, feedback_optimizer: torch.optim.Optimizer | None = None,
                per: str = "sample") -> dict[str, list[float]]:
    """Everything above on one batch, per point: {'alignment', ['alignment_std',]
    'update_alignment'[, 'feedback_angle']}: 'alignment' is the signal alignment measured `per`
    sample (with 'alignment_std', the std of the samples' cosines) or batch; the angle where the
    rule has a matrix at some point."""
    check_measure(per)  # before the measurement, which costs about three steps
    m = measure(model, rule, x, y, loss_fn, feedback_optimizer)
    signal = _signal(model, rule, x, y, loss_fn, feedback_optimizer, per, m)
    out = {"alignment": [mean for mean, _ in signal]}
    if per == "sample":
        out["alignment_std"] = [std for _, std in signal]
    out["update_alignment"] = update_alignment(model, rule, x, y, _measured=m)
    angles = feedback_angles(model, rule)
    names = [p.name for p in rule.layout.points]
    if any(n in angles for n in names):
        out["feedback_angle"] = [angles.get(n, math.nan) for n in names]
    return out
