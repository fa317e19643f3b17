"""Conv feedback: the conv local module's VJP, and every rule's gradients on every conv model."""
import pytest

from dflearn import DflearnError
import torch
import torch.nn.functional as F
from torch import nn

from dflearn.feedback.layout import Point
from dflearn.feedback.operators import ConvLocal
from dflearn.feedback.point import FeedbackPoint
from dflearn.feedback.step import train_step
from dflearn.models import build_model
from dflearn.rules import RULES, Rule, make_rule

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convs gain nothing from threads, and on a loaded CPU the threads' spinning costs 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = {"conv3": {"channels": (6, 8, 8), "hidden": (16, 12)},
         "conv3bn": {"channels": (6, 8, 8), "hidden": (16, 12)},
         "dkpnet": {"channels": 6, "hidden": 16},
         "resnet18": {"width": 4}}
SHAPE, CLASSES = (3, 16, 16), 10


def flipped_kernel(e, weight, stride, padding, in_hw):
    """The spread error's transposed convolution, written out: spread e/(Ho Wo) over
    the output grid, insert stride-1 zeros between positions, pad by k-1-p, and
    convolve with the kernel flipped in space and transposed in channels."""
    H, W = in_hw
    k = weight.shape[-1]
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    spread = (e / (Ho * Wo))[:, :, None, None].expand(-1, -1, Ho, Wo)
    dilated = e.new_zeros(len(e), e.shape[1], (Ho - 1) * stride + 1, (Wo - 1) * stride + 1)
    dilated[:, :, ::stride, ::stride] = spread
    q = k - 1 - padding
    # rows/columns of the input that no window reaches get zero (bottom/right rest of the division)
    extra_h, extra_w = H - ((Ho - 1) * stride + k - 2 * padding), W - ((Wo - 1) * stride + k - 2 * padding)
    full = F.pad(dilated, (q, q + extra_w, q, q + extra_h))
    return F.conv2d(full, weight.flip(2, 3).transpose(0, 1))


@pytest.mark.parametrize("k,stride,padding,hw", [(3, 1, 1, (8, 8)), (5, 1, 2, (9, 7)), (3, 2, 1, (9, 9)),
                                                   (5, 2, 0, (11, 10)), (1, 1, 0, (6, 6)), (4, 2, 1, (8, 9)),
                                                   (3, 3, 2, (10, 8)), (5, 1, 4, (7, 7))])
def test_conv_local_vjp_is_flipped_kernel_and_autograd(k, stride, padding, hw):
    torch.manual_seed(0)
    local = ConvLocal(Point("p", (4, *hw), ()), 6, kernel_size=k, stride=stride, padding=padding).double()
    h = torch.randn(3, 4, *hw, dtype=torch.float64)
    e = torch.randn(3, 6, dtype=torch.float64)
    g = local.vjp(e)
    assert g.shape == h.shape
    torch.testing.assert_close(g, flipped_kernel(e, local.conv.weight.detach(), stride, padding, hw))
    _, pullback = torch.func.vjp(local, h)
    torch.testing.assert_close(g, pullback(e)[0])
    assert g.abs().sum() > 0


def segments(model: nn.Sequential) -> list[nn.Sequential]:
    """The model cut at its feedback points: block 0, block 1, ..., head."""
    out, cur = [], []
    for m in model:
        cur.append(m)
        if isinstance(m, FeedbackPoint):
            out.append(nn.Sequential(*cur))
            cur = []
    return out + [nn.Sequential(*cur)]


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


# rules that keep exact BP inside a block (all but the sequential family, which swaps
# each layer's backward for its B and is tested in test_sequential.py)
# pepita and localheads form each block's update without signals() (their own steps; checked by
# hand in test_engine.py)
BLOCKWISE = sorted(n for n, r in RULES.items() if r.forward_context is Rule.forward_context
                   and n not in ("pepita", "localheads"))
SEQUENTIAL = sorted(n for n, r in RULES.items() if r.forward_context is not Rule.forward_context)


@pytest.mark.parametrize("model_name", list(SMALL))
@pytest.mark.parametrize("rule_name", BLOCKWISE)
def test_block_gradient_is_bp_of_block_given_signal(rule_name, model_name):
    """Each cut block's gradient is autograd of that block alone with grad_outputs = g_i;
    the layers above the highest cut get BP's gradient of the loss from there (all of
    them under bp); then a real step (with learned feedback) changes the weights."""
    torch.manual_seed(0)
    model = build_model(model_name, SHAPE, CLASSES, **SMALL[model_name])
    x, y = batch()
    rule = make_rule(rule_name, model, x[:1])
    train_step(model, rule, x, y, torch.optim.SGD(model.parameters(), lr=0.0))
    fwd = rule.forward_pass(model, x, y)
    signals = rule.signals(fwd)
    blocks = segments(model)
    top = max([i for i, cut in enumerate(rule.cuts) if cut], default=-1)
    h, outputs = x, []
    for i, block in enumerate(blocks[:-1]):
        out = block(h.detach())
        outputs.append(out)
        if i <= top:
            assert rule.cuts[i]
            params = list(block.parameters())
            if signals[i] is None:  # no signal: the block does not learn
                assert all(p.grad is None for p in params)
            else:
                assert signals[i].shape == out.shape
                want = torch.autograd.grad(out, params, signals[i])
                for p, w in zip(params, want):
                    torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)
        h = out
    above = nn.Sequential(*blocks[top + 1:])
    h_top = x if top < 0 else outputs[top]
    params = list(above.parameters())
    want = torch.autograd.grad(F.cross_entropy(above(h_top.detach()), y), params)
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)

    assert_real_step_learns(model, rule, x, y)


@pytest.mark.parametrize("model_name", list(SMALL))
@pytest.mark.parametrize("rule_name", SEQUENTIAL)
def test_sequential_rules_step_on_every_conv_model(rule_name, model_name):
    torch.manual_seed(0)
    model = build_model(model_name, SHAPE, CLASSES, **SMALL[model_name])
    x, y = batch()
    assert_real_step_learns(model, make_rule(rule_name, model, x[:1]), x, y)


@pytest.mark.parametrize("model_name", list(SMALL))
def test_own_step_rules_on_every_conv_model(model_name):
    """Local heads step on every conv model; PEPITA (one layer and an elementwise activation per
    block) refuses the conv blocks with pooling or several layers in one line."""
    torch.manual_seed(0)
    model = build_model(model_name, SHAPE, CLASSES, **SMALL[model_name])
    x, y = batch()
    assert_real_step_learns(model, make_rule("localheads", model, x[:1]), x, y)
    with pytest.raises(DflearnError, match="pepita: ") as info:
        make_rule("pepita", model, x[:1])
    assert "\n" not in str(info.value)


def assert_real_step_learns(model, rule, x, y):
    """A real step, learned feedback included, moves the weights and stays finite."""
    before = [p.detach().clone() for p in model.parameters()]
    fb_before = [p.detach().clone() for p in rule.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fb_opt = torch.optim.Adam(rule.parameters(), lr=1e-3) if fb_before else None
    loss, logits = train_step(model, rule, x, y, opt, fb_opt)
    assert torch.isfinite(loss) and logits.shape == (len(x), CLASSES)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    if rule.learns_feedback:
        assert any(not torch.equal(b, p) for b, p in zip(fb_before, rule.parameters()))


@pytest.mark.parametrize("rule_name", ["dfa", "sdfa", "drtp", "dkp"])
def test_direct_signal_maps_error_to_the_map(rule_name):
    """On conv points the matrix maps d_L to C*H*W and the signal is that product reshaped."""
    torch.manual_seed(0)
    model = build_model("conv3", SHAPE, CLASSES, **SMALL["conv3"])
    x, y = batch()
    rule = make_rule(rule_name, model, x[:1])
    fwd = rule.forward_pass(model, x, y)
    state = rule.state_dict()  # B straight from the stored state (sparse: rebuilt from indices and values)
    if rule_name == "sdfa":
        B = torch.zeros(len(state["feedback.index"]), CLASSES).scatter_add_(1, state["feedback.index"],
                                                                             state["feedback.value"])
    else:
        B = state["feedback.B"]
    driver = -F.one_hot(y, CLASSES).float() / len(y) if rule_name == "drtp" else fwd.error
    flat = driver @ B.t()
    start = 0
    for k, (i, g) in enumerate((i, g) for i, g in enumerate(rule.signals(fwd)) if g is not None):
        point = rule.layout.points[i]
        assert g.shape[1:] == point.shape
        torch.testing.assert_close(g.flatten(1), flat[:, start:start + point.size])
        start += point.size
    assert start == B.shape[0] and len(rule.layout.points[0].shape) == 3


def test_las_conv_signal_is_vjp_of_its_conv_local_module():
    torch.manual_seed(0)
    model = build_model("conv3", SHAPE, CLASSES, **SMALL["conv3"])
    x, y = batch()
    rule = make_rule("las", model, x[:1])
    fwd = rule.forward_pass(model, x, y)
    signals = rule.signals(fwd)
    for m, h, g in zip(rule.local, fwd.points, signals):
        if h.dim() == 4:  # conv points: a conv with the block's 5x5 kernel; FC points: linear
            assert isinstance(m, ConvLocal) and m.conv.kernel_size == (5, 5)
        _, pullback = torch.func.vjp(m, h.detach())
        torch.testing.assert_close(g, pullback(fwd.error)[0])
    assert signals[-1] is None  # the last hidden block gets BP


def test_resnet18_blockwise_cut():
    """Under a direct rule nothing crosses a residual block's boundary; under bp the
    step's gradient is plain autograd of the loss."""
    torch.manual_seed(0)
    model = build_model("resnet18", SHAPE, CLASSES, **SMALL["resnet18"])
    x, y = batch()
    rule = make_rule("dfa", model, x[:1])
    assert len(rule.layout.points) == 8 and all(rule.cuts)
    fwd = rule.forward_pass(model, x, y)
    logits = fwd.output
    blocks = segments(model)
    k = 4  # inject at one block only: only that block's parameters receive gradient
    torch.autograd.backward([logits, fwd.points[k]], [fwd.error, torch.randn_like(fwd.points[k])])
    for i, block in enumerate(blocks):
        got = [p.grad is not None for p in block.parameters()]
        assert all(got) if i in (k, len(blocks) - 1) else not any(got), i

    model.zero_grad(set_to_none=True)
    bp = make_rule("bp", model, x[:1])
    train_step(model, bp, x, y, torch.optim.SGD(model.parameters(), lr=0.0))
    want = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    for p, w in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("init", ["auto", "product"])
def test_las_fc_local_modules_of_a_conv_net_start_at_the_forward_product(init):
    """The reference initialises the fully connected local modules of a conv net with the
    product of the initial weights above (the conv ones keep their default)."""
    torch.manual_seed(0)
    model = build_model("conv3", SHAPE, CLASSES, **SMALL["conv3"])
    rule = make_rule("las", model, batch()[0][:1], init=init)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]  # FC 16, FC 12, head 10
    fc = [m for m in rule.local if not isinstance(m, ConvLocal)]
    assert len(fc) == 1 and len(rule.local) == 4  # three conv blocks, the first FC block; the last gets BP
    torch.testing.assert_close(fc[0].weight, linears[2].weight @ linears[1].weight)
    default = make_rule("las", model, batch()[0][:1], init="default")
    assert not torch.allclose([m for m in default.local if not isinstance(m, ConvLocal)][0].weight, fc[0].weight)
