"""Sequential feedback (fa, usf, brsf, frsf, kp, wm): the substituted backward,
the feedback weights' rules of motion, the alignment diagnostics, and learning."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dflearn
from dflearn import FeedbackPoint, feedback_angles, fit, make_rule, signal_alignment, train_step
from dflearn.errors import DflearnError
from dflearn.rules.fa import FA


class Sham(FA):
    """FA with B = W (W^T in the papers' orientation): must be exactly BP."""

    name = "sham"

    def feedback(self, k, module):
        return module.weight.detach()


def mlp():
    return dflearn.models.mlp((1, 8, 8), 10, widths=(32, 24))


def convnet():
    """Every Conv2d feature the substituted backward must handle."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), FeedbackPoint(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), nn.Tanh(), FeedbackPoint(),
        nn.Conv2d(8, 6, (3, 2), stride=(2, 1), padding=(1, 0), bias=False), nn.ReLU(), FeedbackPoint(),
        nn.Conv2d(6, 6, 3, padding="same", padding_mode="reflect"), nn.ReLU(), FeedbackPoint(),
        nn.Flatten(), nn.Linear(6 * 3 * 5, 10))


MODELS = {"mlp": (mlp, (1, 8, 8)), "conv": (convnet, (3, 11, 11))}


def batch(shape, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def setup(kind, seed, make):
    """A fresh model of `kind`, a batch for it, and the rule `make(model, example)`."""
    build, shape = MODELS[kind]
    torch.manual_seed(seed)
    model = build()
    x, y = batch(shape)
    return model, x, y, make(model, x[:1])


def grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("kind", MODELS)
def test_sham_feedback_gives_exactly_autograd_gradients(kind):
    model, x, y, rule = setup(kind, 0, Sham)
    assert len(rule.layers) == (1 if kind == "mlp" else 3) + 1  # all but the first layer
    F.cross_entropy(model(x), y).backward()
    expected = grads(model)
    model.zero_grad()
    # e by autograd through the same F.cross_entropy (a loss given explicitly): bitwise comparable
    train_step(model, rule, x, y, torch.optim.SGD(model.parameters(), lr=0.0), loss_fn=F.cross_entropy)
    for k, g in grads(model).items():
        if kind == "conv" and k.endswith("bias"):  # a sum over (N, H, W) in another order than autograd's
            torch.testing.assert_close(g, expected[k], rtol=1e-6, atol=1e-9)
        else:
            assert torch.equal(g, expected[k]), k
    assert "forward" not in model[3].__dict__  # the substitution is gone after the step
    model.zero_grad()  # the default loss's closed-form e equals autograd's to rounding (tests/test_engine.py)
    train_step(model, rule, x, y, torch.optim.SGD(model.parameters(), lr=0.0))
    for k, g in grads(model).items():
        torch.testing.assert_close(g, expected[k], rtol=1e-5, atol=1e-8)



def capture(module):
    """Keep a module's input and output, with their gradients after the backward."""
    kept = {}

    def hook(m, inputs, output):
        inputs[0].retain_grad()
        output.retain_grad()
        kept["x"], kept["out"] = inputs[0], output
    module.register_forward_hook(hook)
    return kept


@pytest.mark.parametrize("kind", MODELS)
def test_fa_input_gradient_is_the_feedback_weight_applied_to_delta(kind):
    model, x, y, rule = setup(kind, 1, lambda m, ex: make_rule("fa", m, ex))
    modules = dict(model.named_modules())
    kept = {name: capture(modules[name]) for name in rule.layers}
    train_step(model, rule, x, y, torch.optim.SGD(model.parameters(), lr=0.0))
    for k, name in enumerate(rule.layers):
        m, B, c = modules[name], rule.feedback_weights[k], kept[name]
        delta, inp = c["out"].grad, c["x"].detach()
        if isinstance(m, nn.Linear):
            torch.testing.assert_close(c["x"].grad, delta @ B)  # B_paper delta, B_paper = B^T
            torch.testing.assert_close(m.weight.grad, delta.t() @ inp)
        else:
            if m.padding_mode != "zeros":  # the padded input is what the conv saw
                inp = F.pad(inp, m._reversed_padding_repeated_twice, mode=m.padding_mode)
            padding = (0, 0) if isinstance(m.padding, str) else m.padding
            out_size = [(s + 2 * p - d * (k_ - 1) - 1) // st + 1
                        for s, p, d, k_, st in zip(inp.shape[2:], padding, m.dilation, m.kernel_size, m.stride)]
            extra = [s - ((o - 1) * st - 2 * p + d * (k_ - 1) + 1) for s, o, p, d, k_, st in
                     zip(inp.shape[2:], out_size, padding, m.dilation, m.kernel_size, m.stride)]
            dx = F.conv_transpose2d(delta, B, None, m.stride, padding, extra, m.groups, m.dilation)
            if m.padding_mode == "zeros":
                torch.testing.assert_close(c["x"].grad, dx)
            w = m.weight.detach().clone().requires_grad_()
            (dw,) = torch.autograd.grad(F.conv2d(inp, w, None, m.stride, padding, m.dilation, m.groups), w, delta)
            torch.testing.assert_close(m.weight.grad, dw)
            if m.bias is not None:
                torch.testing.assert_close(m.bias.grad, delta.sum((0, 2, 3)))
        assert not torch.allclose(c["x"].grad, torch.zeros(()))


def steps(rule_name, kind="mlp", n=5, record=False):
    """n SGD steps under a rule; with record, the (B, W) each forward pass used."""
    build, shape = MODELS[kind]
    torch.manual_seed(2)
    model = build()
    rule = make_rule(rule_name, model, torch.zeros(1, *shape))
    used = []
    if record:
        original = rule.feedback

        def feedback(k, module):
            B = original(k, module)
            used.append((k, B.clone(), module.weight.detach().clone()))
            return B
        rule.feedback = feedback
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    fopt = torch.optim.SGD(rule.parameters(), lr=0.5, weight_decay=0.1) if list(rule.parameters()) else None
    for s in range(n):
        x, y = batch(shape, seed=s)
        train_step(model, rule, x, y, opt, fopt)
    return model, rule, used


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_sign_concordant_feedback_follows_the_sign_of_w(name, kind):
    model, rule, used = steps(name, kind, record=True)
    assert len(used) == 5 * len(rule.layers)
    for k, B, W in used:
        assert torch.equal(torch.sign(B), torch.sign(W))
    first = {k: B.abs() for k, B, _ in used[:len(rule.layers)]}
    for k, B, W in used[len(rule.layers):]:
        same = torch.equal(B.abs(), first[k])
        assert same == (name != "brsf")  # frsf: fixed magnitudes M; brsf: redrawn; usf: constant
    signs_changed = any(not torch.equal(torch.sign(W), torch.sign(used[k][2])) for k, _, W in used[-len(rule.layers):])
    assert signs_changed  # the steps flipped some signs of W, and B followed them


def test_fixed_and_learned_feedback_weights_live_in_state_dict():
    model, fa, _ = steps("fa", n=2)
    stored = ["feedback_weights.0", "feedback_weights.1"]  # hidden layer 2 and the head
    assert list(fa.state_dict()) == stored and not list(fa.parameters())
    model, kp, _ = steps("kp", n=2)
    assert [n for n, _ in kp.named_parameters()] == stored
    assert list(model.state_dict()) == list(mlp().state_dict())  # the model's keys are untouched
    other = make_rule("kp", mlp(), torch.zeros(1, 1, 8, 8))
    other.load_state_dict(kp.state_dict())
    assert torch.equal(other.feedback_weights[1], kp.feedback_weights[1])
    assert make_rule("usf", model, torch.zeros(1, 1, 8, 8)).state_dict() == {}


def test_kp_feedback_converges_to_w_transposed():
    data = dflearn.load_dataset("digits")
    torch.manual_seed(0)
    model = dflearn.models.mlp(data.input_shape, 10, widths=(32, 32))
    rule = make_rule("kp", model, torch.zeros(1, *data.input_shape))
    before = feedback_angles(model, rule)
    assert min(before.values()) > 70  # random B start nearly orthogonal to W^T
    settings = dict(lr=0.05, momentum=0.9, weight_decay=0.02)
    opt = torch.optim.SGD(model.parameters(), **settings)
    fopt = torch.optim.SGD(rule.parameters(), **settings)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        for x, y in dflearn.data.Batches(data, "train", 32, shuffle=True, generator=g):
            train_step(model, rule, x, y, opt, fopt)
    after = feedback_angles(model, rule)
    assert max(after.values()) < 10, after


@pytest.mark.parametrize("kind", MODELS)
def test_weight_mirror_alone_aligns_b_with_w_transposed(kind):
    build, shape = MODELS[kind]
    torch.manual_seed(3)
    model = build()
    rule = make_rule("wm", model, torch.zeros(1, *shape))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    # the rule's default feedback optimizer: SGD lr 1e-3, weight decay 1, momentum 0.9
    fopt = torch.optim.SGD(rule.parameters(), lr=1e-3, momentum=0.9, weight_decay=1.0)
    assert min(feedback_angles(model, rule).values()) > 70
    for _ in range(300):
        fopt.zero_grad()
        rule.feedback_loss(model, None).backward()  # the mirror reads the weights only
        fopt.step()
    assert max(feedback_angles(model, rule).values()) < 20
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # the network stayed fixed
    for k, name in enumerate(rule.layers):  # B settles at noise^2 / wd * W: W's own scale
        ratio = rule.feedback_weights[k].norm() / dict(model.named_modules())[name].weight.norm()
        assert 0.8 < ratio < 1.25


def test_alignment_measures_the_sequential_backward():
    torch.manual_seed(4)
    model = mlp()
    x, y = batch((1, 8, 8))
    sham = Sham(model, x[:1])
    assert signal_alignment(model, sham, x, y) == pytest.approx([1.0, 1.0], abs=1e-6)
    fa = make_rule("fa", model, x[:1])
    cos = signal_alignment(model, fa, x, y)
    assert all(abs(c) < 0.5 for c in cos)  # random B: far from BP's delta at both points
    # the rule's delta at the last hidden pre-activation is (e B_paper) * f'(a), computed by hand
    with torch.no_grad():
        a = model[4](model[3](model[2](model[1](model[0](x)))))
        logits = model(x)
    e = (torch.softmax(logits, 1) - F.one_hot(y, 10)) / len(y)  # dLoss/dlogits
    delta = (e @ fa.feedback_weights[1]) * (a > 0)
    a.requires_grad_()
    bp = torch.autograd.grad(F.cross_entropy(model[7](model[6](model[5](a))), y), a)[0]
    by_hand = float((delta * bp).sum() / (delta.norm() * bp.norm()))  # cosine over the flattened batch
    assert signal_alignment(model, fa, x, y, per="batch")[1] == pytest.approx(by_hand, abs=1e-6)
    each = [float(d @ b / (d.norm() * b.norm())) for d, b in zip(delta, bp)]  # per sample: the default
    assert cos[1] == pytest.approx(sum(each) / len(each), abs=1e-6)
    # direct rules keep their meaning: BP 1 everywhere, Shallow's frozen block NaN
    assert signal_alignment(model, make_rule("bp", model, x[:1]), x, y) == pytest.approx([1.0, 1.0])
    assert math.isnan(signal_alignment(model, make_rule("shallow", model, x[:1]), x, y)[0])


def test_errors_name_the_problem():
    rule = make_rule("fa", mlp(), torch.zeros(1, 1, 8, 8))
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), FeedbackPoint(), nn.Linear(32, 10))
    with pytest.raises(DflearnError, match="built for another model"):
        train_step(other, rule, *batch((1, 8, 8)), torch.optim.SGD(other.parameters(), lr=0.1))
    assert "forward" not in other[1].__dict__
    with pytest.raises(DflearnError, match="noise must be > 0"):
        make_rule("wm", mlp(), torch.zeros(1, 1, 8, 8), noise=0.0)
    net = mlp()  # direct rules describe B_i per feedback point, not per layer
    dfa = make_rule("dfa", net, torch.zeros(1, 1, 8, 8))
    assert list(feedback_angles(net, dfa)) == [p.name for p in dfa.layout.points]


@pytest.mark.parametrize("name", ["fa", "usf", "brsf", "frsf", "kp", "wm"])
def test_rule_learns_digits(name, tmp_path):
    s = fit(rule=name, dataset="digits", epochs=10, model_options={"widths": [128, 128]},
            out=tmp_path / name, progress=False, log=lambda *a: None)
    assert s["final_test_accuracy"] >= 0.93, s


# 2 epochs measured (docs/sequential.md): fa .952, usf .969, frsf .967, kp .954, wm .967
MNIST_MIN = {"fa": 0.94, "usf": 0.96, "brsf": 0.94, "frsf": 0.96, "kp": 0.94, "wm": 0.96}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MNIST_MIN))
def test_rule_learns_mnist_in_two_epochs(name, tmp_path, data_dir):
    # 784-1024-1024-10, Adam lr 1e-4, batch 64, 2 epochs: the setting
    s = fit(rule=name, dataset="mnist", model="mlp-mnist", epochs=2, lr=1e-4, data_dir=str(data_dir),
            out=tmp_path / name, progress=False, log=lambda *a: None)
    assert s["final_test_accuracy"] >= MNIST_MIN[name], s


@pytest.mark.parametrize("name", ["bp", "fa", "kp"])
def test_rules_that_need_no_feedback_points_train_a_plain_model(name):
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(10, 1, 3, 4), torch.randint(0, 3, (10,))
    rule = dflearn.make_rule(name, model, x[:1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fb = torch.optim.SGD(rule.parameters(), lr=0.1) if list(rule.parameters()) else None
    first = dflearn.train_step(model, rule, x, y, opt, fb)[0]
    for _ in range(30):
        last = dflearn.train_step(model, rule, x, y, opt, fb)[0]
    assert last < first
    with pytest.raises(dflearn.DflearnError, match="no feedback points"):
        dflearn.make_rule("dfa", model, x[:1])
