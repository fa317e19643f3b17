"""The bad-input catalogue: every case ends in one line (no traceback) and the right exit code, and
nothing is lost: the previous checkpoint loads, metrics.jsonl agrees with it, no JSON holds NaN,
no temporary is left behind.

Cases run in-process through `dflearn.cli.main([...])` where no process boundary matters (fast);
in subprocesses where it does (two writers at once, a kill during a checkpoint write, a killed
peer under --nproc 2, a killed launcher).
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import dflearn
from dflearn import DflearnError
from dflearn.cli import main
from dflearn.training import rundir
from dflearn.training.checkpoint import CHECKPOINT, load

SRC = str(Path(dflearn.__file__).resolve().parents[1])
TINY = ["--rule", "dfa", "-m", "widths=[16]", "--epochs", "1", "--max-steps-per-epoch", "2", "-q"]


# ----------------------------------------------------------------- helpers
def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, expected: int = 1, match: str | None = None) -> str:
    """The exit code, and stderr is exactly one 'dflearn: ...' line (no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code == expected, (code, err)
    assert len(lines) == 1 and lines[0].startswith("dflearn: "), err
    if match is not None:
        import re
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


def strict(text: str):
    """JSON that must hold no NaN/Infinity."""
    def refuse(c):
        raise AssertionError(f"non-finite {c} in JSON")
    return json.loads(text, parse_constant=refuse)


def intact(run: Path, epochs: int) -> dict:
    """The run directory is whole: checkpoint loads at `epochs`, finite; metrics and history agree;
    every JSON file is strict JSON; no temporary left."""
    state = load(run / CHECKPOINT)
    assert state["epoch"] == epochs
    for part in ("model", "rule"):
        for k, t in state[part].items():
            if torch.is_tensor(t) and t.is_floating_point():
                assert torch.isfinite(t).all(), (part, k)
    rows = [strict(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert [r["epoch"] for r in state["history"]] == list(range(1, epochs + 1))
    config = strict((run / "config.json").read_text())
    assert {k: v for k, v in config.items() if k not in ("epochs", "versions", "threads")} == \
        {k: v for k, v in state["config"].items() if k not in ("epochs", "versions", "threads")}
    if (run / "summary.json").exists():
        strict((run / "summary.json").read_text())
    assert not [p for p in run.iterdir() if rundir.TEMPORARY.match(p.name)], list(run.iterdir())
    return state


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, e.get("PYTHONPATH")) if p)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished 2-epoch run, copied by the cases that damage one."""
    out = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", "--out", str(out), *TINY, "--epochs", "2"]) == 0
    return out


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(base_run, out)
    return out


# ------------------------------------------------- 1. options, where they enter
OPTIONS = [
    (["--lr", "-1"], r"--lr must be a finite number, more than 0"),
    (["--lr", "0"], r"--lr must be"),
    (["--lr", "inf"], r"--lr must be a finite number"),
    (["--lr", "nan"], r"--lr must be a finite number"),
    (["--weight-decay", "-0.1"], r"--weight-decay must be .* 0 or more"),
    (["--weight-decay", "inf"], r"--weight-decay must be a finite"),
    (["--momentum", "-0.5"], r"--momentum must be"),
    (["--momentum", "1.5"], r"--momentum must be below 1"),
    (["--schedule", "exp", "--gamma", "-1"], r"--gamma must be .* more than 0"),
    (["--gamma", "0"], r"--gamma must be"),
    (["--gamma", "inf"], r"--gamma must be a finite"),
    (["--batch-size", "0"], r"--batch-size must be at least 1"),
    (["--batch-size", "-3"], r"--batch-size must be at least 1"),
    (["--epochs", "0"], r"--epochs must be at least 1"),
    (["--epochs", "-1"], r"--epochs must be at least 1"),
    (["--nproc", "0"], r"--nproc must be at least 1"),
    (["--nproc", "-2"], r"--nproc must be at least 1"),
    (["--max-steps-per-epoch", "-1"], r"--max-steps-per-epoch must be 0 \(off\) or positive"),
    (["--align-every", "-5"], r"--align-every must be 0 \(off\) or positive"),
    (["--align-measure", "mean"], r"unknown alignment measure 'mean'; choose sample .* or batch"),
    (["--threads", "-1"], r"--threads must be 0"),
    (["--seed", "-1"], r"--seed must be 0 or positive"),
    (["--feedback-lr", "-1"], r"--feedback-lr must be"),
    (["--feedback-weight-decay", "-1"], r"--feedback-weight-decay must be"),
    (["--feedback-gamma", "0"], r"--feedback-gamma must be"),
    (["--rule", "nosuch"], r"unknown rule 'nosuch'"),
    (["--model", "nosuch"], r"unknown model 'nosuch'"),
    (["--dataset", "nosuch"], r"unknown dataset 'nosuch'"),
    (["--device", "nosuch"], r"unknown device 'nosuch'"),
    (["-o", "k"], r"not KEY=VALUE"),
    (["-m", "nosuch=1"], r"has no option 'nosuch'"),
]


@pytest.mark.parametrize("extra, match", OPTIONS, ids=[" ".join(a) for a, _ in OPTIONS])
def test_option_refused_in_one_line_and_nothing_written(capsys, tmp_path, extra, match):
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--out", out, *TINY, *extra)
    one_line(code, err, 1, match)
    assert not out.exists()


CONFIG_FILES = [
    ("lr: fast\n", r"'lr' must be a number, got 'fast'"),
    ("epochs: 2.5\n", r"'epochs' must be an integer, got 2.5"),
    ("optimizer: rmsprop\n", r"'optimizer' must be one of adam, sgd"),
    ("precision: fp8\n", r"'precision' must be one of fp32, bf16"),
    ("align_measure: [sample]\n", r"unknown alignment measure \['sample'\]"),
    ("lr: [1, 2\n", r"not valid YAML/JSON"),
    ("lrr: 0.1\n", r"did you mean 'lr'"),
    ("- 1\n- 2\n", r"must hold a mapping"),
    ("nesterov: maybe\n", r"nesterov must be true or false"),
]


@pytest.mark.parametrize("text, match", CONFIG_FILES, ids=[t.strip() for t, _ in CONFIG_FILES])
def test_config_file_value_refused(capsys, tmp_path, text, match):
    (tmp_path / "c.yaml").write_text(text)
    code, _, err = cli(capsys, "train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "r", *TINY)
    one_line(code, err, 1, match)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("options, match", [
    ({"lr": "fast"}, r"--lr must be a number"),
    ({"epochs": True}, r"--epochs must be a whole number"),
    ({"batch_size": 2.5}, r"--batch-size must be a whole number"),
    ({"momentum": float("nan")}, r"--momentum must be a finite"),
    ({"rule_options": "k=1"}, r"rule_options must be a mapping"),
], ids=["lr-str", "epochs-bool", "batch-float", "momentum-nan", "options-str"])
def test_api_values_checked_like_the_cli(tmp_path, options, match):
    with pytest.raises(DflearnError, match=match):
        dflearn.fit(out=tmp_path / "r", progress=False, log=lambda *a: None, **options)
    assert not (tmp_path / "r").exists()


def test_out_empty_file_and_unwritable(capsys, tmp_path, monkeypatch):
    one_line(*cli(capsys, "train", "--out", "", *TINY)[::2], 1, r"--out is empty")
    (tmp_path / "f").write_text("x")
    one_line(*cli(capsys, "train", "--out", tmp_path / "f", *TINY)[::2], 1, r"is a file, not a directory")
    assert (tmp_path / "f").read_text() == "x"
    # a read-only folder (simulated: the tests may run as root, who writes anywhere)
    real = os.open

    def read_only(path, flags, *a, **k):
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *a, **k)
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    one_line(*cli(capsys, "train", "--out", tmp_path / "ro" / "r", *TINY)[::2], 1, r"Read-only file system")


@pytest.mark.parametrize("argv", [["compare", "--rules", "dfa", "--seeds", "0", "--epochs", "1", "--out", "{f}"],
                                  ["plot", "{run}", "--out", "{f}"]], ids=["compare", "plot"])
def test_other_commands_out_naming_a_file(capsys, tmp_path, run, argv):
    f = tmp_path / "f"
    f.write_text("x")
    code, _, err = cli(capsys, *[a.replace("{f}", str(f)).replace("{run}", str(run)) for a in argv])
    one_line(code, err, 1, r"is a file|File exists|Not a directory")
    assert f.read_text() == "x"


def test_out_and_resume_together_refused(capsys, tmp_path, run):
    one_line(*cli(capsys, "train", "--out", tmp_path / "x", "--resume", run, "-q")[::2], 1, r"not both")


@pytest.mark.parametrize("argv, match", [
    (["compare", "--jobs", "0"], r"--jobs must be at least 1"),
    (["compare", "--seeds", "a,b"], r"not a comma-separated list"),
    (["compare", "--lr", "-1"], r"--lr must be"),
    (["compare", "--rules", "dfa,nosuch"], r"unknown rule 'nosuch'"),
], ids=["jobs0", "seeds", "lr", "rule"])
def test_compare_options(capsys, tmp_path, argv, match):
    code, _, err = cli(capsys, *argv, "--epochs", "1", "--max-steps-per-epoch", "1", "--out", tmp_path / "g", "-q")
    one_line(code, err, 1, match)
    assert not list((tmp_path / "g").glob("*/checkpoint.pt"))


def test_logged_lr_is_the_rate_the_epoch_trained_at(capsys, tmp_path):
    out = tmp_path / "r"
    assert cli(capsys, "train", "--out", out, *TINY, "--epochs", "3", "--schedule", "exp", "--gamma", "0.5",
               "--lr", "0.01")[0] == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.005, 0.0025])


def test_threads_and_versions_recorded_and_resume_keeps_them(capsys, tmp_path):
    out = tmp_path / "r"
    threads = torch.get_num_threads()
    try:
        assert cli(capsys, "train", "--out", out, *TINY, "--threads", "1")[0] == 0
        config = json.loads((out / "config.json").read_text())
        assert config["threads"] == 1
        assert config["versions"]["torch"] == str(torch.__version__)
        assert config["versions"]["dflearn"] == dflearn.__version__
        assert cli(capsys, "train", "--resume", out, "--epochs", "2", "-q")[0] == 0
        assert json.loads((out / "config.json").read_text())["threads"] == 1
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------- 2. data files
def _npz(root: Path, **change):
    x = np.zeros((8, 32, 32, 3), np.uint8)
    y = np.arange(8) % 10
    arrays = {"x_train": x, "y_train": y, "x_test": x, "y_test": y, **change}
    (root / "cifar10").mkdir(parents=True, exist_ok=True)
    np.savez(root / "cifar10" / "c.npz", **{k: v for k, v in arrays.items() if v is not None})
    return root / "cifar10" / "c.npz"


def _truncated(root):
    p = _npz(root)
    p.write_bytes(p.read_bytes()[:300])


def _empty(root):
    _npz(root).write_bytes(b"")


def _scrambled(root):
    p = _npz(root)
    b = bytearray(p.read_bytes())
    b[60:400] = bytes(range(256)) + bytes(84)
    p.write_bytes(bytes(b))


class _Huge:
    def __reduce__(self):  # what a hostile pickle says: allocate 2**40 bytes
        core = getattr(np, "_core", None) or np.core
        return (core.multiarray._reconstruct, (np.ndarray, (1 << 40,), b"b"))


def _huge_pickle(root):
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = pickle.dumps({b"data": _Huge(), b"labels": [0]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(data)


def _code_pickle(root):
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = pickle.dumps({b"data": Path("/"), b"labels": [0]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(data)


def _short_binary(root):
    folder = root / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(bytes(3073 * 2 + 17))


def _png_bomb(root):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    t = root / "tiny-imagenet-200"
    (t / "train" / "n01" / "images").mkdir(parents=True)
    (t / "val" / "images").mkdir(parents=True)
    (t / "wnids.txt").write_text("n01\n")
    (t / "val" / "val_annotations.txt").write_text("v.JPEG\tn01\t0\t0\t1\t1\n")
    (t / "train" / "n01" / "images" / "a.JPEG").write_bytes(png)
    (t / "val" / "images" / "v.JPEG").write_bytes(png)


def _mnist_garbage(root):
    from dflearn.data.idx import FILES
    (root / "mnist").mkdir(parents=True)
    for f in FILES:
        (root / "mnist" / f).write_bytes(b"not gzip")


DATA = [
    ("cifar10", _truncated, r"not an \.npz"),
    ("cifar10", _empty, r"not an \.npz"),
    ("cifar10", _scrambled, r"not an \.npz"),
    ("cifar10", lambda r: _npz(r, y_train=(np.arange(8) % 10)[:, None], y_test=(np.arange(8) % 10)[:, None]),
     r"labels must have shape \(N,\)"),
    ("cifar10", lambda r: _npz(r, y_train=np.arange(8) + 0.5), r"labels must be whole numbers"),
    ("cifar10", lambda r: _npz(r, y_train=np.arange(8) + 10), r"labels outside 0\.\.9"),
    ("cifar10", lambda r: _npz(r, y_train=np.arange(7)), r"8 images but 7 labels"),
    ("cifar10", lambda r: _npz(r, x_train=np.zeros((8, 32, 32, 3))), r"x_train must be uint8"),
    ("cifar10", lambda r: _npz(r, y_test=None), r"not an \.npz .*y_test"),
    ("cifar10", _huge_pickle, r"asks for an array of 1,099,511,627,776 elements"),
    ("cifar10", _code_pickle, r"refusing to load"),
    ("cifar10", _short_binary, r"not a whole number of 3073-byte records"),
    ("tinyimagenet", _png_bomb, r"decompression bomb|100000x100000"),
    ("mnist", _mnist_garbage, r"checksum mismatch"),
]


@pytest.mark.parametrize("dataset, make, match", DATA,
                         ids=["npz-truncated", "npz-empty", "npz-scrambled", "labels-N1", "labels-float",
                              "labels-range", "labels-count", "x-float", "npz-missing-key", "pickle-1TiB",
                              "pickle-code", "bin-short", "png-bomb", "mnist-garbage"])
def test_bad_data_file(capsys, tmp_path, dataset, make, match):
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--dataset", dataset, "--data-dir", root, "--out", out, *TINY)
    one_line(code, err, 1, match)
    assert not out.exists()  # nothing but the lock had been written: the directory is gone again


@pytest.mark.parametrize("outputs", [5, 15])
def test_model_output_count_differs_from_classes(capsys, tmp_path, outputs):
    name = f"wrongnets{outputs}"
    (tmp_path / f"{name}.py").write_text(
        "from torch import nn\nimport math\n"
        f"def net(input_shape, num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), {outputs}))\n")
    code, _, err = cli(capsys, "train", "--model", f"{name}:net", "--out", tmp_path / "r", "--epochs", "1", "-q")
    one_line(code, err, 1, rf"outputs of shape \(1, {outputs}\).*10 classes")


# ------------------------------------------------------ 3. checkpoints, config.json
def _save(run, **change):
    state = torch.load(run / CHECKPOINT, weights_only=True)
    for k, v in change.items():
        if v is None:
            del state[k]
        else:
            state[k] = v
    torch.save(state, run / CHECKPOINT)


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def _other_rule_state(run):
    state = torch.load(run / CHECKPOINT, weights_only=True)
    state["rule"] = {"B.0": torch.zeros(3, 3)}
    torch.save(state, run / CHECKPOINT)


def _wrong_model_shape(run):
    state = torch.load(run / CHECKPOINT, weights_only=True)
    state["model"] = {k: torch.zeros(2) for k in state["model"]}
    torch.save(state, run / CHECKPOINT)


DAMAGE = [
    ("ckpt-truncated", lambda r: (r / CHECKPOINT).write_bytes((r / CHECKPOINT).read_bytes()[:1000]), r"unreadable checkpoint"),
    ("ckpt-empty", lambda r: (r / CHECKPOINT).write_bytes(b""), r"unreadable checkpoint"),
    ("ckpt-missing-key", lambda r: _save(r, rng=None), r"missing rng"),
    ("ckpt-other-rule", _other_rule_state, r"does not fit this run's model, rule or optimizers"),
    ("ckpt-other-shapes", _wrong_model_shape, r"does not fit this run's model"),
    ("ckpt-payload", lambda r: torch.save({"model": _Payload()}, r / CHECKPOINT), r"refused to load"),
    ("ckpt-list", lambda r: torch.save([1, 2], r / CHECKPOINT), r"not a dflearn checkpoint"),
    ("ckpt-dir", lambda r: ((r / CHECKPOINT).unlink(), (r / CHECKPOINT).mkdir()), r"is a directory"),
    ("ckpt-other-config", lambda r: _save(r, config={**json.loads((r / "config.json").read_text()), "lr": 0.5}),
     r"belongs to another configuration"),
    ("config-empty", lambda r: (r / "config.json").write_text(""), r"config.json is not a readable config.json"),
    ("config-invalid", lambda r: (r / "config.json").write_text("{\"rule\": "), r"not a readable config.json"),
    ("config-str-number", lambda r: (r / "config.json").write_text(
        json.dumps({**json.loads((r / "config.json").read_text()), "lr": "fast"})), r"--lr must be a number"),
    ("config-list", lambda r: (r / "config.json").write_text("[1]"), r"does not hold a configuration"),
    ("config-unknown-key", lambda r: (r / "config.json").write_text(
        json.dumps({**json.loads((r / "config.json").read_text()), "zzz": 1})), r"unknown configuration key"),
    ("config-missing", lambda r: (r / "config.json").unlink(), r"holds no run"),
]


@pytest.mark.parametrize("damage, match", [(d, m) for _, d, m in DAMAGE], ids=[i for i, _, _ in DAMAGE])
def test_damaged_run_directory_refused_on_resume(capsys, run, damage, match):
    damage(run)
    code, _, err = cli(capsys, "train", "--resume", run, "--epochs", "3", "-q")
    one_line(code, err, 1, match)
    assert not [p for p in run.iterdir() if rundir.TEMPORARY.match(p.name)]


def test_resume_with_fewer_epochs_refused_and_nothing_rewritten(capsys, run):
    before = {n: (run / n).read_bytes() for n in ("config.json", "summary.json", "metrics.jsonl", CHECKPOINT)}
    one_line(*cli(capsys, "train", "--resume", run, "--epochs", "1", "-q")[::2], 1,
             r"already trained 2 epochs; --epochs 1 would rewrite its history")
    assert {n: (run / n).read_bytes() for n in before} == before


def test_resume_with_another_configuration_refused(capsys, run):
    one_line(*cli(capsys, "train", "--resume", run, "--lr", "0.5", "-q")[::2], 1, r"another configuration")
    intact(run, 2)


def test_new_run_in_a_used_directory_refused(capsys, run):
    one_line(*cli(capsys, "train", "--out", run, *TINY)[::2], 1, r"already holds a run; continue it with "
             r"dflearn train --resume")
    intact(run, 2)


def test_plot_tolerates_a_torn_last_metrics_line(capsys, tmp_path, run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')
    code, out, err = cli(capsys, "plot", run, "--out", tmp_path / "p")
    assert code == 0 and "Traceback" not in err and "wrote" in out


@pytest.mark.parametrize("damage, match", [
    (lambda r: (r / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n'), r"line 2 is not JSON"),
    (lambda r: (r / "config.json").write_text("{"), r"not a readable config.json"),
], ids=["metrics-middle", "config"])
def test_plot_of_a_damaged_run(capsys, tmp_path, run, damage, match):
    damage(run)
    one_line(*cli(capsys, "plot", run, "--out", tmp_path / "p")[::2], 1, match)


GRID = ["compare", "--rules", "dfa", "--seeds", "0", "-m", "widths=[16]", "--epochs", "1",
        "--max-steps-per-epoch", "2", "-q"]


def test_grid_with_a_half_written_summary_finishes_it(capsys, tmp_path):
    out = tmp_path / "g"
    assert cli(capsys, *GRID, "--out", out)[0] == 0
    (summary,) = out.glob("*/summary.json")
    summary.write_text('{"rule": "dfa", "fin')
    code, stdout, err = cli(capsys, *GRID, "--out", out)
    assert code == 0 and "Traceback" not in err and "| dfa |" in stdout
    strict(summary.read_text())
    intact(summary.parent, 1)


# ------------------------------------------------------------ 4. divergence
def test_divergence_at_the_first_step(capsys, tmp_path):
    out = tmp_path / "r"
    code, _, err = cli(capsys, "train", "--out", out, *TINY, "--max-steps-per-epoch", "3", "--optimizer", "sgd",
                       "--lr", "1e30")
    line = one_line(code, err, 1, r"training diverged at step 3 \(epoch 1\).*initial state.*smaller --lr")
    assert "--init-from" not in line  # no finished epoch to keep
    summary = strict((out / "summary.json").read_text())
    assert summary["diverged"] is True and summary["diverged_at_step"] == 3 and summary["epochs_done"] == 0
    state = load(out / CHECKPOINT)  # the initial state, finite
    assert state["epoch"] == 0 and all(torch.isfinite(t).all() for t in state["model"].values())
    assert (out / "metrics.jsonl").read_text() == ""
    one_line(*cli(capsys, "train", "--resume", out, "-q")[::2], 1, r"diverged at step 3; resuming would repeat it")


def test_exploding_test_loss_is_divergence(capsys, tmp_path, monkeypatch):
    from dflearn.training.trainer import Trainer
    real = Trainer.evaluate

    def exploding(self):
        row = real(self)
        if self.epoch == 1:
            row["test_loss"] = 1e25  # finite, absurd
        return row
    monkeypatch.setattr(Trainer, "evaluate", exploding)
    out = tmp_path / "r"
    line = one_line(*cli(capsys, "train", "--out", out, *TINY, "--epochs", "3")[::2], 1,
                    r"diverged at step 4 \(epoch 2\): test loss 1e\+25; the last checkpoint \(epoch 1, finite\)")
    assert "--init-from" in line
    intact(out, 1)
    assert strict((out / "summary.json").read_text())["diverged_in_epoch"] == 2


def test_non_finite_parameter_is_divergence(capsys, tmp_path, monkeypatch):
    from dflearn.training.trainer import Trainer
    real = Trainer.train_epoch

    def poison(self):  # the feedback matrices: the loss stays finite, only the parameter check sees it
        row = real(self)
        with torch.no_grad():
            next(t for t in self.rule.state_dict().values() if t.is_floating_point()).view(-1)[0] = float("inf")
        return row
    monkeypatch.setattr(Trainer, "train_epoch", poison)
    out = tmp_path / "r"
    one_line(*cli(capsys, "train", "--out", out, *TINY)[::2], 1, r"rule parameter '.*' not finite")
    assert load(out / CHECKPOINT)["epoch"] == 0


def test_grid_with_a_diverging_run_finishes_the_others(capsys, tmp_path):
    out = tmp_path / "g"
    code, stdout, err = cli(capsys, *GRID, "--optimizer", "sgd", "--lrs", "0.01,1e30", "--out", out)
    one_line(code, err, 1, r"1 of 2 run\(s\) diverged and are left out of the table")
    assert "| dfa |" in stdout
    import csv
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 1  # the finite run only


# -------------------------------------------------------- 5. interrupts
def _interrupt_at(monkeypatch, epoch):
    from dflearn.training.trainer import Trainer
    real = Trainer.train_epoch

    def stop(self):
        if self.epoch + 1 == epoch:
            raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(Trainer, "train_epoch", stop)


@pytest.mark.parametrize("epoch", [1, 2], ids=["before-first-epoch", "between-epochs"])
def test_ctrl_c_names_the_directory_and_resume_equals_uninterrupted(capsys, tmp_path, monkeypatch, epoch):
    whole = tmp_path / "whole"
    assert cli(capsys, "train", "--out", whole, *TINY, "--epochs", "2")[0] == 0
    cut = tmp_path / "cut"
    with monkeypatch.context() as m:
        _interrupt_at(m, epoch)
        line = one_line(*cli(capsys, "train", "--out", cut, *TINY, "--epochs", "2")[::2], 130)
    assert f"continue with: dflearn train --resume {cut}" in line and " DIR" not in line
    intact(cut, epoch - 1)
    assert cli(capsys, "train", "--resume", cut, "-q")[0] == 0
    a, b = load(whole / CHECKPOINT), load(cut / CHECKPOINT)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["test_acc"] for r in a["history"]] == [r["test_acc"] for r in b["history"]]


def test_ctrl_c_in_compare_suggests_rerunning_not_resume(capsys, tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 1)
    line = one_line(*cli(capsys, *GRID, "--out", tmp_path / "g")[::2], 130)
    assert "--resume" not in line and "run the same command again" in line and str(tmp_path / "g") in line


def test_ctrl_c_of_the_launcher_is_130(capsys, tmp_path, monkeypatch):
    import torch.distributed.run as tdr
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def interrupted(args):
        raise SignalException("interrupted", signal.SIGINT)
    monkeypatch.setattr(tdr, "run", interrupted)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    one_line(*cli(capsys, "train", "--nproc", "2", "--out", tmp_path / "r", *TINY)[::2], 130, r"interrupted")


def test_closed_pipe_is_quiet(capsys, monkeypatch):
    class Closed:
        def write(self, s):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def fileno(self):
            return os.open(os.devnull, os.O_WRONLY)
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["rules"]) == 0
    monkeypatch.undo()
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------ 6. unsafe writes
def test_full_disk_at_a_checkpoint_keeps_the_previous_one(capsys, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = torch.save
    calls = []

    def full(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 3:  # initial state, epoch 1, then the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", full)
    # no validation split, so no best.pt: the third save is epoch 2's checkpoint
    line = one_line(*cli(capsys, "train", "--out", out, *TINY, "--epochs", "3", "--val-fraction", "0")[::2], 1,
                    r"cannot write .*checkpoint.pt: No space left on device; its previous version is intact")
    assert f"dflearn train --resume {out}" in line
    intact(out, 1)


@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "config.json"])
def test_full_disk_at_a_json_write_then_continue(capsys, tmp_path, monkeypatch, name):
    out = tmp_path / "r"
    real = rundir.atomic_write

    def full(path, write, **k):
        if Path(path).name == name and (name != "metrics.jsonl" or (Path(path).exists() and Path(path).read_text())):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, **k)
    with monkeypatch.context() as m:
        m.setattr(rundir, "atomic_write", lambda path, write, **k: _as_dflearn(full, path, write, **k))
        one_line(*cli(capsys, "train", "--out", out, *TINY, "--epochs", "2")[::2], 1, r"No space left on device")
    load(out / CHECKPOINT)  # whatever was written is whole
    # space freed: the same command (config.json never written: nothing to resume) or --resume goes on
    again = ["--out", out, *TINY, "--epochs", "2"] if name == "config.json" else ["--resume", out, "-q"]
    assert cli(capsys, "train", *again)[0] == 0
    intact(out, 2)


def _as_dflearn(fn, path, write, **k):
    try:
        return fn(path, write, **k)
    except OSError as exc:
        raise DflearnError(f"cannot write {path}: {exc.strerror}; its previous version is intact") from None


def test_enospc_inside_atomic_write_removes_the_temporary(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")

    def fail(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DflearnError, match="No space left on device; its previous version is intact"):
        rundir.atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_ctrl_c_inside_a_checkpoint_write_waits_for_the_whole_file(tmp_path):
    # CI once saw Ctrl-C land inside torch.save: the zip writer reported it as "unexpected pos",
    # which read as a failed write ("cannot write ...") before the interrupt line
    # Python's own handler, as in a terminal (a shell's background job, nohup's included, starts
    # with SIGINT ignored, and then there is no Ctrl-C to hold)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    target = tmp_path / "checkpoint.pt"
    state = {"w": torch.arange(4096.0)}
    torch.save({"w": torch.zeros(1)}, target)

    class Interrupted:  # the file object torch.save writes to, with Ctrl-C after the first chunk
        def __init__(self, f):
            self.f, self.sent = f, False

        def write(self, data):
            n = self.f.write(data)
            if not self.sent:
                self.sent = True
                signal.raise_signal(signal.SIGINT)  # delivered to this thread, now
            return n

        def flush(self):
            self.f.flush()

    try:
        with pytest.raises(KeyboardInterrupt):
            rundir.atomic_write(target, lambda f: torch.save(state, Interrupted(f)))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert torch.equal(torch.load(target)["w"], state["w"])  # the new version, whole
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_planted_symlinks_are_never_written_through(capsys, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("checkpoint.pt.tmp", "metrics.jsonl", "train.log", "summary.json", "best.pt"):
        (out / name).symlink_to(victim)
    assert cli(capsys, "train", "--out", out, *TINY)[0] == 0
    assert victim.read_text() == "precious"
    intact(out, 1)
    (out / "new").mkdir()
    (out / "new" / ".lock").symlink_to(victim)
    one_line(*cli(capsys, "train", "--out", out / "new", *TINY)[::2], 1, r"cannot use .* as a run directory")
    assert victim.read_text() == "precious"


def test_stale_lock_and_temporaries_of_a_dead_process_are_taken_over(capsys, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / ".lock").write_text("999999\n")  # a dead process's: no flock is held on it
    (out / ".checkpoint.pt.999999.0123abcd.tmp").write_bytes(b"half")
    assert cli(capsys, "train", "--out", out, *TINY)[0] == 0
    intact(out, 1)


_HOLD = ("import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, str(os.getpid()).encode())\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n")


@pytest.fixture
def held(tmp_path):
    """Another process holding the lock of tmp_path/'r' (a real process boundary, no torch import)."""
    out = tmp_path / "r"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield out, p.pid
    p.kill()
    p.wait()


@pytest.mark.parametrize("argv", [["train", "--out", "{out}", *TINY], ["train", "--resume", "{out}", "-q"]],
                         ids=["new", "resume"])
def test_second_writer_refused_naming_the_holder(capsys, held, argv):
    out, pid = held
    code, _, err = cli(capsys, *[a.replace("{out}", str(out)) for a in argv])
    one_line(code, err, 1, rf"{out} is in use by another dflearn run \(process {pid}\)")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_grid_run_locked_by_another_process_is_refused(capsys, tmp_path):
    out = tmp_path / "g"
    assert cli(capsys, *GRID, "--epochs", "1", "--out", out)[0] == 0
    (run,) = out.glob("*/summary.json")
    (run.parent / "summary.json").unlink()
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(run.parent / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        one_line(*cli(capsys, *GRID, "--out", out)[::2], 1, rf"in use by another dflearn run \(process {p.pid}\)")
    finally:
        p.kill()
        p.wait()
    intact(run.parent, 1)


# -------------------------------------------- 7. real process boundaries
def _train(out, *extra):
    return [sys.executable, "-m", "dflearn", "train", "--out", str(out), "--rule", "dfa", "-m", "widths=[16]", "-q",
            *extra]


def test_two_concurrent_writers_one_wins_the_directory_stays_consistent(tmp_path):
    out = tmp_path / "r"
    procs = [subprocess.Popen(_train(out, "--rule", rule, "--epochs", "3"), env=env(), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for rule in ("dfa", "bp")]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 1], results
    err = next(e for c, e in results if c == 1)
    one_line(1, err, 1, r"in use by another dflearn run \(process \d+\)|already holds a run")
    state = intact(out, 3)
    summary = strict((out / "summary.json").read_text())
    assert json.loads((out / "config.json").read_text())["rule"] == state["config"]["rule"] == summary["rule"]


_KILL_IN_SAVE = """
import os, sys, torch
from dflearn.cli import main
real, calls = torch.save, []
def save(obj, f, *a, **k):
    calls.append(1)
    if len(calls) == 3:  # the epoch-2 checkpoint, half written: the process dies on the spot
        f.write(b"half a checkpoint")
        f.flush()
        os._exit(9)
    return real(obj, f, *a, **k)
torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_resumes_to_the_uninterrupted_numbers(capsys, tmp_path):
    cut = tmp_path / "cut"
    argv = ["train", "--out", str(cut), *TINY, "--epochs", "3"]
    p = subprocess.run([sys.executable, "-c", _KILL_IN_SAVE, *argv], env=env(), cwd=tmp_path, capture_output=True)
    assert p.returncode == 9
    assert [q.name for q in cut.iterdir() if q.name.endswith(".tmp")]  # the killed writer's temporary
    intact_before = load(cut / CHECKPOINT)
    assert intact_before["epoch"] == 1
    assert cli(capsys, "train", "--resume", cut, "-q")[0] == 0
    intact(cut, 3)  # and the stale temporary is gone
    whole = tmp_path / "whole"
    assert cli(capsys, "train", "--out", whole, *TINY, "--epochs", "3")[0] == 0
    a, b = load(whole / CHECKPOINT), load(cut / CHECKPOINT)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _workers_of(launcher: int) -> list[int]:
    """The training processes a launcher started (their environment names it)."""
    mark, pids = f"DFLEARN_LAUNCHER_PID={launcher}".encode(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != launcher:
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _rank(pid: int) -> int | None:
    try:
        for item in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
            if item.startswith(b"RANK="):
                return int(item[5:])
    except OSError:
        return None
    return None


def _start_two(tmp_path):
    out = tmp_path / "r"
    p = subprocess.Popen(_train(out, "--nproc", "2", "--epochs", "2000", "--batch-size", "64"), env=env(),
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline and not (out / "config.json").exists():  # written once both are training
        time.sleep(0.1)
    assert (out / "config.json").exists(), "the two processes never started training"
    time.sleep(0.5)
    return out, p


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_peer_under_two_processes(tmp_path):
    out, p = _start_two(tmp_path)
    try:
        peer = [w for w in _workers_of(p.pid) if _rank(w) == 1]
        assert peer
        os.kill(peer[0], signal.SIGKILL)
        code = p.wait(timeout=60)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("dflearn: error: ") for line in lines), err
    # the survivor may say "lost contact" first, or be stopped by the launcher before it notices: a race
    # that the last line does not depend on
    assert "process 1 was killed by SIGKILL" in lines[-1], err
    assert f"continue with dflearn train --resume {out}" in lines[-1], err
    _settle(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc")
def test_workers_end_with_their_launcher(tmp_path):
    out, p = _start_two(tmp_path)
    workers = _workers_of(p.pid)
    assert len(workers) == 2
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() and
                                         "zombie" not in _state(w) for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in _state(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, "workers outlived their launcher"
    _wait_for_lock(out)  # the kernel drops the dead workers' lock once their exit completes
    _settle(out)  # the directory is free again and whole


def _wait_for_lock(out: Path, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            rundir.RunLock(out).release()
            return
        except DflearnError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def _settle(out: Path) -> None:
    """A run killed at any moment: its checkpoint loads; --resume to the epochs it holds rewrites
    metrics.jsonl from the checkpoint (a kill between the two writes leaves it one row short)."""
    epochs = load(out / CHECKPOINT)["epoch"]
    assert main(["train", "--resume", str(out), "--epochs", str(max(epochs, 1)), "-q"]) == 0
    intact(out, max(epochs, 1))


def _state(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_under_two_processes_is_130_in_one_line(tmp_path):
    out, p = _start_two(tmp_path)
    try:
        os.killpg(p.pid, signal.SIGINT)  # what the terminal does: the launcher and both workers
        code = p.wait(timeout=60)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert code == 130, err
    one_line(code, err, 130, rf"interrupted; finished epochs are saved in .*; continue with: dflearn train --resume")
    _settle(out)
