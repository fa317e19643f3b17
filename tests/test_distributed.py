"""Data-parallel training: 2 gloo processes on CPU (127.0.0.1) against one process.

Tolerance: the 2-process run sums two half-batch gradients where one process sums
the whole batch, so float32 rounding differs (~1e-7 relative per step); after the
23 Adam steps of one digits epoch parameters agree to atol 1e-5 (measured: < 1e-6).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dflearn import Config, DflearnError
from dflearn.training import Trainer, distributed
from dflearn.training.checkpoint import CHECKPOINT, load

BASE = dict(dataset="digits", model="mlp", model_options={"widths": [64, 64]}, epochs=1, batch_size=64,
            device="cpu")
# global batch 64 = 32 + 32. Batch 67 = 34 + 33 on every step checks the weighting of the
# slices by their share (n_r / N): with SGD, as Adam's per-coordinate normalisation would
# hide a wrong gradient scale (plain averaging is off by 1.5% here)
CASES = {"bp": {"rule": "bp"}, "dfa": {"rule": "dfa"}, "dkp": {"rule": "dkp"}, "las": {"rule": "las"},
         "bp-uneven": {"rule": "bp", "batch_size": 67, "optimizer": "sgd", "lr": 0.05}}
ATOL = 1e-5


def quiet(*args, **kwargs):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, root: Path) -> None:
    # what torchrun would set; the Trainer joins the group from these
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    for name, case in CASES.items():
        Trainer(Config(**{**BASE, **case}), root / name, progress=False, log=quiet).fit()
    try:  # each process its own seed: its own feedback matrices
        Trainer(Config(**{**BASE, "rule": "dfa", "seed": rank}), root / "seeds", progress=False, log=quiet)
    except DflearnError as exc:
        (root / f"refused{rank}.txt").write_text(str(exc))
    distributed.shutdown()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(2, free_port(), root), nprocs=2, join=True)
    return root


def one_process(out: Path, **options) -> Trainer:
    trainer = Trainer(Config(**{**BASE, **options}), out, progress=False, log=quiet)
    trainer.fit()
    return trainer


def assert_same_state(a: dict, b: dict) -> None:
    for part in ("model", "rule"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=ATOL, msg=f"{part}.{k}")


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one(two_process_runs, tmp_path, case):
    single = one_process(tmp_path / "one", **CASES[case])
    two = load(two_process_runs / case / CHECKPOINT)
    assert_same_state(two, single.state_dict())
    assert two["step"] == single.step == len(single.train_batches)  # global batches, not twice as many halves
    row2, row1 = two["history"][0], single.history[0]
    assert row2["test_acc"] == row1["test_acc"]
    assert row2["train_loss"] == pytest.approx(row1["train_loss"], abs=1e-5)
    assert json.loads((two_process_runs / case / "summary.json").read_text())["processes"] == 2
    if CASES[case]["rule"] in ("dkp", "las"):  # learned feedback moved, identically on both ranks
        initial = Trainer(Config(**{**BASE, **CASES[case]}), tmp_path / "init", progress=False).rule.state_dict()
        assert any(not torch.equal(initial[k], two["rule"][k]) for k in initial)


def test_different_feedback_seeds_are_refused(two_process_runs):
    for rank in (0, 1):
        message = (two_process_runs / f"refused{rank}.txt").read_text()
        assert "feedback matrices differ between the 2 processes" in message
        assert "same --seed" in message and "\n" not in message
    assert not (two_process_runs / "seeds").exists()


def test_checkpoint_of_two_processes_resumes_in_one(two_process_runs, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(two_process_runs / "las", run)
    resumed = Trainer.resume(run, overrides={"epochs": 3}, progress=False, log=quiet)
    assert resumed.world == 1 and resumed.epoch == 1
    resumed.fit()
    straight = one_process(tmp_path / "straight", rule="las", epochs=3)
    assert_same_state(resumed.state_dict(), straight.state_dict())
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["test_acc"] == b["test_acc"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


def test_cli_nproc_launches_torchrun(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run([sys.executable, "-m", "dflearn", "train", "--nproc", "2", "--rule", "dfa",
                           "-m", "widths=[32]", "--epochs", "1", "--device", "cpu", "-q", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert "x 2 processes" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and len((out / "metrics.jsonl").read_text().splitlines()) == 1
