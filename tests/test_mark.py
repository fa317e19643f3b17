"""Bring your own model: dflearn.mark on the example's residual MLP-Mixer."""
import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dflearn
from dflearn import DflearnError, feedback_report, make_rule, mark, train_step

spec = importlib.util.spec_from_file_location("mixer_example", Path(__file__).parents[1] / "examples" / "mixer.py")
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)

BLOCKS = ["blocks.0", "blocks.1", "blocks.2"]


def batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def mixers():
    torch.manual_seed(0)
    plain = example.Mixer()
    return plain, mark(copy.deepcopy(plain), BLOCKS)


def step_grads(model, rule, x, y):
    """The gradients train_step leaves (lr 0: parameters stay put)."""
    train_step(model, rule, x, y, torch.optim.SGD(model.parameters(), lr=0.0))
    return {n: p.grad for n, p in model.named_parameters()}


def test_markers_change_nothing_under_bp():
    plain, marked = mixers()
    assert plain.state_dict().keys() == marked.state_dict().keys()
    x, y = batch()
    assert torch.equal(plain(x), marked(x))
    F.cross_entropy(plain(x), y).backward()
    grads = step_grads(marked, make_rule("bp", marked, x[:1]), x, y)
    for name, p in plain.named_parameters():
        assert torch.equal(grads[name], p.grad), name


def test_dfa_gives_each_block_its_bp_gradient_of_the_injected_signal():
    _, model = mixers()
    x, y = batch()
    rule = make_rule("dfa", model, x[:1])
    assert [p.name for p in rule.layout.points] == [f"{b}.feedback_point" for b in BLOCKS]
    grads = step_grads(model, rule, x, y)

    # by hand: block k runs on the detached output of block k-1 (block 0 includes the embedding)
    h, expected = model.embed(x).flatten(2).transpose(1, 2), {}
    outputs = []
    for k, name in enumerate(BLOCKS):
        h = model.blocks[k](h if k == 0 else h.detach())
        outputs.append(h)
    logits = model.head(model.norm(h.detach()).flatten(1))
    e = (logits.softmax(1) - F.one_hot(y, 10)) / len(y)
    stored = rule.state_dict()["feedback.B"].split([o[0].numel() for o in outputs])  # B_k of each block
    for k, name in enumerate(BLOCKS):
        g = (e.detach() @ stored[k].t()).view_as(outputs[k])
        owned = {f"{name}.{n}": p for n, p in model.blocks[k].named_parameters()}
        if k == 0:
            owned.update({f"embed.{n}": p for n, p in model.embed.named_parameters()})
        expected.update(zip(owned, torch.autograd.grad(outputs[k], list(owned.values()), g)))
    head = {f"norm.{n}": p for n, p in model.norm.named_parameters()}
    head.update({f"head.{n}": p for n, p in model.head.named_parameters()})
    expected.update(zip(head, torch.autograd.grad(logits, list(head.values()), e.detach())))
    assert expected.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)  # float32 rounding


def test_report_lists_points_shapes_and_feedback_sizes():
    _, model = mixers()
    report = feedback_report(model, torch.zeros(1, 1, 8, 8))
    lines = report.splitlines()
    for k in range(3):
        row = next(line for line in lines if line.startswith(f"blocks.{k}.feedback_point"))
        assert "16x32" in row and " 512 " in row and "512x10" in row and f"blocks.{k}.tokens.0" in row
    assert "embed" in lines[1] and "norm, head" in lines[-2]
    assert lines[-1] == "3 feedback points, 10 outputs; dense direct feedback: 15,360 numbers"


class Pair(nn.Module):
    def forward(self, x):
        return x, x


class Odd(nn.Module):
    """A block whose output is a tuple, and a layer that forward never calls."""

    def __init__(self):
        super().__init__()
        self.pair, self.fc, self.unused, self.head = Pair(), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.fc(self.pair(x)[0]))


@pytest.mark.parametrize("names, message", [
    (["pair"], "feedback point 'pair.feedback_point' receives a tuple, not a tensor"),
    (["fc", "unused"], "feedback point 'unused.feedback_point' is never reached in the forward pass"),
])
def test_unsupported_points_fail_clearly(names, message):
    model = mark(Odd(), names)
    for build in (lambda: feedback_report(model, torch.zeros(1, 4)),
                  lambda: make_rule("dfa", model, torch.zeros(1, 4))):
        with pytest.raises(DflearnError, match=message):
            build()


def test_bad_names_fail_clearly():
    with pytest.raises(DflearnError, match="no submodule 'blocks.7'"):
        mark(example.Mixer(), ["blocks.7"])
    with pytest.raises(DflearnError, match="already a feedback point or marked"):
        mark(example.Mixer(), ["blocks.0", "blocks.0"])
    with pytest.raises(DflearnError, match="whole model"):
        mark(example.Mixer(), [""])


def test_marked_linear_keeps_itself_in_its_block():
    model = mark(nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Linear(8, 2)), ["1"])
    (point,) = make_rule("dfa", model, torch.zeros(1, 4)).layout.points
    assert point.name == "1.feedback_point" and point.block == ("1",)


def test_example_model_learns_under_las():
    torch.set_num_threads(1)
    summary = dflearn.fit(rule="las", model="mixer", epochs=3, out=None, progress=False, log=lambda *a: None)
    assert summary["final_test_accuracy"] > 0.8  # measured 0.93 at 3 epochs; chance is 0.10
