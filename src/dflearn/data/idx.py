"""MNIST and Fashion-MNIST from their canonical gzipped IDX files."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DflearnError
from .base import Dataset, download as fetch, find_folder, register_dataset, verify_checksum

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

MNIST_MD5 = dict(zip(FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                             "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))
FASHION_MD5 = dict(zip(FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                               "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")))
MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/",
              "http://yann.lecun.com/exdb/mnist/")
FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file, checking its header against its length."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DflearnError(f"{path}: not a readable gzip file ({exc}); the file is truncated or corrupt, fetch it again")
    if len(raw) < 4 or raw[0:2] != b"\0\0" or raw[2] != 0x08:
        raise DflearnError(f"{path}: not an IDX file of unsigned bytes (bad magic number); fetch it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DflearnError(f"{path}: {len(raw)} bytes where the header {dims} promises {expected}; "
                           f"the file is truncated or corrupt, fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_set(name: str, root: Path, download: bool, md5: dict, urls: tuple[str, ...],
                 classes: list[str], verify: bool = True) -> Dataset:
    folder = find_folder(root, (name, name.replace("-", "_"), name.upper()), FILES)
    if folder is None:
        folder = root / name
        if not download:
            raise DflearnError(f"{name} not found: put {', '.join(FILES)} in {folder} "
                               f"(or set DFLEARN_DATA_DIR / --data-dir), or pass --download")
        for f in FILES:
            if not (folder / f).exists():
                fetch([u + f for u in urls], folder / f, md5[f])
    if verify:
        for f in FILES:
            verify_checksum(folder / f, md5[f])
    xtr, ytr, xte, yte = (read_idx(folder / f) for f in FILES)
    to_x = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)  # noqa: E731
    to_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return Dataset(name, to_x(xtr), to_y(ytr), to_x(xte), to_y(yte), classes=classes, source=str(folder))


@register_dataset("mnist")
def load_mnist(root: Path, download: bool = False) -> Dataset:
    """MNIST (LeCun & Cortes): 60,000 train / 10,000 test 28x28 grey digits."""
    return load_idx_set("mnist", root, download, MNIST_MD5, MNIST_URLS, [str(i) for i in range(10)])


@register_dataset("fashion-mnist")
def load_fashion_mnist(root: Path, download: bool = False) -> Dataset:
    """Fashion-MNIST (Zalando, MIT licence): 60,000 train / 10,000 test 28x28 grey clothes."""
    return load_idx_set("fashion-mnist", root, download, FASHION_MD5, FASHION_URLS, FASHION_CLASSES)
