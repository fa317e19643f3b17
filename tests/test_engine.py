"""Engine v2: outputs and points with positions, every rule's step driven by the tools,
a user's rule with its own step, the two rule families the old engine could not hold,
and the option validator."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dflearn
from dflearn import DflearnError, FeedbackPoint, make_rule, train_step
from dflearn.cli import main
from dflearn.cost import step_cost
from helpers import linears

V, C, T, N = 6, 5, 4, 3  # vocabulary, width, positions, batch


class TokenNet(nn.Module):
    """ids (N, T) -> logits (N, T, V), every position on its own (no mixing), so a sequence
    problem is T independent problems; ids (N,) -> (N, V), the same net on one position."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, C)
        self.blocks = nn.Sequential(nn.Linear(C, C), nn.Tanh(), FeedbackPoint(),
                                    nn.Linear(C, C), nn.Tanh(), FeedbackPoint())
        self.head = nn.Linear(C, V)

    def forward(self, ids):
        return self.head(self.blocks(self.embed(ids)))


def sequence_problem(seed=0):
    torch.manual_seed(seed)
    net = TokenNet().double()
    g = torch.Generator().manual_seed(seed + 1)
    x, y = torch.randint(0, V, (N, T), generator=g), torch.randint(0, V, (N, T), generator=g)
    return net, x, y


def grads_after_step(net, rule, x, y, feedback_lr=None):
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    fb = torch.optim.SGD(rule.parameters(), lr=feedback_lr) if feedback_lr is not None else None
    train_step(net, rule, x, y, opt, fb)
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name,options", [("dfa", {}), ("sdfa", {"k": 2}), ("drtp", {}), ("dkp", {})])
def test_per_position_direct_rules_are_T_independent_problems_sharing_one_B(name, options):
    net, x, y = sequence_problem()
    rule = make_rule(name, net, x[:1], **options).double()
    assert rule.layout.positions == (T,) and [p.features for p in rule.layout.points] == [C, C]
    start = {k: v.clone() for k, v in rule.state_dict().items()}
    got = grads_after_step(net, rule, x, y, feedback_lr=1.0 if name == "dkp" else None)
    # the same net and the same B on each position alone: loss mean over N, so the
    # sequence's gradient (mean over N and T) is the mean over t of the T problems'
    expected, fb_updates = {}, []
    for t in range(T):
        flat = make_rule(name, net, x[:1, 0], **options).double()
        assert flat.layout.positions == ()
        flat.load_state_dict(start)
        gt = grads_after_step(net, flat, x[:, t], y[:, t], feedback_lr=1.0 if name == "dkp" else None)
        for k, v in gt.items():
            expected[k] = expected.get(k, 0) + v / T
        fb_updates.append(start["feedback.B"] - flat.state_dict()["feedback.B"] if name == "dkp" else None)
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12, msg=k)
    if name == "dkp":  # dB = sum over samples and positions of h^T e: the mean of the T problems' updates
        torch.testing.assert_close(start["feedback.B"] - rule.state_dict()["feedback.B"],
                                   sum(fb_updates) / T, rtol=1e-10, atol=1e-12)


def test_per_position_dfa_signal_by_hand():
    net, x, y = sequence_problem()
    rule = make_rule("dfa", net, x[:1]).double()
    fwd = rule.forward_pass(net, x, y)
    e = (F.softmax(fwd.logits, -1) - F.one_hot(y, V)) / (N * T)  # the mean over batch and positions
    torch.testing.assert_close(fwd.error, e)
    B = rule.state_dict()["feedback.B"]  # (C + C, V): both points' B_i stacked
    for i, g in enumerate(rule.signals(fwd)):
        Bi = B[i * C:(i + 1) * C]
        for n in range(N):
            for t in range(T):
                torch.testing.assert_close(g[n, t], Bi @ e[n, t])  # g[n, t] = e[n, t] B_i^T


@pytest.mark.parametrize("name", ["las", "ltas"])
def test_per_position_local_modules_are_T_problems_sharing_one_module(name):
    net, x, y = sequence_problem()
    rule = make_rule(name, net, x[:1], init="default").double()
    start = {k: v.clone() for k, v in rule.state_dict().items()}
    fwd = rule.forward_pass(net, x, y)
    rule.zero_grad()
    rule.feedback_loss(net, fwd).backward()
    got_local = rule.local[0].weight.grad.clone()
    got = grads_after_step(net, rule, x, y)  # no feedback optimizer: M_1 as it is
    expected, expected_local = {}, 0
    for t in range(T):
        flat = make_rule(name, net, x[:1, 0], init="default").double()
        flat.load_state_dict(start)
        f = flat.forward_pass(net, x[:, t], y[:, t])
        flat.zero_grad()
        flat.feedback_loss(net, f).backward()
        expected_local = expected_local + flat.local[0].weight.grad / T
        for k, v in grads_after_step(net, flat, x[:, t], y[:, t]).items():
            expected[k] = expected.get(k, 0) + v / T
    torch.testing.assert_close(got_local, expected_local, rtol=1e-10, atol=1e-12)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12, msg=k)


@pytest.mark.parametrize("name", ["dfa", "sdfa", "drtp", "dkp", "las", "ltas", "shallow", "localheads",
                                  "fa", "kp", "bp"])
def test_a_per_token_cross_entropy_output_trains_under_every_rule(name):
    # copy task: predict the input token at every position
    torch.manual_seed(0)
    net = TokenNet()
    with torch.no_grad():
        net.embed.weight.copy_(torch.eye(V, C) * 3)  # distinct embeddings, so the task is learnable
    x = torch.randint(0, V, (64, T))
    rule = make_rule(name, net, x[:1])
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    fb = torch.optim.Adam(rule.parameters(), lr=1e-2) if rule.learns_feedback else None
    first = None
    for _ in range(150):
        loss, logits = train_step(net, rule, x, x, opt, fb)
        first = first if first is not None else float(loss)
    assert logits.shape == (64, T, V)
    assert float(loss) < 0.5 * first, (name, first, float(loss))


def test_a_point_without_the_outputs_positions_is_refused_in_one_line():
    class Pooled(TokenNet):
        def __init__(self):
            super().__init__()
            self.point = FeedbackPoint()

        def forward(self, ids):
            h = self.blocks(self.embed(ids))
            pooled = self.point(h.mean(1))  # (N, C): no positions, while the output has them
            return self.head(h + pooled.unsqueeze(1))

    net, x, y = Pooled(), *sequence_problem()[1:]
    with pytest.raises(DflearnError, match="'point' has shape \\(5,\\), which does not start with the output's "
                                           "positions \\(4,\\)") as info:
        make_rule("dfa", net, x[:1])
    assert "\n" not in str(info.value)
    make_rule("bp", net, x[:1])  # BP (and the sequential rules) need no signal there


def test_any_module_as_a_las_local_module_gets_autograds_vjp():
    torch.manual_seed(0)
    net = dflearn.models.mlp((1, 1, 8), 3, widths=[6, 5])
    x, y = torch.randn(10, 1, 1, 8), torch.randint(0, 3, (10,))

    rule = make_rule("las", net, x[:1], local=two_layer)
    assert isinstance(rule.local[0], nn.Sequential)
    fwd = rule.forward_pass(net, x, y)
    g = rule.signals(fwd)[0]
    _, pullback = torch.func.vjp(rule.local[0], fwd.points[0].detach())
    torch.testing.assert_close(g, pullback(fwd.error)[0])



def two_layer(point, num_outputs):
    """A nonlinear local module (no closed form): autograd gives its VJP."""
    return nn.Sequential(nn.Linear(point.size, 7), nn.Tanh(), nn.Linear(7, num_outputs))


def test_a_local_module_from_the_command_line_trains(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--rule", "las", "-o", "local=test_engine:two_layer", "-m", "widths=[64,64]",
                 "--epochs", "2", "--out", str(out), "-q"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["rule_options"] == {"local": "test_engine:two_layer"}  # recorded by name
    assert json.loads((out / "summary.json").read_text())["final_test_accuracy"] > 0.5  # it trains (the VJP is checked above)


# ---------------------------------------------------------------- cost of the sequential rules

def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), FeedbackPoint(), nn.Linear(5, 4), nn.ReLU(),
                         FeedbackPoint(), nn.Linear(4, 3))


@pytest.mark.parametrize("name", ["fa", "usf", "brsf", "frsf", "kp", "wm"])
def test_cost_of_the_sequential_rules_by_hand(name):
    # substituted layers: the 4x5 one (block '6') and the 3x4 head; the first layer reads the data
    net, x = small_net(), torch.zeros(1, 1, 2, 3)
    cost = step_cost(net, name, x, 7)
    blocks = {b.name: b for b in cost.blocks}
    assert (blocks["3"].feedback_values, blocks["6"].feedback_values, blocks["head"].feedback_values) == (0, 20, 12)
    assert cost.total.feedback_bytes == 4 * 32
    bp = step_cost(net, "bp", x, 7)
    assert cost.total.signal == bp.total.signal  # B in place of W^T: the same MACs per layer
    update = {"kp": 32, "wm": 32}.get(name, 0)  # B <- B - lr (dW + wd B): one MAC per entry
    assert cost.total.feedback_update == update
    mirror = 2 * 64 * 32 if name == "wm" else 0  # 64 noise samples: y = W x and y x^T per layer
    assert cost.total.extra_pass == mirror
    assert cost.total.learning == bp.total.learning + update + mirror


def test_cost_of_pepita_and_localheads_by_hand():
    net, x = small_net(), torch.zeros(1, 1, 2, 3)
    pep = step_cost(net, "pepita", x, 7)
    # two forward passes; F (6 x 3): 7 x 18 MACs of modulation into the first block; no signal travels
    fwd = 7 * (6 * 5 + 5 * 4 + 4 * 3)
    assert pep.total.forward == 2 * fwd
    assert [b.signal for b in pep.blocks] == [7 * 18, 0, 0]
    assert [b.weight_grad for b in pep.blocks] == [7 * 30, 7 * 20, 7 * 12]
    assert pep.total.feedback_values == 18
    heads = step_cost(net, "localheads", x, 7)
    # head i: Linear(n_i, 3) with bias; signal into the block = its MACs, its update 2x
    assert [b.signal for b in heads.blocks] == [7 * 15, 7 * 12, 0]
    assert [b.feedback_update for b in heads.blocks] == [2 * 7 * 15, 2 * 7 * 12, 0]
    assert [b.feedback_values for b in heads.blocks] == [18, 15, 0]
    assert [b.received_weights for b in heads.blocks] == [0, 0, 0]  # nothing transported from above


# ---------------------------------------------------------------- PEPITA and local heads, by hand

def test_pepita_one_step_by_hand():
    torch.manual_seed(0)
    net = small_net().double()
    x, y = torch.randn(9, 1, 2, 3, dtype=torch.float64), torch.randint(0, 3, (9,))
    rule = make_rule("pepita", net, x[:1]).double()
    W = [m.weight.detach().clone() for m in linears(net)]
    b = [m.bias.detach().clone() for m in linears(net)]
    Fm = rule.state_dict()["F"]
    assert Fm.shape == (6, 3) and Fm.abs().max() <= 0.05 * math.sqrt(6 / 6)

    def forward(inp):
        h1 = (inp @ W[0].T + b[0]).relu()
        h2 = (h1 @ W[1].T + b[1]).relu()
        return h1, h2, h2 @ W[2].T + b[2]

    x0 = x.flatten(1)
    h1, h2, out = forward(x0)
    e = F.softmax(out, 1) - F.one_hot(y, 3)
    xm = x0 + e @ Fm.T
    m1, m2, out_m = forward(xm)
    em = F.softmax(out_m, 1) - F.one_hot(y, 3)
    lr = 0.1
    expected_W = [W[0] - lr * (h1 - m1).T @ xm / 9, W[1] - lr * (h2 - m2).T @ m1 / 9, W[2] - lr * em.T @ m2 / 9]
    expected_b = [b[0] - lr * (h1 - m1).mean(0), b[1] - lr * (h2 - m2).mean(0), b[2] - lr * em.mean(0)]
    train_step(net, rule, x, y, torch.optim.SGD(net.parameters(), lr=lr))
    for m, w, bb in zip(linears(net), expected_W, expected_b):
        torch.testing.assert_close(m.weight.detach(), w)
        torch.testing.assert_close(m.bias.detach(), bb)


def test_localheads_one_step_by_hand():
    torch.manual_seed(0)
    net = small_net().double()
    x, y = torch.randn(9, 1, 2, 3, dtype=torch.float64), torch.randint(0, 3, (9,))
    rule = make_rule("localheads", net, x[:1]).double()
    W = [m.weight.detach().clone() for m in linears(net)]
    b = [m.bias.detach().clone() for m in linears(net)]
    state = {k: v.clone() for k, v in rule.state_dict().items()}
    M = [state[f"heads.{i}.linear.weight"] for i in range(2)]
    c = [state[f"heads.{i}.linear.bias"] for i in range(2)]
    x0 = x.flatten(1)
    a1 = x0 @ W[0].T + b[0]
    h1 = a1.relu()
    a2 = h1 @ W[1].T + b[1]
    h2 = a2.relu()
    out = h2 @ W[2].T + b[2]
    onehot = F.one_hot(y, 3)
    p1, p2 = F.softmax(h1 @ M[0].T + c[0], 1), F.softmax(h2 @ M[1].T + c[1], 1)
    d1 = ((p1 - onehot) / 9 @ M[0]) * (a1 > 0)  # the head's own error, not e, into block 1
    d2 = ((p2 - onehot) / 9 @ M[1]) * (a2 > 0)
    e = (F.softmax(out, 1) - onehot) / 9
    lr, flr = 0.1, 0.05
    fb = torch.optim.SGD(rule.parameters(), lr=flr)
    train_step(net, rule, x, y, torch.optim.SGD(net.parameters(), lr=lr), fb)
    L = linears(net)
    for m, w, bb, d, inp in zip(L, W, b, [d1, d2, e], [x0, h1, h2]):
        torch.testing.assert_close(m.weight.detach(), w - lr * d.T @ inp)
        torch.testing.assert_close(m.bias.detach(), bb - lr * d.sum(0))
    torch.testing.assert_close(rule.heads[0].linear.weight.detach(), M[0] - flr * ((p1 - onehot) / 9).T @ h1)
    torch.testing.assert_close(rule.heads[1].linear.bias.detach(), c[1] - flr * ((p2 - onehot) / 9).sum(0))


@pytest.mark.slow
@pytest.mark.parametrize("name,options,bar", [
    ("pepita", {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}, 0.90),
    ("localheads", {"lr": 1e-3}, 0.95)])
def test_new_rules_learn_digits(name, options, bar, tmp_path):
    s = dflearn.fit(rule=name, dataset="digits", epochs=10, out=tmp_path / name, progress=False,
                    log=lambda *a: None, **options)
    assert s["final_test_accuracy"] >= bar, s


# ---------------------------------------------------------------- a user's rule, outside the package

class TwoPassDFA(dflearn.Rule):
    """A rule of another step shape: the error from a first, graph-free forward pass, then a
    second forward pass under the cuts that receives g_i = e B_i^T (B_i in a buffer named
    neither 'feedback' nor 'local'), described to the tools by its own methods."""

    name = "test-two-pass-dfa"
    summary = "two forward passes; g_i = e R_i^T"

    def __init__(self, model, example_input, *, scale: float = 1.0):
        super().__init__(model, example_input)
        self.cut_points()
        sizes = [p.features for p in self.layout.points]
        self.register_buffer("random_maps", torch.randn(sum(sizes), self.layout.num_outputs) * scale / 3)
        self.sizes = sizes

    def maps(self):
        return list(self.random_maps.split(self.sizes))

    def step(self, model, x, y, optimizer, feedback_optimizer=None, loss_fn=None, sync=None):
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            _, e = dflearn.feedback.output_error(model(x), y, loss_fn)
        fwd = self.forward_pass(model, x, y, loss_fn)
        g = [(e @ R.t()).view_as(h) for R, h in zip(self.maps(), fwd.points)]
        torch.autograd.backward([fwd.output, *fwd.points], [fwd.error, *g])
        optimizer.step()
        return fwd.loss, fwd.logits

    def feedback_pairs(self, model):
        return [(p.name, R, R) for p, R in zip(self.layout.points, self.maps())]  # aligned with itself

    def feedback_cost(self, batch_size):
        return {p.name: {"signal": batch_size * R.numel(), "feedback_values": R.numel()}
                for p, R in zip(self.layout.points, self.maps())}


@pytest.fixture
def two_pass_registered():
    """Registered as a user registers a rule, for this test only (other files iterate the registry)."""
    dflearn.register_rule(TwoPassDFA)
    yield TwoPassDFA.name
    del dflearn.RULES[TwoPassDFA.name]


def test_a_users_rule_with_its_own_step_works_everywhere(tmp_path, two_pass_registered):
    name = two_pass_registered
    torch.manual_seed(0)
    net = dflearn.models.mlp((1, 8, 8), 10, widths=[16, 16])
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    rule = make_rule(name, net, x[:1])
    loss, logits = train_step(net, rule, x, y, torch.optim.SGD(net.parameters(), lr=0.1))
    assert torch.isfinite(loss) and logits.shape == (5, 10)
    # the tools read its own descriptions
    angles = dflearn.feedback_angles(net, rule)
    assert list(angles) == [p.name for p in rule.layout.points] and max(angles.values()) < 1e-3
    cost = step_cost(net, rule, x[:1], 5)
    assert cost.total.feedback_values == 16 * 10 + 16 * 10 and cost.blocks[0].signal >= 5 * 160
    align = dflearn.signal_alignment(net, rule, x, y)
    assert len(align) == 2 and all(-1 <= a <= 1 for a in align)
    # the trainer, checkpoints and resume: interrupted after 1 of 2 epochs, resumed, equal
    common = dict(rule=name, dataset="digits", model_options={"widths": [32, 32]}, progress=False,
                  log=lambda *a: None, align_every=10)
    full = dflearn.fit(epochs=2, out=tmp_path / "full", **common)
    dflearn.fit(epochs=1, out=tmp_path / "part", **common)
    resumed = dflearn.fit(resume=tmp_path / "part", epochs=2, progress=False, log=lambda *a: None)
    assert resumed["final_test_accuracy"] == full["final_test_accuracy"]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["rule"]["random_maps"], b["rule"]["random_maps"])
    # compare runs it beside a built-in rule
    assert main(["compare", "--rules", f"{name},dfa", "--seeds", "0", "--epochs", "1", "--max-steps-per-epoch",
                 "5", "-m", "widths=[16,16]", "--out", str(tmp_path / "grid"), "-q"]) == 0
    assert len(list((tmp_path / "grid").glob("*/summary.json"))) == 2


# ---------------------------------------------------------------- the option validator

@pytest.mark.parametrize("option,problem", [
    ("last_bp=maybe", "option last_bp='maybe' is not true or false"),
    ("init=prodct", "option init='prodct' is not one of kaiming, kaiming_n, product, zeros"),
    ("lastbp=true", "has no option 'lastbp'; did you mean 'last_bp'?"),
])
def test_option_mistakes_give_one_line_and_exit_1(option, problem, capsys, tmp_path):
    assert main(["train", "--rule", "dfa", "-o", option, "--epochs", "1", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert problem in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value,problem", [("1.5", "k=1.5 is not an integer"), ("abc", "k='abc' is not an integer")])
def test_sparse_k_must_be_an_integer(value, problem, capsys, tmp_path):
    assert main(["train", "--rule", "sdfa", "-o", f"k={value}", "--out", str(tmp_path / "r")]) == 1
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize("text,value", [("false", False), ("FALSE", False), ("0", False), ("no", False),
                                        ("true", True), ("Yes", True), ("1", True)])
def test_booleans_are_read_as_booleans(text, value, capsys):
    assert main(["train", "--rule", "dfa", "-o", f"last_bp={text}", "--print-config"]) == 0
    assert f"last_bp: {str(value).lower()}" in capsys.readouterr().out


def test_the_api_checks_options_too():
    net = dflearn.models.mlp((1, 8, 8), 10, widths=[16])
    with pytest.raises(DflearnError, match="option k=1.5 is not an integer"):
        make_rule("sdfa", net, torch.zeros(1, 1, 8, 8), k=1.5)
    assert make_rule("dfa", net, torch.zeros(1, 1, 8, 8), last_bp="false").cuts == [True]
    with pytest.raises(DflearnError, match="model .mlp.: option activation=3 is not one of relu, tanh"):
        dflearn.build_model("mlp", (1, 8, 8), 10, activation=3)


# ---------------------------------------------------------------- closed forms equal what they replace

@pytest.mark.parametrize("name", ["las", "ltas", "dkp"])
@pytest.mark.parametrize("sequence", [False, True])
def test_closed_form_feedback_gradients_equal_autograd_of_the_feedback_loss(name, sequence):
    if sequence:
        net, x, y = sequence_problem()
    else:
        torch.manual_seed(0)
        net = dflearn.models.mlp((1, 1, 8), 3, widths=[6, 5]).double()
        x, y = torch.randn(10, 1, 1, 8, dtype=torch.float64), torch.randint(0, 3, (10,))
    rule = make_rule(name, net, x[:1], **({} if name == "dkp" else {"init": "default"})).double()
    fwd = rule.forward_pass(net, x, y)
    rule.zero_grad()
    rule.feedback_loss(net, fwd).backward()  # the straightforward gradient, by autograd
    expected = [p.grad.clone() for p in rule.parameters()]
    capture = dflearn.feedback.dry_run.GradientCapture(rule.parameters())
    rule.learn_feedback(net, fwd, capture)  # the closed form, handed to the optimizer
    for got, want in zip(capture.grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(10, 3), (4, 5, 7)])  # a classifier; a per-token output (N, T, d_L)
def test_closed_form_output_error_equals_autograd_of_cross_entropy(shape):
    """The default loss's e, formed by hand, against autograd through F.cross_entropy (float64) and
    the textbook (softmax(a) - onehot(y)) / rows."""
    torch.manual_seed(0)
    a = torch.randn(*shape, dtype=torch.float64) * 3
    y = torch.randint(0, shape[-1], shape[:-1])
    loss, e = dflearn.feedback.output_error(a, y)
    z = a.clone().requires_grad_()
    want = F.cross_entropy(z.reshape(-1, shape[-1]), y.reshape(-1))
    (want_e,) = torch.autograd.grad(want, z)
    torch.testing.assert_close(loss, want.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(e, want_e, rtol=1e-10, atol=1e-14)
    rows = math.prod(shape[:-1])
    by_hand = (torch.softmax(a, -1) - F.one_hot(y, shape[-1]).double()) / rows
    torch.testing.assert_close(e, by_hand, rtol=1e-10, atol=1e-14)


def test_closed_form_output_error_under_bf16_autocast_matches_autograd():
    torch.manual_seed(0)
    a, y = torch.randn(16, 10).bfloat16(), torch.randint(0, 10, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, e = dflearn.feedback.output_error(a, y)
        z = a.clone().requires_grad_()
        want = F.cross_entropy(z, y)
        (want_e,) = torch.autograd.grad(want, z)
    assert e.dtype == want_e.dtype == torch.bfloat16 and loss.dtype == want.dtype == torch.float32
    torch.testing.assert_close(loss, want.detach())
    torch.testing.assert_close(e, want_e)
