"""scikit-learn's bundled 8x8 digits: real data that needs no download (the default)."""
from __future__ import annotations

from pathlib import Path

import torch

from .base import Dataset, register_dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # a fixed split, so every run and every user sees the same test set


@register_dataset("digits")
def load_digits(root: Path | None = None, download: bool = False) -> Dataset:
    """1,797 grey 8x8 digits (UCI, via sklearn); a fixed 80/20 train/test split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    # pixel values are 0..16: map them onto 0..255 so every set shares the uint8 path
    x = torch.from_numpy(d.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(d.target).long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(len(x) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test],
                   classes=[str(i) for i in range(10)], source="sklearn.datasets.load_digits")
