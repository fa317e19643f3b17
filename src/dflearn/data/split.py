"""The validation split: a fixed, stratified part of the training split held out.

Drawn with its own generator seeded by `SPLIT_SEED`, never by the run's seed, so
every rule and every seed of a grid sees the same validation images, and a
resumed run recomputes exactly the split it started with. Per class,
round(fraction x n_class) images (at least one when the fraction is positive
and the class has two or more) go to validation; the rest stay in the training
split in their original order. The normalisation statistics are recomputed on
the remaining training images, so nothing of the validation split (nor of the
test split) reaches training.
"""
from __future__ import annotations

import dataclasses
import hashlib

import torch

from ..errors import DflearnError
from .base import Dataset

SPLIT_SEED = 20_240_601  # fixed: the split does not depend on --seed


def validation_indices(labels: torch.Tensor, fraction: float, seed: int = SPLIT_SEED) -> torch.Tensor:
    """Sorted indices (into the training split) of the validation images."""
    if not 0 <= fraction < 1:
        raise DflearnError(f"--val-fraction must be at least 0 and below 1, got {fraction}")
    if fraction == 0:
        return torch.empty(0, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    labels = labels.cpu()
    for c in torch.unique(labels).tolist():  # sorted classes, so the draw order is fixed
        members = (labels == c).nonzero().flatten()
        take = round(fraction * len(members))
        if take == 0 and len(members) > 1:
            take = 1
        take = min(take, len(members) - 1)  # keep at least one training image per class
        chosen.append(members[torch.randperm(len(members), generator=g)[:take]])
    return torch.cat(chosen).sort().values


def split_validation(data: Dataset, fraction: float, seed: int = SPLIT_SEED) -> Dataset:
    """A copy of `data` whose training split lost the validation images to `x_val`, `y_val`.
    A text corpus loses the last `fraction` of its training text to `val` instead (contiguous,
    as language-model splits are: random windows would overlap the training text)."""
    from .text import is_text

    if fraction == 0:
        return data
    if is_text(data):
        cut = len(data.train) - round(fraction * len(data.train))
        if not 0 < cut < len(data.train):
            raise DflearnError(f"{data.name}: --val-fraction {fraction} leaves no training or no validation text")
        return dataclasses.replace(data, train=data.train[:cut], val=data.train[cut:])
    val = validation_indices(data.y_train, fraction, seed)
    keep = torch.ones(len(data.y_train), dtype=torch.bool)
    keep[val] = False
    if not keep.any() or len(val) == 0:
        raise DflearnError(f"{data.name}: --val-fraction {fraction} leaves no training or no validation "
                           f"image of {len(data.y_train)}; choose another fraction")
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep],
                               x_val=data.x_train[val], y_val=data.y_train[val], mean=(), std=(),
                               val_indices=val)


def digest(indices: torch.Tensor) -> str:
    """A short fingerprint of the validation indices (recorded in the summary)."""
    return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def has_validation(data) -> bool:
    return getattr(data, "x_val", None) is not None


def record(data, fraction: float) -> tuple[int, dict | None]:
    """(size, description) of the validation split, for the run's summary."""
    if getattr(data, "val_indices", None) is not None:
        return len(data.val_indices), {"seed": SPLIT_SEED, "fraction": fraction, "stratified": True,
                                       "sha256_16": digest(data.val_indices)}
    if getattr(data, "val", None) is not None:
        return len(data.val), {"fraction": fraction, "characters": len(data.val),
                               "from": "the end of the training text"}
    return 0, None
