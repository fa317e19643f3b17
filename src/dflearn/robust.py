"""Adversarial robustness of trained networks: FGSM and PGD, white-box and transferred.

Attacks act on pixels in [0, 1] (before the data set's normalisation, which is
folded into the attacked function), with an L-infinity budget eps in those units
(eps = 8/255 is the usual CIFAR figure). Every gradient here is autograd's true
gradient of the cross-entropy of the trained network, run as a plain module: no
rule is involved, whatever rule trained it (a rule's pseudo-gradient would measure
the rule, not the network; Akrout et al. 2019 and BioTorch attack the same way).

- FGSM (Goodfellow et al. 2015): x' = clip_[0,1](x + eps sign(grad_x L(x, y))).
- PGD (Madry et al. 2018): from a uniform random start in the eps-ball, `steps`
  steps x <- P(x + alpha sign(grad_x L)), P the projection onto the eps-ball
  around x and onto [0, 1]; alpha = 2.5 eps / steps.
- Transfer: the perturbation is crafted on another network (a BP-trained twin)
  and evaluated on this one (a black-box attack).

torchattacks was considered and not used: it requires torchvision (which pins one
torch version) and an old `requests`; these two attacks are a few lines each.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .errors import DflearnError


class Pixels(nn.Module):
    """The network as a function of [0, 1] pixels: normalise, then the model."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def input_gradient(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x of the summed cross-entropy (the sign is what the attacks use, so the
    reduction does not matter), by autograd through the plain network."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(net(x), y, reduction="sum"), x)
    return grad


def fgsm(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    return (x + eps * input_gradient(net, x, y).sign()).clamp(0, 1).detach()


def pgd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
        generator: torch.Generator | None = None) -> torch.Tensor:
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
    adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv + alpha * input_gradient(net, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return adv


ATTACKS = {"fgsm": fgsm, "pgd": pgd}


def load_network(run: str | Path, device: torch.device | str = "cpu"):
    """A run directory -> (its trained network on [0, 1] pixels, its data set, its config dict)."""
    from .data import load_dataset
    from .models import build_model
    from .training.checkpoint import CHECKPOINT, load

    run = Path(run)
    try:
        config = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise DflearnError(f"{run} holds no run (no config.json); name a run directory") from None
    except json.JSONDecodeError:
        raise DflearnError(f"{run / 'config.json'} is not valid JSON; the run directory is damaged") from None
    from .data.split import split_validation

    # the run's own split: its normalisation statistics are those of the training images it kept
    data = split_validation(load_dataset(config["dataset"], config.get("data_dir")), config.get("val_fraction", 0.0))
    model = build_model(config["model"], data.input_shape, data.num_classes, **config.get("model_options", {}))
    state = load(run / CHECKPOINT)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise DflearnError(f"{run / CHECKPOINT} does not fit model '{config['model']}' "
                           f"({str(exc).splitlines()[0][:100]}); the run directory is inconsistent") from None
    net = Pixels(model, data.mean, data.std).to(device).eval()
    return net, data, config


def robust_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, *,
                    source: nn.Module | None = None, batch_size: int = 500, steps: int = 10,
                    seed: int = 0) -> float:
    """Accuracy of `net` on adversarial examples crafted on `source` (default: `net` itself)."""
    source = net if source is None else source
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if attack == "pgd":
            adv = pgd(source, xb, yb, eps, steps, generator)
        else:
            adv = ATTACKS[attack](source, xb, yb, eps)
        with torch.no_grad():
            correct += int((net(adv).argmax(1) == yb).sum())
    return correct / len(x)


def test_subset(num_test: int, limit: int) -> torch.Tensor:
    """The indices of the `limit` test images the attacks use: a fixed random draw (seed 0,
    the same for every run of a data set), or all of them in order when `limit` covers the set.
    Not the first `limit`: a test set stored by class (the CIFAR subsets in ../shared/data)
    would then give one class only."""
    if limit >= num_test:
        return torch.arange(num_test)
    return torch.randperm(num_test, generator=torch.Generator().manual_seed(0))[:limit].sort().values


def evaluate_runs(runs: list[str | Path], eps: list[float], attacks: list[str], *, twin: str | Path | None = None,
                  limit: int = 1000, steps: int = 10, device: str = "cpu", progress: bool = False) -> list[dict]:
    """Rows {run, rule, attack, eps, accuracy, transfer} over `limit` test images (`test_subset`);
    `progress`: a bar over the (run, attack, eps) evaluations on stderr."""
    from .training.trainer import resolve_device

    for a in attacks:
        if a not in ATTACKS:
            raise DflearnError(f"unknown attack '{a}'; choose from {', '.join(ATTACKS)}")
    if any(not 0 <= e <= 1 for e in eps):
        raise DflearnError(f"eps must lie in [0, 1] (pixel units, e.g. 8/255), got {eps}")
    device = resolve_device(device) if isinstance(device, str) else device
    source = load_network(twin, device)[0] if twin is not None else None
    rows = []
    bar = tqdm(total=len(runs) * len(attacks) * len(eps), desc="robust", unit="attack", leave=False,
               disable=not progress or None, file=sys.stderr, dynamic_ncols=True)
    for run in runs:
        net, data, config = load_network(run, device)
        index = test_subset(len(data.y_test), limit)
        x = data.x_test[index].float().div(255).to(device)
        y = data.y_test[index].to(device)
        for attack in attacks:
            for e in eps:
                row = {"run": str(run), "rule": config["rule"], "dataset": config["dataset"],
                       "model": config["model"], "attack": attack, "eps": e,
                       "accuracy": robust_accuracy(net, x, y, attack, e, steps=steps)}
                if source is not None:
                    row["transfer_accuracy"] = robust_accuracy(net, x, y, attack, e, source=source, steps=steps)
                rows.append(row)
                bar.update()
    bar.close()
    return rows


def by_rule(rows: list[dict]) -> list[dict]:
    """The rows merged over the runs (seeds) of each rule on the same data set and model:
    {rule, dataset, model, attack, eps, runs, accuracy, accuracy_std[, transfer_accuracy(_std)]},
    mean and sample std (0 for one run)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["rule"], r["dataset"], r["model"], r["attack"], r["eps"]), []).append(r)
    merged = []
    for (rule, dataset, model, attack, eps), members in groups.items():
        row = {"rule": rule, "dataset": dataset, "model": model, "attack": attack, "eps": eps, "runs": len(members)}
        for key in ("accuracy", "transfer_accuracy"):
            if all(key in m for m in members):
                values = torch.tensor([m[key] for m in members], dtype=torch.float64)
                row[key] = float(values.mean())
                row[key + "_std"] = float(values.std()) if len(values) > 1 else 0.0
        merged.append(row)
    return merged


def markdown(rows: list[dict]) -> str:
    """Robust accuracy (%) per run, or per rule as mean ± std over its runs when some rule has
    several (seeds), in rows; attack x eps in columns."""
    cols = sorted({(r["attack"], r["eps"]) for r in rows})
    transfer = any("transfer_accuracy" in r for r in rows)
    seeds = len({r["run"] for r in rows}) > len({(r["rule"], r["dataset"], r["model"]) for r in rows})
    if seeds:
        rows = [{**r, "run": f"{r['rule']}|{r['dataset']}|{r['model']}"} for r in by_rule(rows)]

    def value(r, key):
        mean = f"{100 * r[key]:.1f}"
        return f"{mean} ± {100 * r[key + '_std']:.1f}" if seeds else mean

    head = (["rule", "runs"] if seeds else ["run", "rule"]) + [f"{a} eps={e:.4g}" for a, e in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = {(r["attack"], r["eps"]): r for r in rows if r["run"] == run}
        first = next(iter(mine.values()))
        cells = []
        for c in cols:
            r = mine.get(c)
            if r is None:
                cells.append("")
            elif transfer:
                cells.append(f"{value(r, 'accuracy')} / {value(r, 'transfer_accuracy')}")
            else:
                cells.append(value(r, "accuracy"))
        lead = [first["rule"], str(first["runs"])] if seeds else [Path(run).name, first["rule"]]
        lines.append("| " + " | ".join(lead + cells) + " |")
    notes = []
    if seeds:
        notes.append("mean ± std over the runs (seeds) of each rule")
    if transfer:
        notes.append("white-box / transferred from the BP twin")
    if notes:
        lines.append("\nCells: " + "; ".join(notes) + ", accuracy in %.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | Path) -> Path:
    """Robust accuracy (%) against eps: a panel per attack, and a second row of panels for the
    attacks transferred from the BP twin when there are any; one line per run, or per rule with
    a ±1 std band when rules have several runs (seeds); rule colours; one legend below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .experiments.plots import rule_style

    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    runs = len({r["run"] for r in rows})
    seeds = runs > len({(r["rule"], r["dataset"], r["model"]) for r in rows})
    lines = by_rule(rows) if seeds else rows  # several seeds: one line per rule, a ±1 std band
    metrics = [("accuracy", "white-box, autograd gradient")]
    if any("transfer_accuracy" in r for r in rows):
        metrics.append(("transfer_accuracy", "crafted on the BP twin, transferred"))
    fig, axes = plt.subplots(len(metrics), len(attacks), figsize=(5 * len(attacks), 3.6 * len(metrics) + 0.8),
                             squeeze=False, layout="constrained")
    for row_axes, (metric, how) in zip(axes, metrics):
        for ax, attack in zip(row_axes, attacks):
            for key in dict.fromkeys((r["rule"], r.get("run")) for r in lines):
                mine = sorted((r for r in lines if (r["rule"], r.get("run")) == key and r["attack"] == attack),
                              key=lambda r: r["eps"])
                if not mine or metric not in mine[0]:
                    continue
                rule, style = mine[0]["rule"], rule_style(mine[0]["rule"])
                x, y = [r["eps"] * 255 for r in mine], [100 * r[metric] for r in mine]
                ax.plot(x, y, label=f"{rule} ({mine[0]['runs']} seeds)" if seeds else f"{rule} ({Path(key[1]).name})",
                        ms=4, **style)
                if seeds:
                    std = [100 * r[metric + "_std"] for r in mine]
                    ax.fill_between(x, [a - b for a, b in zip(y, std)], [a + b for a, b in zip(y, std)],
                                    color=style.get("color"), alpha=0.12, linewidth=0)
            ax.set_title(f"{attack.upper()} ({how})", fontsize=10)
            ax.set_xlabel("eps (pixel units x 255)")
            ax.set_ylabel("robust test accuracy (%)")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=8)
    settings = sorted({f"{r.get('dataset', '?')} · {r.get('model', '?')}" for r in rows})
    fig.suptitle(" / ".join(settings) + f" · {runs} run(s)" + (", mean ± std over seeds" if seeds else ""),
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
