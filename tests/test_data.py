"""Data loaders: real files, and one-line errors for bad ones."""
import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

import dflearn
from dflearn.data import Batches, make_augment
from dflearn.data.idx import FILES, load_idx_set, read_idx


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(folder, n=20):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f, shape in zip(FILES, [(n, 28, 28), (n,), (n // 2, 28, 28), (n // 2,)]):
        write_idx(folder / f, rng.integers(0, 10 if len(shape) == 1 else 256, shape))
    return folder


def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    write_idx(tmp_path / "x.gz", a)
    assert (read_idx(tmp_path / "x.gz") == a).all()


def test_idx_set_from_a_local_folder_without_checksums(tmp_path):
    fake_mnist(tmp_path / "mnist")
    d = load_idx_set("mnist", tmp_path, False, {}, (), [str(i) for i in range(10)], verify=False)
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.y_train.dtype == torch.int64


def test_truncated_file_is_named(tmp_path):
    folder = fake_mnist(tmp_path / "mnist")
    raw = gzip.decompress((folder / FILES[0]).read_bytes())
    (folder / FILES[0]).write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(dflearn.DflearnError, match=f"{FILES[0]}.*truncated"):
        read_idx(folder / FILES[0])
    (folder / FILES[1]).write_bytes((folder / FILES[1]).read_bytes()[:30])  # a cut gzip stream
    with pytest.raises(dflearn.DflearnError, match=f"{FILES[1]}.*truncated or corrupt"):
        read_idx(folder / FILES[1])


def test_checksum_mismatch_is_named(tmp_path):
    fake_mnist(tmp_path / "mnist")  # right names, wrong bytes
    with pytest.raises(dflearn.DflearnError, match="train-images-idx3-ubyte.gz: md5 checksum mismatch"):
        dflearn.load_dataset("mnist", tmp_path)


def test_missing_folder_says_where_to_put_files(tmp_path):
    with pytest.raises(dflearn.DflearnError, match="mnist not found.*--download"):
        dflearn.load_dataset("mnist", tmp_path)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(dflearn.DflearnError, match="unknown dataset 'nope'.*digits.*mnist"):
        dflearn.load_dataset("nope")


def test_real_mnist_and_fashion_mnist(data_dir):
    for name in ("mnist", "fashion-mnist"):
        d = dflearn.load_dataset(name, data_dir)
        assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
        assert d.y_train.bincount().min() > 5000  # all ten classes, roughly balanced


def test_digits_split_and_normalisation():
    d = dflearn.load_dataset("digits")
    assert len(d.x_train) + len(d.x_test) == 1797 and d.input_shape == (1, 8, 8)
    x = torch.cat([x for x, _ in Batches(d, "train", 100)])
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-2  # train statistics, so mean 0 / std 1


def test_batches_cover_the_split_once_in_a_seeded_order():
    d = dflearn.load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    ys = torch.cat([y for _, y in Batches(d, "train", 64, shuffle=True, generator=g)])
    assert ys.bincount().tolist() == d.y_train.bincount().tolist()
    g2 = torch.Generator().manual_seed(0)
    ys2 = torch.cat([y for _, y in Batches(d, "train", 64, shuffle=True, generator=g2)])
    assert torch.equal(ys, ys2)


def test_flip_flips_about_half_the_images():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1000, 1, 2, 4).clone()
    out = make_augment("flip")(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).float().mean()
    assert 0.4 < flipped < 0.6
    assert torch.equal(out[out[:, 0, 0, 0] == 3], x[:1].flip(-1).expand_as(out[out[:, 0, 0, 0] == 3]))
    with pytest.raises(dflearn.DflearnError, match="unknown augmentation 'spin'"):
        make_augment("flip+spin")
