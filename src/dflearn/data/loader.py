"""Batches from in-memory tensors, normalised and augmented on the training device."""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from .base import Dataset

# An augmentation takes a float batch (N, C, H, W) and a generator, returns a batch.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Batches:
    """Iterate over one split of a `Dataset` in minibatches.

    The whole split is moved to `device` once; each batch is an index into it,
    converted to float and normalised there. Shuffling and augmentation draw
    from `generator` alone, so a run is reproduced (and resumed) by its state.
    """

    def __init__(self, data: Dataset, split: str = "train", batch_size: int = 64, *,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 augment: Augment | None = None, device: torch.device | str = "cpu"):
        self.x = getattr(data, f"x_{split}").to(device)
        self.y = getattr(data, f"y_{split}").to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.augment = augment
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(data.mean, device=device).view(shape)
        self.inv_std = 1 / torch.tensor(data.std, device=device).view(shape)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            # drawn on the CPU so the order is the same on every device
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
        for start in range(0, n, self.batch_size):
            if self.shuffle:
                idx = order[start:start + self.batch_size]
                x, y = self.x[idx], self.y[idx]
            else:
                x, y = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            x = x.float().div_(255)
            if self.augment is not None:  # on [0, 1] pixels: colour ops need the true range
                x = self.augment(x, self.generator)
            x = (x - self.mean).mul_(self.inv_std)
            yield x, y

