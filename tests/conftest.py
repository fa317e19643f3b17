import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def data_dir() -> Path:
    """The real data sets (MNIST, CIFAR subsets...) beside the checkout, or $DFLEARN_DATA_DIR."""
    root = Path(os.environ.get("DFLEARN_DATA_DIR", SHARED_DATA))
    if not (root / "mnist").exists():
        pytest.skip(f"real data not found in {root}; set DFLEARN_DATA_DIR")
    return root


@pytest.fixture(autouse=True)
def _outside_checkout(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so a default `runs/...` never lands in the checkout."""
    monkeypatch.chdir(tmp_path)
