"""Alignment diagnostics: signal, weight update and feedback angle against hand-derived values."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dflearn.alignment import diagnostics, feedback_angles, signal_alignment, update_alignment
from dflearn.models import build_model
from dflearn.rules import make_rule
from dflearn.training import Config, Trainer


def cos(a, b):
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


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

    d = diagnostics(model, rule, x, y)
    assert d["alignment"] == pytest.approx([cos(dfa1, bp1), cos(dfa2, bp2)], rel=1e-6)
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
