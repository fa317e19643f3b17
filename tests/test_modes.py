"""--precision bf16 and --compile: they train digits past the fp32 bar, and a run resumed in
either mode equals the uninterrupted run in that mode."""
import json

import pytest
import torch

import dflearn
from dflearn.cli import main
from dflearn.errors import DflearnError


def final(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out):
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


MODES = [{"precision": "bf16"}, {"compile": True}]


@pytest.mark.parametrize("mode", MODES, ids=["bf16", "compile"])
@pytest.mark.parametrize("rule", ["bp", "dfa", "las"])
def test_mode_trains_digits_past_the_fp32_bar(tmp_path, mode, rule):
    s = dflearn.fit(rule=rule, epochs=3, out=tmp_path / "r", progress=False, log=lambda *a: None,
                    model_options={"widths": [256, 256]}, **mode)
    assert s["final_test_accuracy"] > 0.90, s  # fp32 reaches about 0.95-0.97 in this setting
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert all(cfg[k] == v for k, v in mode.items())


@pytest.mark.parametrize("mode", [["--precision", "bf16"], ["--compile"]], ids=["bf16", "compile"])
def test_resume_in_mode_equals_uninterrupted(tmp_path, mode):
    common = ["train", "--rule", "las", "-m", "widths=[64,64]", "-q", "--max-steps-per-epoch", "8", *mode]
    assert main(common + ["--epochs", "3", "--out", str(tmp_path / "full")]) == 0
    assert main(common + ["--epochs", "1", "--out", str(tmp_path / "cut")]) == 0
    assert main(["train", "--resume", str(tmp_path / "cut"), "--epochs", "3", "-q"]) == 0
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    keep = ("train_loss", "test_loss", "test_acc")
    assert [{k: r[k] for k in keep} for r in final(tmp_path / "full")] == \
           [{k: r[k] for k in keep} for r in final(tmp_path / "cut")]


def test_bf16_changes_the_arithmetic(tmp_path):
    """bf16 is really on: the same seed gives other numbers than fp32 (and fp32 stays fp32)."""
    runs = {}
    for p in ("fp32", "bf16"):
        dflearn.fit(rule="dfa", epochs=1, out=tmp_path / p, progress=False, log=lambda *a: None,
                    max_steps_per_epoch=5, precision=p, model_options={"widths": [32]})
        runs[p] = weights(tmp_path / p)
    assert any(not torch.equal(runs["fp32"][k], runs["bf16"][k]) for k in runs["fp32"])
    assert all(t.dtype == torch.float32 for t in runs["bf16"].values())


def test_unknown_precision_is_one_line():
    with pytest.raises(DflearnError, match="unknown precision 'fp8'; choose fp32 or bf16"):
        dflearn.fit(precision="fp8", epochs=1)
