"""Alignment diagnostics: signal, weight update and feedback angle against hand-derived values."""
import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dflearn
from dflearn.alignment import (cosine, diagnostics, feedback_angles, measure, sample_cosine,
                               signal_alignment, update_alignment)
from dflearn.models import build_model
from dflearn.rules import make_rule
from dflearn.training import Config, Trainer


def cos(a, b):
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


def per_sample(a, b):
    """cos(a[n], b[n]) for every sample whose vectors are both non-zero: a plain loop."""
    out = []
    for an, bn in zip(a.detach().double(), b.detach().double()):
        an, bn = an.flatten(), bn.flatten()
        if an.norm() > 0 and bn.norm() > 0:
            out.append(float(F.cosine_similarity(an, bn, dim=0)))
    return out


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 1, 6), 3, widths=[5, 4])
    x, y = torch.randn(8, 1, 1, 6), torch.randint(0, 3, (8,))
    return model, x, y


def test_bp_against_itself_is_one(net):
    model, x, y = net
    rule = make_rule("bp", model, x[:1])
    assert signal_alignment(model, rule, x, y) == pytest.approx([1.0, 1.0])
    assert update_alignment(model, rule, x, y) == pytest.approx([1.0, 1.0], abs=1e-9)
    assert feedback_angles(model, rule) == {}  # BP has no feedback matrix
    assert "feedback_angle" not in diagnostics(model, rule, x, y)


def test_dfa_equals_hand_computation(net):
    model, x, y = net
    rule = make_rule("dfa", model, x[:1])
    W1, W2, W3 = [m for m in model.modules() if isinstance(m, nn.Linear)]
    B = rule.state_dict()["feedback.B"]  # the stored B_i, stacked: 5 then 4 rows of d_L
    B1, B2 = B[:5], B[5:9]
    with torch.no_grad():
        h0 = x.flatten(1)
        a1 = h0 @ W1.weight.T + W1.bias
        h1 = a1.relu()
        a2 = h1 @ W2.weight.T + W2.bias
        h2 = a2.relu()
        logits = h2 @ W3.weight.T + W3.bias
        e = (logits.softmax(1) - F.one_hot(y, 3)) / len(y)
        bp2 = (e @ W3.weight) * (a2 > 0)
        bp1 = (bp2 @ W2.weight) * (a1 > 0)
        dfa1, dfa2 = (e @ B1.T) * (a1 > 0), (e @ B2.T) * (a2 > 0)

    def update(delta, h_in):  # [dW, db] of a Linear layer
        return torch.cat([(delta.T @ h_in).flatten(), delta.sum(0)])

    d = diagnostics(model, rule, x, y, per="batch")
    assert d["alignment"] == pytest.approx([cos(dfa1, bp1), cos(dfa2, bp2)], rel=1e-6)
    assert "alignment_std" not in d  # one cosine per batch: no spread
    # per sample (the default): each sample's cosine, then their mean and std (n - 1)
    s = diagnostics(model, rule, x, y)
    by_sample = [per_sample(dfa1, bp1), per_sample(dfa2, bp2)]
    assert s["alignment"] == pytest.approx([statistics.mean(c) for c in by_sample], rel=1e-6)
    assert s["alignment_std"] == pytest.approx([statistics.stdev(c) for c in by_sample], rel=1e-6)
    assert s["update_alignment"] == d["update_alignment"]  # over parameters: the same either way
    assert d["update_alignment"] == pytest.approx(
        [cos(update(dfa1, h0), update(bp1, h0)), cos(update(dfa2, h1), update(bp2, h1))], rel=1e-6)
    expected = [math.degrees(math.acos(cos(B1, (W3.weight @ W2.weight).T))),
                math.degrees(math.acos(cos(B2, W3.weight.T)))]
    assert d["feedback_angle"] == pytest.approx(expected, rel=1e-6)
    assert all(10 < a < 170 for a in expected)  # random B: far from both 0 and 180 degrees


@pytest.mark.parametrize("rule, options, points", [("dfa", {"init": "product"}, 2), ("las", {}, 1),
                                                   ("dkp", {"init": "zeros"}, 0)])
def test_feedback_angle_zero_for_product_init(net, rule, options, points):
    model, x, y = net
    angles = diagnostics(model, make_rule(rule, model, x[:1], **options), x, y)["feedback_angle"]
    assert angles[:points] == pytest.approx([0.0] * points, abs=1e-3)
    assert all(math.isnan(a) for a in angles[points:])  # LAS's last block: BP; DKP zeros: no direction


def test_per_sample_and_batch_measures_on_crafted_deltas():
    """One large well-aligned sample and three small opposed ones: the batch cosine, weighted by
    size, is positive; the per-sample mean, one vote per sample, is negative. A zero sample is left out."""
    a = torch.tensor([[10.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[10.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [3.0, 4.0]])
    cosines = [100 / (10 * math.sqrt(101)), -1.0, -1.0, -1 / math.sqrt(2)]  # by hand, row by row
    mean, std = sample_cosine(a, b)
    assert mean == pytest.approx(statistics.mean(cosines), rel=1e-12) and mean < -0.4
    assert std == pytest.approx(statistics.stdev(cosines), rel=1e-12)
    # the whole batch at once: <a, b> = 100 - 1 - 1 - 1 + 0, |a|^2 = 104, |b|^2 = 129
    assert cosine(a, b) == pytest.approx(97 / math.sqrt(104 * 129), rel=1e-12)
    assert cosine(a, b) - mean > 1.2  # the two measures tell different stories here
    assert all(math.isnan(v) for v in sample_cosine(a[4:], b[4:]))  # no sample with a direction
    assert sample_cosine(a[:1], b[:1])[0] == pytest.approx(cosines[0]) and math.isnan(sample_cosine(a[:1], b[:1])[1])


def test_per_sample_measure_of_a_sequence_takes_positions_with_the_sample():
    """(N, T, d) deltas: sample n's cosine is over its T x d values, not per position."""
    torch.manual_seed(1)
    a = torch.randn(6, 5, 4) * torch.tensor([8.0, 1, 1, 1, 0.5, 2]).view(6, 1, 1)
    b = a + torch.randn(6, 5, 4) * 2
    b[2] = -a[2]
    cosines = [float(F.cosine_similarity(a[n].reshape(-1), b[n].reshape(-1), dim=0)) for n in range(6)]
    mean, std = sample_cosine(a, b)
    assert (mean, std) == pytest.approx((statistics.mean(cosines), statistics.stdev(cosines)), rel=1e-6)
    per_position = F.cosine_similarity(a, b, dim=2).mean()  # what it is not
    assert abs(mean - float(per_position)) > 1e-3


def test_per_sample_alignment_of_a_sequence_model():
    """A GPT's feedback points carry (N, T, width) deltas; the trainer's measure pools each sample's."""
    torch.manual_seed(0)
    model = build_model("gpt", (12,), 11, layers=2, width=16, heads=2, context=12)
    x, y = torch.randint(0, 11, (5, 12)), torch.randint(0, 11, (5, 12))
    rule = make_rule("dfa", model, x[:1])
    m = measure(model, rule, x, y)
    assert all(d.dim() == 3 and d.shape[:2] == (5, 12) for d in m["deltas"])
    d = diagnostics(model, rule, x, y)
    by_sample = [per_sample(a, b) for a, b in zip(m["deltas"], m["bp_deltas"])]
    assert d["alignment"] == pytest.approx([statistics.mean(c) for c in by_sample], rel=1e-6)
    assert d["alignment_std"] == pytest.approx([statistics.stdev(c) for c in by_sample], rel=1e-6)
    assert signal_alignment(model, rule, x, y, per="batch") == pytest.approx(
        [cos(a, b) for a, b in zip(m["deltas"], m["bp_deltas"])], rel=1e-6)


def test_an_unknown_measure_is_refused_in_one_line(net):
    from dflearn.errors import DflearnError

    model, x, y = net
    with pytest.raises(DflearnError, match="unknown alignment measure 'mean'; choose sample .* or batch"):
        diagnostics(model, make_rule("dfa", model, x[:1]), x, y, per="mean")


def test_shallow_frozen_block_has_no_update(net):
    model, x, y = net
    d = diagnostics(model, make_rule("shallow", model, x[:1]), x, y)
    assert math.isnan(d["update_alignment"][0]) and d["update_alignment"][1] == pytest.approx(1.0)


class Recorder:
    def __init__(self):
        self.steps, self.epochs, self.closed = [], [], False

    def alignment(self, trainer, step, values):
        self.steps.append(step)

    def epoch(self, trainer, row):
        self.epochs.append(row["epoch"])

    def close(self):
        self.closed = True


def test_logged_at_the_promised_interval(tmp_path):
    rec = Recorder()
    config = Config(rule="dfa", model_options={"widths": [16, 16]}, epochs=2, max_steps_per_epoch=7,
                    align_every=3)
    Trainer(config, tmp_path / "run", progress=False, log=lambda *a: None, observers=[rec]).fit()
    rows = [__import__("json").loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [7, 14]  # max_steps_per_epoch ends each epoch after 7 batches
    assert rec.steps == [0, 3, 6, 9, 12] and rec.epochs == [1, 2] and rec.closed
    assert [r["alignment_measurements"] for r in rows] == [3, 2]
    for r in rows:
        assert len(r["alignment"]) == len(r["update_alignment"]) == len(r["feedback_angle"]) == 2


# ------------------------------------------------------------ the measure in training runs
DIGITS = ["train", "--dataset", "digits", "--epochs", "1", "--max-steps-per-epoch", "6", "--align-every", "2", "-q"]


def rows_of(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


def test_align_measure_flag_reaches_the_trainer(tmp_path, capsys):
    from dflearn.cli import main

    assert main([*DIGITS, "--out", str(tmp_path / "sample")]) == 0
    assert main([*DIGITS, "--align-measure", "batch", "--out", str(tmp_path / "batch")]) == 0
    (s,), (b,) = rows_of(tmp_path / "sample"), rows_of(tmp_path / "batch")
    assert json.loads((tmp_path / "sample" / "config.json").read_text())["align_measure"] == "sample"
    assert json.loads((tmp_path / "batch" / "config.json").read_text())["align_measure"] == "batch"
    assert s["alignment_measurements"] == 3 and len(s["alignment_std"]) == len(s["alignment"]) == 2
    assert all(0 <= v < 1 for v in s["alignment_std"][:1])  # LAS's first block: a spread over samples
    assert [len(t["alignment_std"]) for t in s["alignment_trace"]] == [2, 2, 2]
    assert "alignment_std" not in b and all("alignment_std" not in t for t in b["alignment_trace"])
    # measuring changes nothing in training: the same losses, and only the signal alignment differs
    assert s["train_loss"] == b["train_loss"] and s["update_alignment"] == b["update_alignment"]
    assert abs(s["alignment"][0] - b["alignment"][0]) > 1e-6


def test_print_config_round_trips_the_measure(tmp_path, capsys):
    from dflearn.cli import main

    assert main(["train", "--align-measure", "batch", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "align_measure: batch" in printed.splitlines()
    (tmp_path / "c.yaml").write_text(printed)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


def test_frozen_blocks_read_none_and_the_others_numbers(tmp_path):
    config = Config(rule="dfa", model_options={"widths": [16, 16, 16]}, epochs=1, max_steps_per_epoch=6,
                    align_every=2, freeze=["6"])  # the second hidden block
    Trainer(config, tmp_path / "run", progress=False, log=lambda *a: None).fit()
    (row,) = rows_of(tmp_path / "run")
    for entry in [row, *row["alignment_trace"]]:
        for key in ("alignment", "alignment_std", "update_alignment"):
            assert entry[key][1] is None, (key, entry)
            assert all(isinstance(v, float) for v in entry[key][::2]), (key, entry)


def test_a_run_from_before_the_measure_resumes_with_the_batch_measure(tmp_path):
    """Its config.json and checkpoint lack align_measure: it measured over the whole batch, and goes on so."""
    from dflearn.training.checkpoint import CHECKPOINT, load

    run = tmp_path / "old"
    common = dict(rule="dfa", model_options={"widths": [16]}, max_steps_per_epoch=4, align_every=2,
                  progress=False, log=lambda *a: None)
    dflearn.fit(out=run, epochs=1, align_measure="batch", **common)
    config = json.loads((run / "config.json").read_text())
    del config["align_measure"]
    (run / "config.json").write_text(json.dumps(config))
    state = load(run / CHECKPOINT)
    del state["config"]["align_measure"]
    torch.save(state, run / CHECKPOINT)
    dflearn.fit(resume=run, epochs=2, progress=False, log=lambda *a: None)
    assert json.loads((run / "config.json").read_text())["align_measure"] == "batch"
    assert [("alignment_std" in r) for r in rows_of(run)] == [False, False]
