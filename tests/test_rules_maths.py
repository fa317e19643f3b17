"""Each rule's learning signal against the maths of spec/RULES.md."""
import math

import pytest
import torch
import torch.nn.functional as F

import dflearn
from helpers import autograd_grads, batch, grads_of, linears, rule_grads, small_mlp


def stored_B(rule, net):
    """The B_i (n_i, d_L) read straight from the rule's state: the stacked tensor cut at the
    hidden widths of the net (not the operator's own slicing)."""
    B = rule.state_dict()["feedback.B"]
    widths = [m.out_features for m in linears(net)[:-1]]
    return list(B.split(widths))


def stored_sparse_B(rule, outputs):
    """The dense B of sparse DFA rebuilt by hand from its stored indices and values."""
    index, value = rule.state_dict()["feedback.index"], rule.state_dict()["feedback.value"]
    B = torch.zeros(len(index), outputs)
    for u in range(len(index)):
        for j in range(index.shape[1]):
            B[u, index[u, j]] += value[u, j]
    return B


def test_bp_equals_autograd():
    net, (x, y) = small_mlp(), batch()
    expected = autograd_grads(net, x, y)
    got = rule_grads(net, dflearn.make_rule("bp", net, x[:1]), x, y)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_dfa_with_product_feedback_equals_bp_on_a_linear_net():
    # linear activations and B_i = (W_L ... W_{i+1})^T: e B_i^T is exactly dLoss/dh_i
    net, (x, y) = small_mlp(activation="linear"), batch()
    expected = autograd_grads(net, x, y)
    rule = dflearn.make_rule("dfa", net, x[:1], init="product")
    got = rule_grads(net, rule, x, y)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-7)


def test_dfa_signal_is_e_times_B_transposed_at_every_point():
    net, (x, y) = small_mlp(), batch()
    rule = dflearn.make_rule("dfa", net, x[:1])
    fwd = rule.forward_pass(net, x, y)
    e = (F.softmax(fwd.logits, 1) - F.one_hot(y, 5)) / len(y)
    torch.testing.assert_close(fwd.error, e)
    for g, B in zip(rule.signals(fwd), stored_B(rule, net)):
        torch.testing.assert_close(g, e @ B.t())


def test_dfa_weight_gradient_is_delta_times_input():
    # first layer: dW_1 = ((e B_1^T) * relu'(a_1))^T x : the paper's eq. 17 written out
    net, (x, y) = small_mlp(), batch()
    rule = dflearn.make_rule("dfa", net, x[:1])
    got = rule_grads(net, rule, x, y)
    W1 = linears(net)[0]
    a1 = x.flatten(1) @ W1.weight.t() + W1.bias
    e = (F.softmax(net(x), 1) - F.one_hot(y, 5)) / len(y)
    delta = (e @ stored_B(rule, net)[0].t()) * (a1 > 0)
    torch.testing.assert_close(got["1.weight"], delta.t() @ x.flatten(1))
    torch.testing.assert_close(got["1.bias"], delta.sum(0))


def test_dfa_last_bp_option_gives_last_block_the_true_signal():
    net, (x, y) = small_mlp(), batch()
    expected = autograd_grads(net, x, y)
    plain = rule_grads(net, dflearn.make_rule("dfa", net, x[:1]), x, y)
    exact = rule_grads(net, dflearn.make_rule("dfa", net, x[:1], last_bp=True), x, y)
    last = "7.weight"  # the last hidden Linear
    torch.testing.assert_close(exact[last], expected[last])
    assert not torch.allclose(plain[last], expected[last])


def test_head_always_gets_the_exact_gradient():
    net, (x, y) = small_mlp(), batch()
    expected = autograd_grads(net, x, y)
    for name in dflearn.RULES:
        if name == "pepita":  # by design: its output layer learns e^mod (h_{L-1}^mod)^T, from the second pass
            continue
        got = rule_grads(net, dflearn.make_rule(name, net, x[:1]), x, y)
        torch.testing.assert_close(got["10.weight"], expected["10.weight"], msg=name)
        torch.testing.assert_close(got["10.bias"], expected["10.bias"], msg=name)


@pytest.mark.parametrize("name", ["las", "ltas"])
def test_local_rules_give_last_hidden_layer_bp_gradient(name):
    net, (x, y) = small_mlp(), batch()
    expected = autograd_grads(net, x, y)
    got = rule_grads(net, dflearn.make_rule(name, net, x[:1]), x, y)
    for k in ("7.weight", "7.bias"):
        torch.testing.assert_close(got[k], expected[k])
    assert not torch.allclose(got["1.weight"], expected["1.weight"])


def _local_module_grads(name, net, x, y):
    rule = dflearn.make_rule(name, net, x[:1])
    fwd = rule.forward_pass(net, x, y)
    rule.zero_grad()
    rule.feedback_loss(net, fwd).backward()
    hs = [h.detach().flatten(1) for h in fwd.points]
    return rule, fwd, hs


def test_las_local_module_gradient_is_h_times_output_mismatch():
    net, (x, y) = small_mlp(), batch()
    rule, fwd, hs = _local_module_grads("las", net, x, y)
    for m, h in zip(rule.local, hs):
        y_i = h @ m.weight.t()
        expected = (y_i - fwd.logits).t() @ h / len(y)  # dL/dM = (y_i - a_L)^T h / N, i.e. h^T (y_i - a_L) transposed
        torch.testing.assert_close(m.weight.grad, expected)


def test_ltas_local_module_gradient_is_h_times_target_mismatch():
    net, (x, y) = small_mlp(), batch()
    rule, fwd, hs = _local_module_grads("ltas", net, x, y)
    for m, h in zip(rule.local, hs):
        p = F.softmax(h @ m.weight.t(), 1)
        expected = (p - F.one_hot(y, 5)).t() @ h / len(y)
        torch.testing.assert_close(m.weight.grad, expected)


@pytest.mark.parametrize("name", ["las", "ltas"])
def test_local_rules_signal_uses_the_updated_module(name):
    # Algorithm 1, lines 13-14: update M_i, then delta_i = (e M_i) * f'(a_i) with the *new* M_i.
    # The network's lr is 0 so its gradient stays readable; the feedback lr is large, so the
    # gradient with the old M_1 is far from the one with the new M_1 (checked below).
    net, (x, y) = small_mlp(), batch()
    rule = dflearn.make_rule(name, net, x[:1])
    old = rule.local[0].weight.detach().clone()
    with torch.no_grad():  # dLoss_1/dM_1 by hand (eq. 21; LTAS: its cross-entropy's)
        W1 = linears(net)[0]
        a1 = x.flatten(1) @ W1.weight.t() + W1.bias
        h1, logits = a1.relu(), net(x)
        y1 = h1 @ old.t()
        mismatch = (y1 - logits) if name == "las" else (F.softmax(y1, 1) - F.one_hot(y, 5))
        updated = old - 0.5 * mismatch.t() @ h1 / len(y)
    fb_opt = torch.optim.SGD(rule.parameters(), lr=0.5)
    got = rule_grads_and_step(net, rule, x, y, fb_opt)
    torch.testing.assert_close(rule.local[0].weight.detach(), updated)
    e = (F.softmax(logits, 1) - F.one_hot(y, 5)) / len(y)

    def dW1(M):
        return ((e @ M) * (a1 > 0)).t() @ x.flatten(1)
    torch.testing.assert_close(got["1.weight"], dW1(updated))
    assert not torch.allclose(dW1(old), dW1(updated), rtol=1e-2, atol=1e-6)


def test_las_local_module_converges_to_the_forward_product():
    # a fixed random linear network (no biases): M_i learns W_L ... W_{i+1}. More inputs
    # than units, so each h_i spans its space and M_i is determined everywhere.
    torch.manual_seed(3)
    net = small_mlp(widths=(12, 10, 8), activation="linear", inputs=16, outputs=4, bias=False)
    for m in linears(net):  # random orthogonal weights: well conditioned, so a few hundred steps suffice
        torch.nn.init.orthogonal_(m.weight)
    x0 = torch.randn(1, 1, 1, 16)
    rule = dflearn.make_rule("las", net, x0, init="default")
    W = [m.weight.detach() for m in linears(net)]
    targets = [W[3] @ W[2] @ W[1], W[3] @ W[2]]  # W_L ... W_{i+1} for the two local modules
    opt = torch.optim.Adam(rule.parameters(), lr=1e-2)
    decay = torch.optim.lr_scheduler.StepLR(opt, 500, gamma=0.3)
    for _ in range(2000):
        x = torch.randn(64, 1, 1, 16)
        fwd = rule.forward_pass(net, x, torch.zeros(64, dtype=torch.long))
        opt.zero_grad()
        rule.feedback_loss(net, fwd).backward()
        opt.step()
        decay.step()
    for m, P in zip(rule.local, targets):
        cos = F.cosine_similarity(m.weight.detach().flatten(), P.flatten(), dim=0)
        assert cos > 0.99


def test_las_product_init_is_the_initial_forward_product():
    net, (x, _) = small_mlp(), batch()
    rule = dflearn.make_rule("las", net, x[:1])
    W = [m.weight.detach() for m in linears(net)]
    torch.testing.assert_close(rule.local[0].weight, W[3] @ W[2] @ W[1])
    torch.testing.assert_close(rule.local[1].weight, W[3] @ W[2])


@pytest.mark.parametrize("k", [1, 2, 5])
def test_sparse_dfa_has_exactly_k_nonzeros_per_unit_and_gather_equals_dense(k):
    net, (x, y) = small_mlp(widths=(40, 30, 20), outputs=5), batch(n=9)
    rule = dflearn.make_rule("sdfa", net, x[:1], k=k)
    B = stored_sparse_B(rule, 5)
    assert B.shape == (90, 5)
    assert ((B != 0).sum(1) == k).all()
    fwd = rule.forward_pass(net, x, y)
    flat = torch.cat([g.flatten(1) for g in rule.signals(fwd)], 1)
    torch.testing.assert_close(flat, fwd.error @ B.t())


def test_sparse_dfa_scale_and_rank():
    net, (x, _) = small_mlp(widths=(400, 400, 400), outputs=10), batch(outputs=10)
    rule = dflearn.make_rule("sdfa", net, x[:1], k=2)
    s = (10 * 2) ** 0.25 / math.sqrt(400)
    v = rule.feedback.value[:400]
    assert v.abs().max() <= s and v.abs().max() > 0.9 * s  # uniform in (-s, s)
    low = dflearn.make_rule("sdfa", net, x[:1], k=10, rank=1)  # k = d_L: dense, rank 1
    B0 = stored_sparse_B(low, 10)[:400]
    assert torch.linalg.matrix_rank(B0) == 1


def test_drtp_signal_projects_the_target():
    net, (x, y) = small_mlp(), batch()
    rule = dflearn.make_rule("drtp", net, x[:1])
    fwd = rule.forward_pass(net, x, y)
    onehot = F.one_hot(y, 5).float()
    for g, B in zip(rule.signals(fwd), stored_B(rule, net)):
        torch.testing.assert_close(g, -(onehot / len(y)) @ B.t())


def test_dkp_one_step_updates_B_by_the_formula():
    net, (x, y) = small_mlp(), batch()
    rule = dflearn.make_rule("dkp", net, x[:1])
    lr, wd = 0.1, 0.01
    B0 = rule.state_dict()["feedback.B"].clone()
    fwd = rule.forward_pass(net, x, y)
    H = torch.cat([h.detach().flatten(1) for h in fwd.points], 1)
    expected = B0 - lr * (H.t() @ fwd.error + wd * B0)
    signal_before = fwd.error @ B0.t()
    fb_opt = torch.optim.SGD(rule.parameters(), lr=lr, weight_decay=wd)
    got = rule_grads_and_step(net, rule, x, y, fb_opt)
    torch.testing.assert_close(rule.state_dict()["feedback.B"], expected)
    # the signal of that step used B before its update (W and B move together)
    W1 = linears(net)[0]
    a1 = x.flatten(1) @ W1.weight.t() + W1.bias
    delta = signal_before[:, :16] * (a1 > 0)
    torch.testing.assert_close(got["1.weight"], delta.t() @ x.flatten(1))


def rule_grads_and_step(net, rule, x, y, fb_opt):
    dflearn.train_step(net, rule, x, y, torch.optim.SGD(net.parameters(), lr=0.0), fb_opt)
    return grads_of(net)


def test_shallow_leaves_early_blocks_untouched():
    net, (x, y) = small_mlp(), batch()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rule = dflearn.make_rule("shallow", net, x[:1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(5):
        dflearn.train_step(net, rule, x, y, opt)
    after = net.state_dict()
    for k in ("1.weight", "1.bias", "4.weight", "4.bias"):
        assert torch.equal(before[k], after[k]), k
    for k in ("7.weight", "10.weight"):
        assert not torch.equal(before[k], after[k]), k


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_cut_blocks_compute_no_input_gradients():
    # detaching at the cut means autograd never asks for dLoss/dh_{i-1}: a hook on each
    # hidden Linear's input sees no gradient under a direct rule, and one under BP
    net, (x, y) = small_mlp(), batch()
    seen = []
    for m in linears(net)[1:]:
        m.register_full_backward_hook(lambda mod, gin, gout: seen.append(gin[0] is not None))
    rule_grads(net, dflearn.make_rule("dfa", net, x[:1]), x, y)
    assert seen and not any(seen)
    seen.clear()
    rule_grads(net, dflearn.make_rule("bp", net, x[:1]), x, y)
    assert all(seen) and len(seen) == 3


@pytest.mark.parametrize("name", sorted(dflearn.RULES))
def test_feedback_state_survives_a_state_dict_round_trip(name):
    net, (x, y) = small_mlp(), batch()
    rule = dflearn.make_rule(name, net, x[:1])
    torch.manual_seed(123)  # another draw: only load_state_dict can make them equal
    other = dflearn.make_rule(name, net, x[:1])
    state = rule.state_dict()
    if name not in ("bp", "shallow", "usf", "brsf", "pepita", "las", "ltas"):  # random feedback state (LAS: product init)
        assert state and not all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    other.load_state_dict(state)
    assert other.state_dict().keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(other.state_dict()[k], v), k
    fwd = rule.forward_pass(net, x, y)
    for a, b in zip(rule.signals(fwd), other.signals(fwd)):
        assert (a is None and b is None) or torch.equal(a, b)
    for (n1, B1, _), (n2, B2, _) in zip(rule.feedback_pairs(net), other.feedback_pairs(net)):
        assert n1 == n2 and (name == "brsf" or torch.equal(B1, B2))  # brSF redraws its magnitudes


@pytest.mark.parametrize("rule", ["dfa", "dkp", "drtp"])
def test_kaiming_n_init_draws_each_B_i_as_the_dkp_reference_does(rule):
    # torch's kaiming_uniform_ on the reference's (d_L, n_i) tensor: fan-in n_i, gain sqrt(2), so
    # U(-sqrt(6/n_i), sqrt(6/n_i)); uniform on (-b, b) has std b/sqrt(3)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 400), torch.nn.ReLU(), dflearn.FeedbackPoint(),
                              torch.nn.Linear(400, 100), torch.nn.ReLU(), dflearn.FeedbackPoint(),
                              torch.nn.Linear(100, 10))
    r = dflearn.make_rule(rule, net, torch.randn(1, 20), init="kaiming_n")
    for B, n in zip(stored_B(r, net), (400, 100)):
        bound = math.sqrt(6 / n)
        assert B.shape == (n, 10) and B.abs().max() <= bound and B.abs().max() > 0.95 * bound
        assert B.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    default = stored_B(dflearn.make_rule(rule, net, torch.randn(1, 20)), net)[0]
    assert math.sqrt(6 / 400) < default.abs().max() <= 1 / math.sqrt(10)  # 'kaiming': 1/sqrt(d_L), wider here
