"""dflearn.cost: every count against a hand computation, scaling laws, PyTorch's FLOP counter, the CLI."""
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dflearn import FeedbackPoint
from dflearn.cli import main
from dflearn.cost import step_cost
from dflearn.models import mlp
from dflearn.rules import make_rule

N = 7  # batch


def small_mlp(d_out=3, widths=(5, 4)):
    return mlp((1, 2, 3), d_out, widths=widths)  # 6 -> 5 -> 4 -> d_out


def small_conv():
    # (2,6,6) -conv3x3 pad1-> (3,6,6) -pool2-> (3,3,3) | -conv3x3-> (4,1,1) | -> 5 | -> 2
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), FeedbackPoint(),
                         nn.Conv2d(3, 4, 3), nn.ReLU(), FeedbackPoint(),
                         nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), FeedbackPoint(), nn.Linear(5, 2))


def counts(cost, *keys):
    return [[getattr(b, k) for k in keys] for b in cost.blocks]


MACS = ("forward", "signal", "weight_grad", "feedback_update")
STATE = ("feedback_values", "feedback_indices")
MOVED = ("received_errors", "received_weights", "received_indices")


def test_mlp_counts_by_hand():
    torch.manual_seed(0)
    model, x = small_mlp(), torch.zeros(1, 1, 2, 3)
    # layers 6x5=30, 5x4=20, 4x3=12 weights; one MAC per weight per sample
    bp = step_cost(model, "bp", x, N)
    # BP: block 1's signal is W2^T delta2 (7*20), block 2's W3^T e (7*12); the first layer's input needs none
    assert counts(bp, *MACS) == [[7 * 30, 7 * 20, 7 * 30, 0], [7 * 20, 7 * 12, 7 * 20, 0], [7 * 12, 0, 7 * 12, 0]]
    # each block receives the next layer's weights and its deltas; the head receives e (7 x 3)
    assert counts(bp, *MOVED) == [[7 * 4, 20, 0], [7 * 3, 12, 0], [7 * 3, 0, 0]]
    assert bp.total.received_bytes == 4 * (28 + 20 + 21 + 12 + 21) and bp.total.feedback_bytes == 0

    dfa = step_cost(model, "dfa", x, N)  # g_i = e B_i^T, B_1 5x3, B_2 4x3
    assert counts(dfa, *MACS) == [[7 * 30, 7 * 5 * 3, 7 * 30, 0], [7 * 20, 7 * 4 * 3, 7 * 20, 0], [7 * 12, 0, 7 * 12, 0]]
    assert counts(dfa, *STATE) == [[15, 0], [12, 0], [0, 0]]
    assert counts(dfa, *MOVED) == [[7 * 3, 15, 0], [7 * 3, 12, 0], [7 * 3, 0, 0]]

    rule = make_rule("sdfa", model, x, k=2)
    assert [len(set(ix.flatten().tolist())) for ix in rule.state_dict()["feedback.index"].split([5, 4])] == [3, 3]
    sdfa = step_cost(model, rule, x, N)  # 2 gathered errors, 2 values and 2 indices per unit
    assert counts(sdfa, *MACS) == [[7 * 30, 7 * 5 * 2, 7 * 30, 0], [7 * 20, 7 * 4 * 2, 7 * 20, 0], [7 * 12, 0, 7 * 12, 0]]
    assert counts(sdfa, *STATE) == [[10, 10], [8, 8], [0, 0]]
    assert counts(sdfa, *MOVED) == [[7 * 3, 10, 10], [7 * 3, 8, 8], [7 * 3, 0, 0]]  # all 3 outputs are referenced
    assert sdfa.total.feedback_bytes == 4 * 18 + 4 * 18

    las = step_cost(model, "las", x, N)  # M_1 3x5: forward, update, VJP 7*15 each; block 2 by BP
    assert counts(las, *MACS) == [[7 * 30, 7 * 15, 7 * 30, 2 * 7 * 15], [7 * 20, 7 * 12, 7 * 20, 0],
                                  [7 * 12, 0, 7 * 12, 0]]
    assert counts(las, *STATE) == [[15, 0], [0, 0], [0, 0]]
    assert counts(las, *MOVED) == [[2 * 7 * 3, 15, 0], [7 * 3, 12, 0], [7 * 3, 0, 0]]  # e and the logits

    dkp = step_cost(model, "dkp", x, N)  # as DFA plus dB_i = h_i^T e
    assert [b.feedback_update for b in dkp.blocks] == [7 * 15, 7 * 12, 0]

    shallow = step_cost(model, "shallow", x, N)  # block 1 gets nothing and computes nothing
    assert counts(shallow, *MACS)[0] == [7 * 30, 0, 0, 0] and counts(shallow, *MOVED)[0] == [0, 0, 0]
    assert counts(shallow, *MACS)[1] == [7 * 20, 7 * 12, 7 * 20, 0]


def test_conv_counts_by_hand():
    torch.manual_seed(0)
    model, x = small_conv(), torch.zeros(1, 2, 6, 6)
    conv1 = 3 * 6 * 6 * 2 * 9  # outputs x (in channels x kernel) = 1944; BN: elementwise, 0
    conv2 = 4 * 1 * 1 * 3 * 9  # 108
    fc, head = 4 * 5, 5 * 2
    bp = step_cost(model, "bp", x, N)
    assert bp.blocks[0].modules == ("0", "1")
    assert counts(bp, *MACS) == [[7 * conv1, 7 * conv2, 7 * conv1, 0], [7 * conv2, 7 * fc, 7 * conv2, 0],
                                 [7 * fc, 7 * head, 7 * fc, 0], [7 * head, 0, 7 * head, 0]]
    # block 1 receives conv2's kernel (4x3x3x3) and its output deltas (7 x 4x1x1)
    assert counts(bp, *MOVED) == [[7 * 4, 108, 0], [7 * 5, 20, 0], [7 * 2, 10, 0], [7 * 2, 0, 0]]

    dfa = step_cost(model, "dfa", x, N)  # n_i = 27, 4, 5 units; d_L = 2
    assert [b.signal for b in dfa.blocks] == [7 * 27 * 2, 7 * 4 * 2, 7 * 5 * 2, 0]
    assert counts(dfa, *STATE) == [[54, 0], [8, 0], [10, 0], [0, 0]]

    las = step_cost(model, "las", x, N)
    # local conv 3x3 pad 1 with d_L=2 planes: on (3,3,3): 2*3*3 outputs x 3*9 = 486; on (4,1,1): 2*1*1 x 4*9 = 72
    assert counts(las, *MACS)[:2] == [[7 * conv1, 7 * 486, 7 * conv1, 2 * 7 * 486],
                                      [7 * conv2, 7 * 72, 7 * conv2, 2 * 7 * 72]]
    assert counts(las, *STATE)[:2] == [[2 * 3 * 9, 0], [2 * 4 * 9, 0]]
    assert counts(las, *MACS)[2] == [7 * fc, 7 * head, 7 * fc, 0]  # last block: BP


def test_sparse_scales_with_k_not_outputs_dense_with_outputs():
    torch.manual_seed(0)
    units = 5 + 4
    for d_out in (4, 12):
        model, x = small_mlp(d_out), torch.zeros(1, 1, 2, 3)
        for k in (1, 2, 4):
            t = step_cost(model, "sdfa", x, N, k=k).total
            assert t.signal == 7 * units * k  # every hidden block by feedback, none by the head
            assert t.feedback_bytes == 8 * units * k
            assert t.received_weights == units * k and t.received_indices == units * k
        t = step_cost(model, "dfa", x, N).total
        assert t.signal == 7 * units * d_out and t.feedback_values == units * d_out
        assert t.received_weights == units * d_out


def test_bp_signal_is_the_weights_above_the_first_layer():
    for widths in ((5, 4), (16, 8, 8)):
        model, x = small_mlp(3, widths), torch.zeros(1, 1, 2, 3)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        t = step_cost(model, "bp", x, N).total
        assert t.signal == N * sum(m.weight.numel() for m in linears[1:])
        assert t.received_weights == sum(m.weight.numel() for m in linears[1:])


@pytest.mark.parametrize("build,shape", [(small_mlp, (1, 2, 3)), (small_conv, (2, 6, 6))])
def test_agrees_with_flop_counter(build, shape):
    torch.manual_seed(0)
    model = build()
    x, y = torch.randn(N, *shape), torch.randint(0, 2, (N,))
    bp = step_cost(model, "bp", x[:1], N)
    with FlopCounterMode(display=False) as fwd:
        loss = nn.functional.cross_entropy(model(x), y)
    assert fwd.get_total_flops() == 2 * bp.total.forward
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    assert bwd.get_total_flops() == 2 * (bp.total.signal + bp.total.weight_grad)
    dfa = make_rule("dfa", model, x[:1])
    with FlopCounterMode(display=False) as proj:
        dfa.feedback.project(torch.randn(N, 2 if build is small_conv else 3))
    assert proj.get_total_flops() == 2 * step_cost(model, dfa, x[:1], N).total.signal


def test_cli_table_and_json(tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert main(["cost", "--model", "mlp", "--dataset", "digits", "--rule", "sdfa", "--rule", "dfa", "-o", "k=1",
                 "--batch-size", "8", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| sdfa (k=1) |" in text and "| total |" in text and "moved bytes" in text
    data = json.loads(out.read_text())
    assert list(data["rules"]) == ["bp", "sdfa", "dfa"] and data["input_shape"] == [1, 8, 8]
    bp, dfa = data["rules"]["bp"]["total"], data["rules"]["dfa"]["total"]
    assert data["rules"]["dfa"]["ratio_to_bp"]["learning"] == dfa["learning"] / bp["learning"]
    assert dfa["signal"] == 8 * (1024 + 1024) * 10  # mlp default widths (1024, 1024), 10 classes


@pytest.mark.parametrize("argv,message", [
    (["--rules", "nope"], "unknown rule 'nope'"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--rules", "dfa", "-o", "k=1"], "has option 'k'"),
    (["--rules", "sdfa", "-o", "k=99"], "k must be between 1"),
    (["--dataset", "nope"], "unknown data set 'nope'"),
    (["--input-shape", "3,a"], "is not C,H,W"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys):
    assert main(["cost", "--brief"] + argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("dflearn: error: ") and message in err and err.count("\n") == 1
