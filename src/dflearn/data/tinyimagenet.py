"""TinyImageNet (Stanford CS231n): 200 classes of 64x64 colour images.

Read from the official zip (MD5-verified) or its unpacked folder; JPEGs are
decoded with Pillow (a few are greyscale and become RGB). The official test
split has no labels, so, as in the papers, the labelled val split is the test set.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DflearnError
from .base import Dataset, download as fetch, find_folder, register_dataset, verify_checksum

ZIP, MD5 = "tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDERS = ("tiny-imagenet-200", "tinyimagenet", "tiny-imagenet", "tiny-imagenet-200-subset")
SIZE = 64


class Source:
    """Files of the unpacked folder or of the zip (by their path below tiny-imagenet-200/)."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        if self.zip:
            self.names = {n.partition("/")[2]: n for n in self.zip.namelist() if not n.endswith("/")}

    def list(self, folder: str) -> list[str]:
        if self.zip:
            return sorted(n for n in self.names if n.startswith(folder + "/"))
        return sorted(str(p.relative_to(self.path)) for p in (self.path / folder).iterdir()) \
            if (self.path / folder).is_dir() else []

    def has(self, name: str) -> bool:
        return name in self.names if self.zip else (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(self.names[name]) if self.zip else (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError):
            raise DflearnError(f"{self.path}: {name} is missing; the {'zip' if self.zip else 'folder'} is incomplete, fetch it again") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise DflearnError(f"{self.path}: cannot read {name} ({exc}); fetch it again") from None

    def image(self, name: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(self.read(name))) as im:
                if im.size != (SIZE, SIZE):  # checked on the header, before decoding (a bomb never decodes)
                    raise DflearnError(f"{self.path}: {name} is {im.size[0]}x{im.size[1]}, not {SIZE}x{SIZE}; "
                                       f"this is not TinyImageNet's image, fetch the data again")
                x = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError,
                Image.DecompressionBombError) as exc:
            raise DflearnError(f"{self.path}: {name} is not a readable JPEG ({exc}); fetch the data again") from None
        if x.shape != (SIZE, SIZE, 3):
            raise DflearnError(f"{self.path}: {name} is {x.shape[1]}x{x.shape[0]}, not {SIZE}x{SIZE}; "
                               f"this is not TinyImageNet's image, fetch the data again")
        return x


def locate(root: Path, download: bool) -> Path:
    folder = find_folder(root, FOLDERS, ("wnids.txt", "val/val_annotations.txt"))
    if folder is not None:
        return folder
    for archive in (root / ZIP, root / "tinyimagenet" / ZIP):
        if archive.is_file():
            verify_checksum(archive, MD5)
            return archive
    if not download:
        raise DflearnError(f"tinyimagenet not found under {root}: put {ZIP} (or its unpacked tiny-imagenet-200/) there, "
                           f"set DFLEARN_DATA_DIR / --data-dir, or pass --download")
    fetch([URL], root / ZIP, MD5)
    return root / ZIP


@register_dataset("tinyimagenet")
def load_tinyimagenet(root: Path, download: bool = False) -> Dataset:
    """TinyImageNet: 100,000 train / 10,000 val (used as test) 64x64 images, 200 classes."""
    src = Source(locate(root, download))
    wnids = src.read("wnids.txt").decode().split()
    label = {w: i for i, w in enumerate(wnids)}
    words = {}  # wnid -> "name, synonym, ...", optional
    if src.has("words.txt"):
        words = dict(line.split("\t", 1) for line in src.read("words.txt").decode().splitlines() if "\t" in line)
    train = [(name, label[w]) for w in wnids for name in src.list(f"train/{w}/images") if name.endswith(".JPEG")]
    val = []
    for line in src.read("val/val_annotations.txt").decode().splitlines():
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label:
            raise DflearnError(f"{src.path}: val/val_annotations.txt has a bad line {line[:60]!r}; fetch the data again")
        val.append((f"val/images/{fields[0]}", label[fields[1]]))
    if not train:
        raise DflearnError(f"{src.path}: no training images under train/<wnid>/images/; fetch the data again")

    def stack(items):
        x = np.stack([src.image(n) for n, _ in items]).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor([y for _, y in items], dtype=torch.int64)

    (xtr, ytr), (xte, yte) = stack(train), stack(val)
    classes = [words.get(w, w).split(",")[0].strip() for w in wnids]
    return Dataset("tinyimagenet", xtr, ytr, xte, yte, classes=classes, source=str(src.path))
