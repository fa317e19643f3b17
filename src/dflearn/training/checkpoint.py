"""Checkpoints that are written atomically and load without running code.

Everything saved is tensors, numbers, strings, lists and dicts, so a checkpoint
loads with `torch.load(weights_only=True)`: opening one cannot execute code.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from ..errors import DflearnError

CHECKPOINT = "checkpoint.pt"


def save_atomic(state: dict, path: Path) -> None:
    """Write to a temporary file, then rename: a crash leaves the old checkpoint whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DflearnError(f"no checkpoint at {path}; the run never finished an epoch, start it again without --resume")
    except pickle.UnpicklingError:  # weights_only refused a global: a code object or a foreign class
        raise DflearnError(f"{path}: refused to load, it holds Python objects beyond tensors and plain data "
                           f"(loading them could run code); dflearn never writes such files, so do not trust "
                           f"this one") from None
    except Exception as exc:  # a torn or foreign file
        raise DflearnError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0][:120]}); "
                           f"delete the run directory and start again") from None


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
