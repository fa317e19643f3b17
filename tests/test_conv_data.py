"""CIFAR and TinyImageNet in their real formats (small files written here), and the augmentations."""
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dflearn.data import Batches, load_dataset
from dflearn.data import cifar, tinyimagenet
from dflearn.data.augment import RANDAUGMENT, cutout, make_augment, random_crop
from dflearn.data.base import Dataset, file_digest
from dflearn.errors import DflearnError

RNG = np.random.default_rng(0)


def records(n, label_bytes, classes=10):
    labels = RNG.integers(0, classes, (n, label_bytes), dtype=np.uint8)
    pixels = RNG.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    return np.concatenate([labels, pixels], 1).tobytes(), pixels.reshape(n, 3, 32, 32), labels[:, -1]


def write_cifar10_bin(folder: Path, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in cifar.CIFAR10.bin_train + cifar.CIFAR10.bin_test:
        raw, x, y = records(n, 1)
        (folder / name).write_bytes(raw)
        out[name] = (x, y)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    return out


def test_cifar10_binary_folder_reads_records(tmp_path):
    written = write_cifar10_bin(tmp_path / "cifar10" / "cifar-10-batches-bin")
    d = load_dataset("cifar10", tmp_path)
    assert len(d.x_train) == 20 and len(d.x_test) == 4 and d.classes[3] == "class3"
    x, y = written["data_batch_2.bin"]
    assert torch.equal(d.x_train[4:8], torch.from_numpy(x)) and d.y_train[4:8].tolist() == y.tolist()
    x, y = written["test_batch.bin"]
    assert torch.equal(d.x_test, torch.from_numpy(x)) and d.y_test.tolist() == y.tolist()


def test_cifar_truncated_batch_names_the_file(tmp_path):
    folder = tmp_path / "cifar10"
    write_cifar10_bin(folder)
    raw = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(raw[:-100])
    with pytest.raises(DflearnError, match=r"data_batch_3\.bin: .*truncated") as err:
        load_dataset("cifar10", tmp_path)
    assert "\n" not in str(err.value)


def make_tar(path: Path, folder: Path, arcname: str):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)


def test_cifar100_archive_checksum_then_fine_labels(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    raw, x, fine = records(6, 2, classes=100)
    (src / "train.bin").write_bytes(raw)
    (src / "test.bin").write_bytes(records(3, 2, classes=100)[0])
    archive = tmp_path / "data" / "cifar-100-binary.tar.gz"
    archive.parent.mkdir()
    make_tar(archive, src, "cifar-100-binary")
    with pytest.raises(DflearnError, match=r"cifar-100-binary\.tar\.gz: md5 checksum mismatch") as err:
        load_dataset("cifar100", tmp_path / "data")
    assert "\n" not in str(err.value)
    monkeypatch.setitem(cifar.CIFAR100.md5, "cifar-100-binary.tar.gz", file_digest(archive))
    d = load_dataset("cifar100", tmp_path / "data")
    assert torch.equal(d.x_train, torch.from_numpy(x)) and d.y_train.tolist() == fine.tolist()
    assert len(d.x_test) == 3 and d.num_classes == 100


def test_cifar10_python_version_restricted_unpickler(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
    for name in cifar.CIFAR10.py_train + cifar.CIFAR10.py_test:
        (folder / name).write_bytes(pickle.dumps({b"data": x, b"labels": [1, 7]}, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    d = load_dataset("cifar10", tmp_path)
    assert torch.equal(d.x_test, torch.from_numpy(x.reshape(2, 3, 32, 32))) and d.y_test.tolist() == [1, 7]
    assert d.classes[7] == "c7" and len(d.x_train) == 10

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DflearnError, match=r"test_batch: not a plain CIFAR pickle .*refusing to load builtins\.print"):
        load_dataset("cifar10", tmp_path)


def test_cifar_npz_checks_shapes(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    x = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    y = np.arange(5)
    np.savez(folder / "small.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    d = load_dataset("cifar10", tmp_path)
    assert torch.equal(d.x_train, torch.from_numpy(x).permute(0, 3, 1, 2))
    np.savez(folder / "small.npz", x_train=x[:, :, :16], y_train=y, x_test=x[:2], y_test=y[:2])
    with pytest.raises(DflearnError, match=r"small\.npz: x_train must be uint8 \(N, 32, 32, 3\)"):
        load_dataset("cifar10", tmp_path)


def jpeg(size=(64, 64), mode="RGB"):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(buf, "JPEG")
    return buf.getvalue()


def write_tiny_zip(path: Path, skip: str | None = None, odd: str | None = None):
    wnids = ["n01", "n02"]
    files = {"wnids.txt": "\n".join(wnids).encode(), "words.txt": b"n01\tcat, feline\nn02\tdog\n",
             "val/val_annotations.txt": b"val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t0\t0\t10\t10\n"}
    for w in wnids:
        for i in range(3):
            files[f"train/{w}/images/{w}_{i}.JPEG"] = jpeg(mode="L" if i == 0 else "RGB")  # some are greyscale
    files["val/images/val_0.JPEG"] = jpeg()
    files["val/images/val_1.JPEG"] = jpeg()
    if odd:
        files[odd] = jpeg((32, 64))
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            if name != skip:
                z.writestr("tiny-imagenet-200/" + name, data)


def test_tinyimagenet_zip(tmp_path, monkeypatch):
    archive = tmp_path / tinyimagenet.ZIP
    write_tiny_zip(archive)
    with pytest.raises(DflearnError, match=r"tiny-imagenet-200\.zip: md5 checksum mismatch"):
        load_dataset("tinyimagenet", tmp_path)
    monkeypatch.setattr(tinyimagenet, "MD5", file_digest(archive))
    d = load_dataset("tinyimagenet", tmp_path)
    assert d.x_train.shape == (6, 3, 64, 64) and d.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.y_test.tolist() == [1, 0] and d.classes == ["cat", "dog"]

    write_tiny_zip(archive, skip="val/images/val_1.JPEG")
    monkeypatch.setattr(tinyimagenet, "MD5", file_digest(archive))
    with pytest.raises(DflearnError, match=r"tiny-imagenet-200\.zip: val/images/val_1\.JPEG is missing") as err:
        load_dataset("tinyimagenet", tmp_path)
    assert "\n" not in str(err.value)

    write_tiny_zip(archive, odd="train/n02/images/n02_1.JPEG")
    monkeypatch.setattr(tinyimagenet, "MD5", file_digest(archive))
    with pytest.raises(DflearnError, match=r"train/n02/images/n02_1\.JPEG is 32x64, not 64x64"):
        load_dataset("tinyimagenet", tmp_path)


def test_tinyimagenet_unpacked_folder(tmp_path):
    archive = tmp_path / "t.zip"
    write_tiny_zip(archive)
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path)
    d = load_dataset("tinyimagenet", tmp_path)
    assert d.x_train.shape == (6, 3, 64, 64) and d.source.endswith("tiny-imagenet-200")


@pytest.mark.parametrize("name,train,test,classes,hw", [("cifar10", 10000, 10000, 10, 32),
                                                        ("cifar100", 10000, 10000, 100, 32),
                                                        ("tinyimagenet", 2000, 1000, 200, 64)])
def test_shared_copies_load(name, train, test, classes, hw):
    try:
        d = load_dataset(name)
    except DflearnError as exc:
        pytest.skip(str(exc))
    assert (len(d.x_train), len(d.x_test), d.num_classes, d.input_shape) == (train, test, classes, (3, hw, hw))
    assert 0 <= d.y_test.min() and d.y_test.max() < classes and len(d.y_train.unique()) == classes


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.rand(16, 3, 8, 8)
    out = random_crop(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    offsets = set()
    for i in range(16):
        hits = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 4  # a different offset per image, not one per batch


def test_cutout_one_square_per_image():
    x = torch.rand(32, 3, 32, 32)
    out = cutout(x, torch.Generator().manual_seed(1))
    fill = x.mean(dim=(0, 2, 3))
    for i in range(32):
        changed = (out[i] != x[i]).any(0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        assert 0 < len(rows) <= 16 and 0 < len(cols) <= 16
        box = out[i][:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        torch.testing.assert_close(box, fill.view(3, 1, 1).expand_as(box))


def test_randaugment_ops_and_reproducibility():
    x = torch.rand(64, 3, 32, 32)
    s = torch.full((64,), 0.3)
    torch.testing.assert_close(RANDAUGMENT["brightness"](x, s), (x * 1.27).clamp(0, 1))
    torch.testing.assert_close(RANDAUGMENT["solarize"](x, s), torch.where(x < 0.7, x, 1 - x))
    torch.testing.assert_close(RANDAUGMENT["translate_x"](x, torch.zeros(64)), x)
    shifted = RANDAUGMENT["translate_x"](x, torch.full((64,), 0.25 * 331 / 150))  # a quarter of the side: 8 pixels
    torch.testing.assert_close(shifted[..., :-8], x[..., 8:])  # sampled 8 pixels to the right
    assert shifted[..., -8:].abs().max() == 0  # black where the image left
    for name, op in RANDAUGMENT.items():
        y = op(x, s)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1, name
    aug = make_augment("randaugment+cutout+crop+flip")
    a, b = aug(x, torch.Generator().manual_seed(3)), aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_batches_augment_on_pixels_then_normalise():
    d = Dataset("t", torch.full((4, 3, 2, 2), 255, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), ["a"],
                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    seen = []
    x, _ = next(iter(Batches(d, "train", 4, augment=lambda x, g: seen.append(x.max()) or x * 0.5)))
    assert seen == [1.0]  # the augmentation saw pixels in [0, 1]
    torch.testing.assert_close(x, torch.zeros_like(x))  # (0.5 - 0.5) / 0.25
