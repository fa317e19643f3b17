"""Sparse DFA's `rank` option: the reference construction (bcrafton/ssdfa FeedbackMatrix), issue 14."""
import math

import pytest
import torch

import dflearn
from dflearn.errors import DflearnError

from helpers import small_mlp


def blocks(rule):
    """B_i (n_i, d_L) of every point, from the stacked sparse operator."""
    B = rule.feedback.dense()
    sizes = [rule.layout.points[i].size for i in rule.feedback.points]
    return list(B.split(sizes))


@pytest.mark.parametrize("k, r, d", [(1, 10, 10), (2, 5, 10), (3, 4, 10), (5, 2, 10), (4, 3, 10), (1, 20, 20)])
def test_rank_of_each_B_i_is_r_for_k_below_d(k, r, d):
    torch.manual_seed(k * 100 + r)
    net = small_mlp(widths=(64, 48, 40), inputs=12, outputs=d)
    rule = dflearn.make_rule("sdfa", net, torch.zeros(1, 1, 1, 12), k=k, rank=r)
    for Bi in blocks(rule):
        n = len(Bi)
        # (float32 tolerance: the stored values are float32 products)
        assert torch.linalg.matrix_rank(Bi) == r  # a random k-subset mask per unit gives full rank d
        assert ((Bi != 0).sum(1) == k).all()  # still exactly k connections per unit
        rows = {tuple((row != 0).nonzero().flatten().tolist()) for row in Bi}
        assert len(rows) == r  # each unit reads one of r index sets
        counts = torch.tensor([[set_[j] == o for j in range(k)] for set_ in rows for o in range(d)]).view(r, d, k)
        per_output = counts.any(-1).sum(0)
        assert per_output.min() >= 1 and per_output.max() - per_output.min() <= 1  # balanced, every output used
        s = (d * k) ** 0.25 / math.sqrt(n)  # the whole B (zeros included) rescaled to std s
        assert Bi.double().std(unbiased=False).item() == pytest.approx(s, rel=1e-5)


def test_rank_refuses_what_the_reference_cannot_build():
    net = small_mlp(widths=(16, 8), inputs=6, outputs=10)
    x = torch.zeros(1, 1, 1, 6)
    with pytest.raises(DflearnError, match=r"k x rank >= 10"):
        dflearn.make_rule("sdfa", net, x, k=1, rank=5)  # 5 of the 10 outputs would reach no unit
    with pytest.raises(DflearnError, match="rank must be"):
        dflearn.make_rule("sdfa", net, x, k=2, rank=11)
    with pytest.raises(DflearnError, match="at least 10 units"):
        dflearn.make_rule("sdfa", small_mlp(widths=(16, 4), inputs=6, outputs=10), x, k=1, rank=10)


def test_without_rank_the_construction_is_unchanged():
    torch.manual_seed(0)
    rule = dflearn.make_rule("sdfa", small_mlp(widths=(32, 16), inputs=6, outputs=10), torch.zeros(1, 1, 1, 6), k=2)
    for Bi in blocks(rule):
        assert ((Bi != 0).sum(1) == 2).all() and torch.linalg.matrix_rank(Bi.double()) == 10
        s = (10 * 2) ** 0.25 / math.sqrt(len(Bi))
        assert Bi.abs().max() <= s
