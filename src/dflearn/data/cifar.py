"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), from any of their usual forms.

Looked up in this order under the data folder: the official binary batches
(unpacked, or inside the official .tar.gz, MD5-verified), the official python
version (read with a restricted unpickler: a pickle can run code, so only plain
arrays, lists, dicts and bytes are admitted), then a `.npz` holding uint8
`x_train, y_train, x_test, y_test` with images (N, 32, 32, 3). `--download`
fetches the binary archive.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DflearnError
from .base import Dataset, download as fetch, register_dataset, verify_checksum

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class Variant:
    """Where one CIFAR variant keeps what."""

    name: str
    num_classes: int
    folders: tuple[str, ...]  # candidate folders under the data root
    bin_dir: str  # the folder inside the binary archive
    bin_train: tuple[str, ...]
    bin_test: tuple[str, ...]
    label_bytes: int  # bytes before the pixels in a record; the last one is the label
    bin_names: str  # class names file of the binary version
    py_dir: str
    py_train: tuple[str, ...]
    py_test: tuple[str, ...]
    py_label: str
    py_meta: tuple[str, str]  # (file, key) of the class names
    bin_archive: str
    py_archive: str
    md5: dict  # archive name -> MD5


CIFAR10 = Variant(
    "cifar10", 10, ("cifar10", "cifar-10", "CIFAR10"), "cifar-10-batches-bin",
    tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1, "batches.meta.txt",
    "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels",
    ("batches.meta", "label_names"), "cifar-10-binary.tar.gz", "cifar-10-python.tar.gz",
    {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
     "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"})
CIFAR100 = Variant(
    "cifar100", 100, ("cifar100", "cifar-100", "CIFAR100"), "cifar-100-binary",
    ("train.bin",), ("test.bin",), 2, "fine_label_names.txt",
    "cifar-100-python", ("train",), ("test",), "fine_labels", ("meta", "fine_label_names"),
    "cifar-100-binary.tar.gz", "cifar-100-python.tar.gz",
    {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
     "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"})
URL = "https://www.cs.toronto.edu/~kriz/"


class Files:
    """Read members of an unpacked folder or of a .tar.gz by their path inside it."""

    def __init__(self, path: Path):
        self.path = path
        self.tar = tarfile.open(path, "r:gz") if path.is_file() else None
        self.names = set(self.tar.getnames()) if self.tar else None

    def has(self, name: str) -> bool:
        return name in self.names if self.tar else (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if self.tar is None:
            return (self.path / name).read_bytes()
        try:
            return self.tar.extractfile(name).read()
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise DflearnError(f"{self.path}: cannot read {name} ({exc}); the archive is truncated or corrupt, fetch it again")

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if self.tar else str(self.path / name)


def read_binary(files: Files, name: str, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of label byte(s) + 3072 pixel bytes (R, G, B planes)."""
    raw = files.read(name)
    record = label_bytes + PIXELS
    if not raw or len(raw) % record:
        raise DflearnError(f"{files.where(name)}: {len(raw)} bytes is not a whole number of {record}-byte records; "
                           f"the file is truncated or corrupt, fetch it again")
    rows = np.frombuffer(raw, np.uint8).reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_bytes - 1].astype(np.int64)


class SafeUnpickler(pickle.Unpickler):
    """Admits numpy arrays and builtin containers only; anything else is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how Python 3 writes bytes at protocol 2; encodes text, nothing else

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        found = super().find_class(module, name)
        if name == "_reconstruct":  # the shape it is given is allocated at once: bound it
            return _bounded(found)
        return found


MAX_ELEMENTS = 1 << 31  # CIFAR's largest array (train 50,000 x 3,072 bytes) is 14x smaller


def _bounded(reconstruct):
    def checked(subtype, shape, dtype):
        n = 1
        for d in (shape if isinstance(shape, tuple) else (shape,)):
            if not isinstance(d, int) or d < 0:
                raise pickle.UnpicklingError(f"an array shape {shape!r} that is not a tuple of sizes")
            n *= d
        if n > MAX_ELEMENTS:
            raise pickle.UnpicklingError(f"it asks for an array of {n:,} elements, far beyond any CIFAR batch")
        return reconstruct(subtype, shape, dtype)
    return checked


def unpickle(files: Files, name: str) -> dict:
    try:
        obj = SafeUnpickler(io.BytesIO(files.read(name)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        raise DflearnError(f"{files.where(name)}: not a plain CIFAR pickle ({exc}); use the binary version or fetch it again")
    if not isinstance(obj, dict):
        raise DflearnError(f"{files.where(name)}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_python(files: Files, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = unpickle(files, name)
    try:
        x, y = np.asarray(d.get("data")), labels(np.asarray(d.get(label_key)), files.where(name))
    except (TypeError, ValueError, MemoryError):
        x, y = np.zeros((0,)), np.zeros((1,))
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != PIXELS or len(x) != len(y):
        raise DflearnError(f"{files.where(name)}: expected uint8 'data' (N, {PIXELS}) and {len(x)} '{label_key}'; "
                           f"the file is corrupt, fetch it again")
    return x.reshape(-1, 3, 32, 32), y


def labels(y: np.ndarray, where: str) -> np.ndarray:
    """Class labels as int64 (N,): integers only (float labels would be truncated silently)."""
    if y.ndim != 1:
        raise DflearnError(f"{where}: labels must have shape (N,), got {y.shape}; the file is not in the "
                           f"expected form, rewrite it")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and len(y) and np.isfinite(y).all() and (y == np.round(y)).all():
            return y.astype(np.int64)  # whole numbers stored as floats are fine
        raise DflearnError(f"{where}: labels must be whole numbers, got {y.dtype} values; rewrite the file")
    return y.astype(np.int64)


def read_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
            names = [str(s) for s in z["label_names"]] if "label_names" in z else None
    except Exception as exc:  # a foreign file: zip, header and array errors of every kind
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise DflearnError(f"{path}: not an .npz with x_train, y_train, x_test, y_test "
                           f"({type(exc).__name__}: {first}); rewrite it or remove it") from None
    for key, x in (("x_train", arrays[0]), ("x_test", arrays[2])):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise DflearnError(f"{path}: {key} must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
    xtr, ytr, xte, yte = arrays
    ytr, yte = labels(ytr, f"{path}: y_train"), labels(yte, f"{path}: y_test")
    return xtr.transpose(0, 3, 1, 2), ytr, xte.transpose(0, 3, 1, 2), yte, names


def locate(spec: Variant, root: Path) -> tuple[str, Path] | None:
    """(kind, path) of the first usable copy under root: bin/py folder or archive, or npz."""
    folders = [root / f for f in spec.folders] + [root]
    for kind, inner, archive, needed in (("bin", spec.bin_dir, spec.bin_archive, spec.bin_train + spec.bin_test),
                                         ("py", spec.py_dir, spec.py_archive, spec.py_train + spec.py_test)):
        for folder in folders:
            for candidate in (folder / inner, folder):
                if all((candidate / f).is_file() for f in needed):
                    return kind, candidate
        for folder in folders:
            if (folder / archive).is_file():
                return kind, folder / archive
    for folder in folders[:-1]:
        found = sorted(folder.glob("*.npz")) if folder.is_dir() else []
        if found:
            return "npz", found[0]
    return None


def load_cifar(spec: Variant, root: Path, download: bool) -> Dataset:
    found = locate(spec, root)
    binary = spec.bin_archive
    if found is None:
        if not download:
            raise DflearnError(f"{spec.name} not found under {root}: put {binary} (or its unpacked {spec.bin_dir}/, "
                               f"or a .npz) in {root / spec.folders[0]}, set DFLEARN_DATA_DIR / --data-dir, or pass --download")
        fetch([URL + binary], root / spec.folders[0] / binary, spec.md5[binary])
        found = ("bin", root / spec.folders[0] / binary)
    kind, path = found
    names = None
    if kind == "npz":
        xtr, ytr, xte, yte, names = read_npz(path)
    else:
        if path.is_file():
            verify_checksum(path, spec.md5[path.name])
        files = Files(path)
        inner = ((spec.bin_dir if kind == "bin" else spec.py_dir) + "/") if files.tar else ""
        if kind == "bin":
            read = lambda f: read_binary(files, inner + f, spec.label_bytes)  # noqa: E731
            train, test = spec.bin_train, spec.bin_test
            if files.has(inner + spec.bin_names):
                names = files.read(inner + spec.bin_names).decode().split()
        else:
            read = lambda f: read_python(files, inner + f, spec.py_label)  # noqa: E731
            train, test = spec.py_train, spec.py_test
            meta, key = spec.py_meta
            if files.has(inner + meta):
                names = [n.decode() if isinstance(n, bytes) else n for n in unpickle(files, inner + meta).get(key, [])]
        parts = [read(f) for f in train + test]
        xtr, ytr = (np.concatenate(a) for a in zip(*parts[:len(train)]))
        xte, yte = (np.concatenate(a) for a in zip(*parts[len(train):]))
    names = names or [str(i) for i in range(spec.num_classes)]
    if max(ytr.max(), yte.max()) >= len(names) or min(ytr.min(), yte.min()) < 0:
        raise DflearnError(f"{path}: labels outside 0..{len(names) - 1}; the file is corrupt, fetch it again")
    t = lambda a, dtype: torch.from_numpy(np.ascontiguousarray(a).astype(dtype))  # noqa: E731
    return Dataset(spec.name, t(xtr, np.uint8), t(ytr, np.int64), t(xte, np.uint8), t(yte, np.int64),
                   classes=names, source=str(path))


@register_dataset("cifar10")
def load_cifar10(root: Path, download: bool = False) -> Dataset:
    """CIFAR-10: 50,000 train / 10,000 test 32x32 colour images, 10 classes."""
    return load_cifar(CIFAR10, root, download)


@register_dataset("cifar100")
def load_cifar100(root: Path, download: bool = False) -> Dataset:
    """CIFAR-100: 50,000 train / 10,000 test 32x32 colour images, 100 fine classes."""
    return load_cifar(CIFAR100, root, download)
