"""Starting a run from another run's weights (`--init-from`) and keeping blocks fixed (`--freeze`).

Names: a *block* is named by its feedback point (the parametrised modules run
between the previous point and this one, `Layout.points[i].block`), by `head`
(the modules after the last point), or by any module name of the model with
parameters (`features`, `3`, `classifier.linear_1`). A point's name wins where
the two coincide.

`--init-from RUN` copies model weights (parameters and persistent buffers such
as BN statistics) from RUN's checkpoint: all of them, or with `--init-blocks`
only those of the named blocks (the rest keep this run's fresh, seeded
initialisation), and with `--init-feedback` also the rule's feedback state.
Every copied tensor must have the same shape here; the first that does not ends
the run in one line. The copy happens before the rule is built, so feedback
derived from the weights (DFA `init=product`, LAS local modules) derives from
the loaded ones; a resumed run takes everything from its own checkpoint instead.

`--freeze NAMES` sets `requires_grad=False` on the named blocks' parameters
before the optimizers are built (they are not handed to them), and keeps those
modules in eval mode while training, so their BN statistics do not move either
and dropout inside them is off: a frozen block is bitwise unchanged by training.
It learns nothing, so with `--align-every` its signal and update alignments are NaN
(None in metrics.jsonl); the other blocks' are measured as usual.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import DflearnError
from ..feedback.layout import probe
from .checkpoint import CHECKPOINT, load


def names_list(value, what: str = "names") -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return list(value)
    raise DflearnError(f"{what} must be a comma-separated list of names, got {value!r}")


def check_config(c) -> None:
    """Validate (and normalise, in place) the selection and transfer fields of a Config."""
    if not isinstance(c.val_fraction, (int, float)) or isinstance(c.val_fraction, bool) \
            or not 0 <= c.val_fraction < 1:
        raise DflearnError(f"val fraction must be a number at least 0 and below 1 (0: no validation split), "
                           f"got {c.val_fraction!r}")
    c.val_fraction = float(c.val_fraction)
    c.freeze = names_list(c.freeze, "freeze")
    c.init_blocks = names_list(c.init_blocks, "init blocks")
    if c.init_from is not None and not isinstance(c.init_from, str):
        raise DflearnError(f"init from must be a run directory or checkpoint path, got {c.init_from!r}")
    if not isinstance(c.init_feedback, bool):
        raise DflearnError(f"init feedback must be true or false, got {c.init_feedback!r}")
    if (c.init_blocks or c.init_feedback) and not c.init_from:
        raise DflearnError("--init-blocks and --init-feedback need --init-from RUN (the run to copy from)")


# ------------------------------------------------------------------ names
def block_modules(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[str, ...]]:
    """Every name `--freeze` and `--init-blocks` accept -> the module names it stands for."""
    layout = probe(model, example)
    out: dict[str, tuple[str, ...]] = {}
    for n, m in model.named_modules():
        if n and any(True for _ in m.parameters()):
            out[n] = (n,)
    for p in layout.points:
        out[p.name] = tuple(p.block)
    if layout.head:
        out["head"] = tuple(layout.head)
    return out


def resolve(model: nn.Module, example: torch.Tensor, names: list[str], flag: str) -> list[str]:
    """The module names behind `names`, in model order; an unknown name ends in one line listing the valid ones."""
    known = block_modules(model, example)
    for name in names:
        if name not in known:
            points = [p for p, mods in known.items() if mods != (p,) and p != "head"]
            modules = [n for n, mods in known.items() if mods == (n,)]
            raise DflearnError(f"{flag}: '{name}' is neither a feedback point nor a module with parameters of "
                               f"this model; valid: feedback points {', '.join(points) or 'none'}"
                               f"{'; head' if 'head' in known else ''}; modules {', '.join(modules)}")
    chosen = {m for name in names for m in known[name]}
    return [n for n, _ in model.named_modules() if n in chosen]


def _owned(key: str, modules: list[str]) -> bool:
    return any(key.startswith(m + ".") for m in modules)


# ------------------------------------------------------------------ init-from
def source_checkpoint(path: str | Path, out: Path | None = None) -> Path:
    """The checkpoint `path` names: a run directory's checkpoint.pt, or a .pt file. A
    relative path not found from here is looked up beside the run's own folder, so the
    runs of one grid can name each other by folder name."""
    p = Path(path)
    if not p.exists() and not p.is_absolute() and out is not None and (Path(out).parent / p).exists():
        p = Path(out).parent / p
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.exists():
        raise DflearnError(f"--init-from {path}: no checkpoint there (give a run directory holding "
                           f"{CHECKPOINT}, or a .pt checkpoint such as RUN/best.pt)")
    return p


def copy_tensors(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], keys: list[str],
                 where: str, what: str) -> None:
    """Copy `keys` from `source` into `target` in place, after checking every shape (first mismatch: one line)."""
    for k in keys:
        if k not in source:
            raise DflearnError(f"--init-from {where}: its {what} has no '{k}' (it holds "
                               f"{len(source)} tensors); copy from a run of a matching model, or name fewer "
                               f"blocks with --init-blocks")
        if tuple(source[k].shape) != tuple(target[k].shape):
            raise DflearnError(f"--init-from {where}: '{k}' has shape {tuple(source[k].shape)} there but "
                               f"{tuple(target[k].shape)} in this {what}; copy from a run of a matching "
                               f"model, or leave that block out with --init-blocks")
    with torch.no_grad():
        for k in keys:
            target[k].copy_(source[k])


def init_model(model: nn.Module, example: torch.Tensor, config, out: Path | None = None) -> tuple[dict, str]:
    """Copy the chosen model weights of `config.init_from` into `model`; returns the
    source checkpoint's state (for the feedback) and a line naming what was loaded."""
    path = source_checkpoint(config.init_from, out)
    state = load(path)
    if "model" not in state:
        raise DflearnError(f"--init-from {path}: not a dflearn checkpoint (no model weights)")
    target = model.state_dict()
    if config.init_blocks:
        modules = resolve(model, example, config.init_blocks, "--init-blocks")
        keys = [k for k in target if _owned(k, modules)]
    else:
        modules, keys = None, list(target)
    copy_tensors(target, state["model"], keys, str(path), "model")
    owners = sorted({k.rsplit(".", 1)[0] if "." in k else "" for k in keys}, key=list(dict(model.named_modules())).index)
    src = state.get("config", {})
    line = (f"init-from {path} ({src.get('rule', '?')} · {src.get('model', '?')} · {src.get('dataset', '?')}, "
            f"epoch {state.get('epoch', '?')}): loaded {len(keys)} tensors of "
            f"{'blocks ' + ', '.join(config.init_blocks) if modules is not None else 'the whole model'} "
            f"(modules {', '.join(owners)})")
    return state, line


def init_feedback(rule: nn.Module, state: dict, path: str) -> str:
    source = state.get("rule") or {}
    target = rule.state_dict()
    if not target:
        raise DflearnError(f"--init-feedback: rule '{type(rule).__name__}' holds no feedback state to load")
    copy_tensors(target, source, list(target), path, "feedback state")
    return f"init-from {path}: loaded the feedback state ({len(target)} tensors)"


# ------------------------------------------------------------------ freeze
def freeze(model: nn.Module, example: torch.Tensor, names: list[str]) -> list[str]:
    """requires_grad=False on the named blocks' parameters; returns their module names."""
    if not names:
        return []
    modules = resolve(model, example, names, "--freeze")
    by_name = dict(model.named_modules())
    for m in modules:
        for p in by_name[m].parameters():
            p.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise DflearnError(f"--freeze {','.join(names)} leaves no parameter to train; freeze fewer blocks")
    return modules


def hold_frozen(model: nn.Module, modules: list[str]) -> None:
    """Frozen modules in eval mode (BN statistics fixed, dropout off); call after `model.train()`."""
    if modules:
        by_name = dict(model.named_modules())
        for m in modules:
            by_name[m].eval()
