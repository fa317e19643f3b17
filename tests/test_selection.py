"""The validation split and model selection on it (issue 14)."""
import json

import pytest
import torch

import dflearn
from dflearn.data.split import SPLIT_SEED, split_validation, validation_indices
from dflearn.errors import DflearnError
from dflearn.training import Config, Trainer
from dflearn.training.selection import selection_summary

QUICK = dict(rule="dfa", epochs=2, max_steps_per_epoch=4, model_options={"widths": [32]})


def quiet(**kw):
    return dict(progress=False, log=lambda *a: None, **kw)


def test_split_is_disjoint_stratified_and_covers_the_training_split():
    data = dflearn.load_dataset("digits")
    split = split_validation(data, 0.1)
    val = split.val_indices
    assert len(val) == len(split.x_val) == len(split.y_val) > 0
    assert len(set(val.tolist())) == len(val)  # no index twice
    keep = torch.ones(len(data.y_train), dtype=torch.bool)
    keep[val] = False
    # validation = the chosen training images, training = all the others: disjoint and complete
    assert torch.equal(split.x_val, data.x_train[val]) and torch.equal(split.x_train, data.x_train[keep])
    assert len(split.x_train) + len(split.x_val) == len(data.x_train)
    # the test split is untouched and shares no image with validation
    assert torch.equal(split.x_test, data.x_test) and torch.equal(split.y_test, data.y_test)
    test_rows = {bytes(x.flatten().tolist()) for x in data.x_test}
    train_rows = {bytes(x.flatten().tolist()) for x in data.x_train}
    assert not {bytes(x.flatten().tolist()) for x in split.x_val} & (test_rows - train_rows)
    # stratified: every class holds about a tenth of its images out
    for c in range(10):
        n = int((data.y_train == c).sum())
        assert int((split.y_val == c).sum()) == round(0.1 * n)
    # normalisation statistics come from the remaining training images only
    assert split.mean == pytest.approx(tuple(split.x_train.float().div(255).mean(dim=(0, 2, 3)).tolist()))


def test_split_is_fixed_by_its_own_seed_not_the_run_seed():
    labels = dflearn.load_dataset("digits").y_train
    torch.manual_seed(1)
    a = validation_indices(labels, 0.1)
    torch.manual_seed(2)
    b = validation_indices(labels, 0.1)
    assert torch.equal(a, b) and torch.equal(a, validation_indices(labels, 0.1, SPLIT_SEED))
    assert not torch.equal(a, validation_indices(labels, 0.1, SPLIT_SEED + 1))
    assert len(validation_indices(labels, 0.0)) == 0
    with pytest.raises(DflearnError, match="val fraction|val-fraction"):
        validation_indices(labels, 1.0)


def test_every_seed_and_rule_sees_the_same_split_and_a_resume_keeps_it(tmp_path):
    t0 = Trainer(Config(**QUICK, seed=0), tmp_path / "a", **quiet())
    t1 = Trainer(Config(**{**QUICK, "rule": "las"}, seed=1), tmp_path / "b", **quiet())
    assert torch.equal(t0.data.val_indices, t1.data.val_indices)
    assert torch.equal(t0.data.x_val, t1.data.x_val)
    # stop after one epoch, resume for the second: the same split, the same numbers as in one go
    dflearn.fit(**{**QUICK, "epochs": 1}, out=tmp_path / "part", **quiet())
    resumed = Trainer.resume(tmp_path / "part", overrides={"epochs": 2}, **quiet())
    assert torch.equal(resumed.data.val_indices, t0.data.val_indices)
    resumed.fit()
    dflearn.fit(**QUICK, out=tmp_path / "whole", **quiet())
    rows = [[json.loads(x) for x in open(tmp_path / r / "metrics.jsonl")] for r in ("part", "whole")]
    assert [(r["val_acc"], r["val_loss"], r["test_acc"]) for r in rows[0]] == \
           [(r["val_acc"], r["val_loss"], r["test_acc"]) for r in rows[1]]
    a, b = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("part", "whole"))
    assert a["val_split"] == b["val_split"] and a["test_accuracy_at_val_best"] == b["test_accuracy_at_val_best"]


def test_selected_epoch_is_the_validation_argmax_on_a_hand_made_history():
    history = [  # validation peaks at epoch 3 (tied at 5: the first is kept); test peaks at epoch 4
        {"epoch": 1, "val_acc": 0.50, "test_acc": 0.48},
        {"epoch": 2, "val_acc": 0.70, "test_acc": 0.66},
        {"epoch": 3, "val_acc": 0.80, "test_acc": 0.71},
        {"epoch": 4, "val_acc": 0.75, "test_acc": 0.79},
        {"epoch": 5, "val_acc": 0.80, "test_acc": 0.69},
    ]
    s = selection_summary(history)
    assert s["val_best_epoch"] == 3 and s["test_accuracy_at_val_best"] == 0.71 and s["val_best_accuracy"] == 0.80
    assert s["final_test_accuracy"] == 0.69
    assert s["best_test_accuracy_paper_protocol"] == s["best_test_accuracy"] == 0.79 and s["best_epoch"] == 4
    assert s["selection"] == "validation"
    none = selection_summary([{k: v for k, v in r.items() if k != "val_acc"} for r in history])
    assert none["test_accuracy_at_val_best"] is None and none["val_best_epoch"] is None
    assert none["best_test_accuracy_paper_protocol"] == 0.79


def test_a_run_logs_validation_and_test_each_epoch_and_selects_on_validation(tmp_path):
    s = dflearn.fit(**{**QUICK, "epochs": 3}, out=tmp_path / "r", **quiet())
    rows = [json.loads(x) for x in open(tmp_path / "r" / "metrics.jsonl")]
    assert all({"val_loss", "val_acc", "test_loss", "test_acc"} <= set(r) for r in rows)
    best = max(rows, key=lambda r: r["val_acc"])  # max keeps the first on ties
    assert s["val_best_epoch"] == best["epoch"] and s["test_accuracy_at_val_best"] == best["test_acc"]
    assert s["final_test_accuracy"] == rows[-1]["test_acc"]
    assert s["best_test_accuracy_paper_protocol"] == max(r["test_acc"] for r in rows)
    assert s["val_size"] == 144 and (tmp_path / "r" / "best.pt").exists()
    none = dflearn.fit(**QUICK, val_fraction=0.0, out=tmp_path / "n", **quiet())
    assert none["test_accuracy_at_val_best"] is None and none["val_size"] == 0
    assert "val_acc" not in json.loads(open(tmp_path / "n" / "metrics.jsonl").readline())


def test_a_run_from_before_the_split_resumes_without_one(tmp_path):
    dflearn.fit(**{**QUICK, "epochs": 1}, val_fraction=0.0, out=tmp_path / "old", **quiet())
    raw = json.loads((tmp_path / "old" / "config.json").read_text())
    del raw["val_fraction"]  # as written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(raw))
    state = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=True)
    del state["config"]["val_fraction"]
    torch.save(state, tmp_path / "old" / "checkpoint.pt")
    t = Trainer.resume(tmp_path / "old", overrides={"epochs": 2}, **quiet())
    assert t.config.val_fraction == 0.0 and t.data.x_val is None


def _row(rule, lr, val, selected, best, seeds=3):
    return {"dataset": "digits", "model": "mlp", "lr": lr, "feedback_lr": lr, "rule": rule, "seeds": seeds,
            "best_mean": best, "best_std": 0.01, "final_mean": best, "final_std": 0.01,
            "selected_mean": selected, "selected_std": 0.02, "val_mean": val, "val_std": 0.03, "epochs": 2}


def test_compare_lrs_chooses_each_rules_lr_on_validation_not_test():
    from dflearn.experiments.lrsearch import winners

    rows = [_row("bp", 1e-3, 0.90, 0.88, 0.95), _row("bp", 1e-2, 0.93, 0.91, 0.92),   # val picks 1e-2
            _row("dfa", 1e-3, 0.85, 0.84, 0.86), _row("dfa", 1e-2, 0.85, 0.80, 0.90)]  # tie: the smaller lr
    chosen = {r["rule"]: r for r in winners(rows)}
    assert chosen["bp"]["lr"] == 1e-2 and chosen["bp"]["selected_mean"] == 0.91
    assert chosen["bp"]["paper_lr"] == 1e-3 and chosen["bp"]["paper_mean"] == 0.95  # test would have picked 1e-3
    assert chosen["dfa"]["lr"] == 1e-3 and chosen["dfa"]["lrs"] == [1e-3, 1e-2]
    with pytest.raises(DflearnError, match="validation split"):
        winners([{**rows[0], "val_mean": float("nan")}, rows[1]])


def test_compare_lrs_end_to_end_writes_the_winners(tmp_path):
    from dflearn.cli import main

    assert main(["compare", "--rules", "bp", "--seeds", "0", "--lrs", "0.001,0.01", "--epochs", "2",
                 "--max-steps-per-epoch", "3", "-m", "widths=[8]", "-q", "--out", str(tmp_path)]) == 0
    chosen = json.loads((tmp_path / "lr_selection.json").read_text())
    assert len(chosen) == 1 and chosen[0]["lr"] in (0.001, 0.01)
    summaries = {lr: json.loads((tmp_path / f"digits-mlp-noaug-lr{lr:g}-bp-seed0" / "summary.json").read_text())
                 for lr in (0.001, 0.01)}
    assert chosen[0]["lr"] == max(sorted(summaries), key=lambda lr: summaries[lr]["val_best_accuracy"])
    assert "## Learning rate chosen on validation" in (tmp_path / "results.md").read_text()


def test_robust_evaluates_with_the_normalisation_the_run_trained_with(tmp_path):
    from dflearn.robust import load_network

    dflearn.fit(**{**QUICK, "epochs": 1}, out=tmp_path / "r", **quiet())
    t = Trainer(Config(**QUICK), tmp_path / "x", **quiet())
    net, data, _ = load_network(tmp_path / "r")
    assert net.mean.flatten().tolist() == pytest.approx(list(t.data.mean), abs=0)
    assert net.std.flatten().tolist() == pytest.approx(list(t.data.std), abs=0)


def test_a_text_corpus_holds_out_the_end_of_its_training_text(tmp_path):
    from dflearn.data.text import corpus_from_text

    text = "to be or not to be, that is the question; whether tis nobler in the mind to suffer\n" * 40
    corpus = corpus_from_text(text, "t")
    split = split_validation(corpus, 0.1)
    assert torch.equal(torch.cat([split.train, split.val]), corpus.train)  # contiguous: train, then val
    assert len(split.val) == round(0.1 * len(corpus.train)) and torch.equal(split.test, corpus.test)
    path = tmp_path / "t.txt"
    path.write_text(text)
    s = dflearn.fit(rule="dfa", dataset=f"text:{path}", model="gpt",
                    model_options={"layers": 1, "width": 16, "heads": 2, "context": 16},
                    epochs=2, max_steps_per_epoch=3, batch_size=4, out=tmp_path / "r", **quiet())
    rows = [json.loads(x) for x in open(tmp_path / "r" / "metrics.jsonl")]
    assert all({"val_loss", "val_acc", "val_bpc", "test_bpc"} <= set(r) for r in rows)
    assert s["val_size"] == len(split.val) and s["val_best_epoch"] in (1, 2)
