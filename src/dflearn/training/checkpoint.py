"""Checkpoints that are written atomically and load without running code.

Everything saved is tensors, numbers, strings, lists and dicts, so a checkpoint
loads with `torch.load(weights_only=True)`: opening one cannot execute code.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..errors import DflearnError

CHECKPOINT = "checkpoint.pt"


def save_atomic(state: dict, path: Path, keep: str = "") -> None:
    """Write to a unique temporary file, fsync, then rename: a crash, a full disk or a planted
    symlink leaves the old checkpoint whole (see rundir.atomic_write)."""
    from .rundir import atomic_write

    atomic_write(path, lambda f: torch.save(state, f), keep=keep)


def load(path: Path, map_location="cpu") -> dict:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DflearnError(f"no checkpoint at {path}; the run directory is incomplete: start a new run "
                           f"(without --resume) in another --out") from None
    except pickle.UnpicklingError:  # weights_only refused a global: a code object or a foreign class
        raise DflearnError(f"{path}: refused to load, it holds Python objects beyond tensors and plain data "
                           f"(loading them could run code); dflearn never writes such files, so do not trust "
                           f"this one") from None
    except IsADirectoryError:
        raise DflearnError(f"{path} is a directory, not a checkpoint") from None
    except Exception as exc:  # a torn or foreign file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise DflearnError(f"{path}: unreadable checkpoint ({first}); "
                           f"delete the run directory and start again") from None
    if not isinstance(state, dict):
        raise DflearnError(f"{path}: not a dflearn checkpoint (a {type(state).__name__}, not a mapping)")
    return state


KEYS = ("config", "epoch", "step", "history", "wall", "model", "rule", "optimizer", "feedback_optimizer",
        "schedulers", "rng")


def check_keys(state: dict, path: Path) -> None:
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise DflearnError(f"{path}: not a complete dflearn checkpoint (missing {', '.join(missing)}); "
                           f"the run directory is damaged, start a new run")


def rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
