"""The DKP reference's AlexNet-BN for CIFAR-100 (issue 14)."""
import pytest
import torch

import dflearn
from dflearn.errors import DflearnError
from dflearn.feedback.layout import probe


def test_alexnet_has_the_reference_shapes_at_224():
    net = dflearn.build_model("alexnet", (3, 32, 32), 100)
    layout = probe(net, torch.zeros(1, 3, 32, 32))
    # the reference's DFA hooks: [64,27,27], [192,13,13], [384,13,13], [256,13,13], then 256*6*6, 4096, 4096
    assert [p.shape for p in layout.points] == [(64, 27, 27), (192, 13, 13), (384, 13, 13), (256, 13, 13),
                                                (9216,), (4096,), (4096,)]
    assert layout.num_outputs == 100
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 5
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size, m.stride, m.padding) for m in convs] == [
        (64, (11, 11), (4, 4), (2, 2)), (192, (5, 5), (1, 1), (2, 2)), (384, (3, 3), (1, 1), (1, 1)),
        (256, (3, 3), (1, 1), (1, 1)), (256, (3, 3), (1, 1), (1, 1))]


@pytest.mark.parametrize("rule", ["bp", "dfa", "dkp"])
def test_alexnet_steps_on_cifar_shaped_input(rule):
    torch.manual_seed(0)
    net = dflearn.build_model("alexnet", (3, 32, 32), 100, resize=64)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,))
    r = dflearn.make_rule(rule, net, x[:1])
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    fb = torch.optim.Adam(r.parameters(), lr=1e-3) if list(r.parameters()) else None
    before = [p.detach().clone() for p in net.parameters()]
    loss, logits = dflearn.train_step(net, r, x, y, opt, fb)
    assert logits.shape == (4, 100) and torch.isfinite(loss)
    moved = [not torch.equal(a, p) for a, p in zip(before, net.parameters())]
    assert all(moved)  # every block gets a learning signal: first conv and head included


def test_alexnet_refuses_too_small_a_resize():
    with pytest.raises(DflearnError, match="resize must be at least 63"):
        dflearn.build_model("alexnet", (3, 32, 32), 100, resize=32)
