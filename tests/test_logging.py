"""Run logging: TensorBoard on one step axis with hparams, compare --tensorboard, an offline W&B
observer, a text log per run, and the best checkpoint chosen on validation only."""
import json
import sys
import types

import pytest
import torch

from dflearn.cli import main
from dflearn.training import trainer as trainer_module

SHORT = ["--rule", "dfa", "--epochs", "2", "--max-steps-per-epoch", "4", "--align-every", "2", "-m", "widths=[8]", "-q"]


def test_tensorboard_has_the_config_as_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert main(["train", *SHORT, "--lr", "0.002", "--tensorboard", "--out", str(tmp_path / "r")]) == 0
    found = {}
    for events in (tmp_path / "r" / "tensorboard").glob("events.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        try:
            contents = acc.PluginTagToContent("hparams")
        except KeyError:  # the scalars' events file: no hparams in it
            continue
        for tag, content in contents.items():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                found = {k: v for k, v in data.session_start_info.hparams.items()}
    assert found["rule"].string_value == "dfa" and found["lr"].number_value == pytest.approx(0.002)
    assert json.loads(found["model_options"].string_value) == {"widths": [8]}
    scalars = {}  # tag -> steps, over the events files
    for events in (tmp_path / "r" / "tensorboard").glob("events.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(scalars["epoch/test_acc"]) == [r["step"] for r in rows] == [4, 8]  # one axis: the global step
    alignment = [t for t in scalars if t.startswith("alignment/")]
    assert alignment and all(sorted(scalars[t]) == [0, 2, 4, 6] for t in alignment)  # at the measured steps


def test_compare_tensorboard_writes_one_log_per_run(tmp_path):
    pytest.importorskip("tensorboard")
    assert main(["compare", "--rules", "bp,dfa", "--seeds", "0", "--epochs", "1", "--max-steps-per-epoch", "2",
                 "-m", "widths=[8]", "--tensorboard", "-q", "--out", str(tmp_path)]) == 0
    runs = [p for p in tmp_path.iterdir() if (p / "config.json").exists()]
    assert len(runs) == 2 and all(list((p / "tensorboard").glob("events.*")) for p in runs)


class FakeWandb(types.ModuleType):
    """Records what dflearn asks of wandb (the real package is an optional extra)."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, values, step):
                fake.logged.append((step, values))

            def finish(self):
                fake.finished += 1
        return Run()


def test_wandb_observer_logs_offline_against_the_step(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["train", *SHORT, "--wandb", "myproj", "--out", str(tmp_path / "r")]) == 0
    (init,) = fake.inits
    assert init["mode"] == "offline" and init["project"] == "myproj" and init["dir"] == str(tmp_path / "r")
    assert init["config"] == json.loads((tmp_path / "r" / "config.json").read_text())
    epochs = [(step, v) for step, v in fake.logged if "epoch/test_acc" in v]
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [(s, v["epoch/test_acc"]) for s, v in epochs] == [(r["step"], r["test_acc"]) for r in rows]
    assert [s for s, v in fake.logged if any(k.startswith("alignment/") for k in v)] == [0, 2, 4, 6]
    assert fake.finished == 1


def test_wandb_is_off_by_default_and_missing_is_one_line(tmp_path, monkeypatch, capsys):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert main(["train", *SHORT, "--out", str(tmp_path / "a")]) == 0
    assert fake.inits == []
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    assert main(["train", *SHORT, "--wandb", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "dflearn: error: --wandb needs the wandb package: pip install wandb (it does not change torch)"


def test_each_run_keeps_a_text_log(tmp_path):
    assert main(["train", *SHORT, "--out", str(tmp_path / "r")]) == 0
    lines = (tmp_path / "r" / "train.log").read_text().splitlines()
    assert "dflearn: dfa on digits" in lines[0] and "epoch   1/2" in lines[1] and "epoch   2/2" in lines[2]
    assert "test accuracy" in lines[-1] and len(lines) == 4


def test_best_checkpoint_follows_validation_accuracy_only(tmp_path, monkeypatch):
    val = iter([0.5, 0.7, 0.6])  # best on validation: epoch 2; test accuracy does not matter
    evaluate = trainer_module.Trainer.evaluate

    def with_validation(self):
        return {**evaluate(self), "val_acc": next(val), "val_loss": 1.0}

    monkeypatch.setattr(trainer_module.Trainer, "evaluate", with_validation)
    assert main(["train", *SHORT, "--epochs", "3", "--out", str(tmp_path / "r")]) == 0
    best = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert best["epoch"] == 2 and last["epoch"] == 3
    assert not torch.equal(best["model"]["1.weight"], last["model"]["1.weight"])


def test_no_best_checkpoint_without_a_validation_split(tmp_path):
    assert main(["train", *SHORT, "--val-fraction", "0", "--out", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r" / "best.pt").exists()  # never selected on test
