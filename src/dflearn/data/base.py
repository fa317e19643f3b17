"""Data sets as in-memory tensors, and the registry that names them.

Every data set is held whole as uint8 images (N, C, H, W) plus int64 labels:
small enough for every set this project uses (CIFAR's 50k images are 150 MB),
and it turns batching into one index operation instead of a worker pool.
Images become float only per batch, on the training device (see `loader.py`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import DflearnError


@dataclass
class Dataset:
    """A labelled image data set with a train and a test split, all in memory."""

    name: str
    x_train: torch.Tensor  # uint8 (N, C, H, W)
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str = ""  # where the files were read from, for the run's record
    mean: tuple[float, ...] = field(default=())  # per channel, in [0, 1] units
    std: tuple[float, ...] = field(default=())
    # the validation split, held out of the training split (data/split.py); None: none
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    val_indices: torch.Tensor | None = None  # positions of x_val in the full training split

    def __post_init__(self):
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DflearnError(f"{self.name}: {split} images must be uint8 (N, C, H, W), got {tuple(x.shape)} {x.dtype}")
            if len(x) != len(y):
                raise DflearnError(f"{self.name}: {split} has {len(x)} images but {len(y)} labels; the files are inconsistent, fetch them again")
            if y.dim() != 1 or y.dtype != torch.int64:
                raise DflearnError(f"{self.name}: {split} labels must be int64 (N,), got {tuple(y.shape)} {y.dtype}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise DflearnError(f"{self.name}: {split} labels outside 0..{len(self.classes) - 1}; "
                                   f"the files are corrupt, fetch them again")
            if len(x) == 0:
                raise DflearnError(f"{self.name}: the {split} split is empty; the files are incomplete")
        if not self.mean:  # normalise with the training split's own statistics
            x = self.x_train.float().div_(255)
            self.mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
            self.std = tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self):
        val = f" / {len(self.x_val)} val" if self.x_val is not None else ""
        return (f"Dataset({self.name}: {len(self.x_train)} train{val} / {len(self.x_test)} test, "
                f"input {self.input_shape}, {self.num_classes} classes)")


DatasetLoader = Callable[..., Dataset]
DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str):
    """Decorator: make a loader `fn(root: Path, download: bool) -> Dataset` available by name."""
    def wrap(fn: DatasetLoader) -> DatasetLoader:
        DATASETS[name] = fn
        return fn
    return wrap


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where data sets live: the argument, else $DFLEARN_DATA_DIR, else ~/.cache/dflearn."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("DFLEARN_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dflearn"


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a registered data set by name (see `DATASETS`); `text:PATH` reads a UTF-8 file."""
    if name.startswith("text:"):
        from .text import load_text
        return load_text(name[len("text:"):])
    if name not in DATASETS:
        raise DflearnError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](data_root(root), download=download)


def find_folder(root: Path, names: tuple[str, ...], needed: tuple[str, ...]) -> Path | None:
    """The first of root/<name> (or root itself) that holds every file in `needed`."""
    for folder in [root / n for n in names] + [root]:
        if all((folder / f).exists() for f in needed):
            return folder
    return None


def file_digest(path: Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: Path, expected: str, algorithm: str = "md5") -> None:
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DflearnError(
            f"{path}: {algorithm} checksum mismatch (expected {expected}, got {actual}); "
            f"the file is corrupt or not the canonical one: delete it and fetch it again")


def download(urls: list[str], target: Path, md5: str | None) -> None:
    """Fetch the first URL that works into `target` (atomically), verifying its MD5."""
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        except OSError as exc:
            errors.append(f"{url}: {exc}")
            tmp.unlink(missing_ok=True)
            continue
        if md5 is not None and file_digest(tmp) != md5:
            errors.append(f"{url}: checksum mismatch")
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, target)
        return
    raise DflearnError(f"could not download {target.name} ({'; '.join(errors)}); "
                       f"copy the file into {target.parent} by hand")
