"""The training loop: reproducible, resumable, and learning on real data."""
import json

import pytest
import torch

import dflearn
from dflearn.training.checkpoint import load


def quiet_fit(**kw):
    return dflearn.fit(progress=False, log=lambda *a: None, **kw)


def metrics(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def weights(out):
    return load(out / "checkpoint.pt")


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "eval_seconds")} for r in rows]


def test_run_directory_contents(tmp_path):
    s = quiet_fit(rule="dfa", epochs=2, out=tmp_path / "r", model_options={"widths": [32]})
    out = tmp_path / "r"
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    for key in ("rule", "model", "dataset", "epochs", "seed", "final_test_accuracy", "best_test_accuracy",
                "wall_seconds"):
        assert key in summary
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert summary["final_test_accuracy"] == rows[-1]["test_acc"] == s["final_test_accuracy"]
    assert summary["best_test_accuracy"] == max(r["test_acc"] for r in rows)
    assert json.loads((out / "config.json").read_text())["rule"] == "dfa"


@pytest.mark.parametrize("rule", ["dfa", "las", "dkp"])
def test_same_seed_same_numbers(tmp_path, rule):
    kw = dict(rule=rule, epochs=2, augment="flip", model_options={"widths": [64, 64]})
    quiet_fit(out=tmp_path / "a", **kw)
    quiet_fit(out=tmp_path / "b", **kw)
    assert strip_times(metrics(tmp_path / "a")) == strip_times(metrics(tmp_path / "b"))
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for part in ("model", "rule"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k])
    quiet_fit(out=tmp_path / "c", seed=1, **kw)
    assert not torch.equal(a["model"]["1.weight"], weights(tmp_path / "c")["model"]["1.weight"])


@pytest.mark.parametrize("rule", ["las", "dkp", "dfa"])
def test_resume_equals_an_uninterrupted_run(tmp_path, rule):
    kw = dict(rule=rule, augment="flip", schedule="paper", model_options={"widths": [64, 64]})
    quiet_fit(out=tmp_path / "whole", epochs=4, **kw)

    def interrupt_after_epoch_2(line):
        if line.startswith("epoch   2/4"):
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after the checkpoint

    with pytest.raises(KeyboardInterrupt):
        dflearn.fit(out=tmp_path / "cut", epochs=4, progress=False, log=interrupt_after_epoch_2, **kw)
    assert load(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    quiet_fit(resume=tmp_path / "cut")
    assert strip_times(metrics(tmp_path / "whole")) == strip_times(metrics(tmp_path / "cut"))
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    for part in ("model", "rule"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "r"
    trainer = dflearn.Trainer(dflearn.Config(rule="dfa", epochs=3, model_options={"widths": [32]}), out,
                              progress=False, log=lambda *a: None)
    trainer.config.epochs = 1
    trainer.fit()
    saved = weights(out)
    trainer.config.epochs = 3
    with torch.no_grad():  # poison the weights: the next epoch's loss is NaN
        trainer.model[1].weight.fill_(float("nan"))
    step = len(trainer.train_batches) + 1  # the first step of epoch 2 (23 + 1 batches without a validation split)
    with pytest.raises(dflearn.DflearnError, match=f"diverged at step {step} \\(epoch 2\\): training loss nan.*last checkpoint \\(epoch 1"):
        trainer.fit()
    after = weights(out)
    assert after["epoch"] == 1
    assert torch.equal(after["model"]["1.weight"], saved["model"]["1.weight"])


def test_resume_with_another_configuration_is_refused(tmp_path):
    quiet_fit(rule="dfa", epochs=1, out=tmp_path / "r", model_options={"widths": [32]})
    with pytest.raises(dflearn.DflearnError, match="another configuration.*lr"):
        quiet_fit(resume=tmp_path / "r", lr=0.5)
    with pytest.raises(dflearn.DflearnError, match="already holds a run"):
        quiet_fit(rule="dfa", epochs=1, out=tmp_path / "r", model_options={"widths": [32]})


# each rule learns the bundled digits (1,438 train / 359 test) in 5 epochs, Adam lr 1e-3, batch 64
DIGITS_BAR = {"bp": 0.95, "shallow": 0.95, "dfa": 0.93, "sdfa": 0.90, "drtp": 0.70, "dkp": 0.93,
              "las": 0.95, "ltas": 0.95}


@pytest.mark.parametrize("rule", sorted(DIGITS_BAR))
def test_every_rule_learns_digits(tmp_path, rule):
    s = quiet_fit(rule=rule, epochs=5, out=tmp_path / rule)
    assert s["best_test_accuracy"] >= DIGITS_BAR[rule]


def test_every_registered_rule_has_a_digits_bar():
    assert set(DIGITS_BAR) <= set(dflearn.RULES)


# seed 001's FC MNIST setting: 784-1024-1024-10, Adam lr 1e-4, batch 64, 2 epochs
MNIST_BAR = {"bp": 0.965, "las": 0.96, "ltas": 0.96, "dfa": 0.94}


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(MNIST_BAR))
def test_mnist_two_epochs_reach_the_bar(tmp_path, data_dir, rule):
    s = quiet_fit(rule=rule, model="mlp-mnist", dataset="mnist", lr=1e-4, epochs=2,
                  data_dir=str(data_dir), out=tmp_path / rule)
    assert s["final_test_accuracy"] > MNIST_BAR[rule]
