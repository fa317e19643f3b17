"""Batched data augmentation, applied on the training device.

Each augmentation is `fn(x, generator) -> x` on a normalised float batch
(N, C, H, W); `make_augment("flip+crop")` chains registered ones in order.
"""
from __future__ import annotations

import torch

from ..errors import DflearnError
from .loader import Augment

AUGMENTATIONS: dict[str, Augment] = {}


def register_augment(name: str):
    def wrap(fn: Augment) -> Augment:
        AUGMENTATIONS[name] = fn
        return fn
    return wrap


@register_augment("flip")
def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2 (the LAS paper's augmentation)."""
    flip = torch.rand(len(x), generator=generator).to(x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def make_augment(spec: str | None) -> Augment | None:
    """'flip', 'flip+crop', ... -> one function applying them in order; None/'none' -> None."""
    if not spec or spec == "none":
        return None
    names = spec.split("+")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise DflearnError(f"unknown augmentation '{unknown[0]}'; choose from: {', '.join(sorted(AUGMENTATIONS))} "
                           f"(combine with '+', e.g. flip+crop)")
    fns = [AUGMENTATIONS[n] for n in names]
    if len(fns) == 1:
        return fns[0]

    def chain(x, generator):
        for fn in fns:
            x = fn(x, generator)
        return x
    return chain
