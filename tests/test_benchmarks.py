"""The optimised step gives the same parameter updates as the straightforward
implementations in benchmarks/naive.py, and the benchmark script runs.

Equivalence runs in float64 with plain SGD (an update is then -lr * gradient, so
any difference in the gradients shows; Adam's first steps are nearly sign(g)
and would hide it): parameters agree to 1e-10 after three steps on three batches.
Fused vs foreach Adam is compared in float32, to 1e-6.
"""
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dflearn
from dflearn.training.trainer import make_optimizer

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import naive  # noqa: E402

TOL = 1e-10
SHAPE = (1, 6, 6)


def batches(n=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, *SHAPE, generator=g, dtype=dtype), torch.randint(0, 5, (16,), generator=g))
            for _ in range(n)]


def net(dtype=torch.float64):
    torch.manual_seed(0)
    return dflearn.build_model("mlp", SHAPE, 5, widths=(12, 10, 8)).to(dtype)


def sgd(params):
    return torch.optim.SGD(list(params), lr=0.5)


def run(rule_cls_or_name, step="library", dtype=torch.float64, state=None, optimizer=sgd, **options):
    """Three steps from the same initial net; returns the net and the rule."""
    model = net(dtype)
    example = torch.zeros(1, *SHAPE, dtype=dtype)
    if isinstance(rule_cls_or_name, str):
        rule = dflearn.make_rule(rule_cls_or_name, model, example, **options)
    else:
        rule = rule_cls_or_name(model, example, **options)
    if state is not None:
        rule.load_state_dict(state)
    rule = rule.to(dtype)
    opt = optimizer(model.parameters())
    fopt = optimizer(rule.parameters()) if list(rule.parameters()) else None
    for x, y in batches(dtype=dtype):
        if step == "hook":
            naive.hook_dfa_step(model, rule, x, y, opt)
        elif step == "two_pass":
            naive.two_pass_step(model, rule, x, y, opt, fopt)
        elif step == "autograd_error":
            dflearn.train_step(model, rule, x, y, opt, fopt, naive.autograd_error)
        else:
            dflearn.train_step(model, rule, x, y, opt, fopt)
    return model, rule


def max_diff(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_dfa_per_block_equals_stacked_and_hooked_full_backward():
    model, rule = run("dfa")
    state = copy.deepcopy(rule.state_dict())
    stacked, _ = run(naive.StackedDFA, state=state)
    hooked, _ = run("dfa", step="hook", state=state)
    bp, _ = run("bp")
    assert max_diff(model, stacked) < TOL
    assert max_diff(model, hooked) < TOL
    assert max_diff(model, net()) > 1e-3 and max_diff(model, bp) > 1e-3  # the updates are not trivial


@pytest.mark.parametrize("name", ["dfa", "las", "dkp"])
def test_closed_form_output_error_equals_a_second_autograd_pass(name):
    model, rule = run(name)
    ref, ref_rule = run(name, step="autograd_error")  # the same seeded net and rule
    assert max_diff(model, ref) < TOL and max_diff(model, net()) > 1e-3
    if list(rule.parameters()):
        assert max_diff(rule, ref_rule) < TOL


@pytest.mark.parametrize("k", [1, 3])
def test_sparse_dfa_gather_equals_dense_matmul(k):
    model, rule = run("sdfa", k=k)
    dense, _ = run(naive.DenseSparseDFA, state=copy.deepcopy(rule.state_dict()), k=k)
    assert max_diff(model, dense) < TOL
    index = rule.state_dict()["feedback.index"]  # k distinct outputs per unit, from the stored state
    assert index.shape[1] == k and all(len(set(row.tolist())) == k for row in index)


@pytest.mark.parametrize("name", ["las", "ltas"])
def test_las_one_forward_equals_two_forward_reference_order(name):
    model, rule = run(name)
    ref_model, ref_rule = run(name, step="two_pass")
    assert max_diff(model, ref_model) < TOL
    assert max_diff(rule, ref_rule) < TOL
    # the order matters: signalling with the module *before* its update moves the net elsewhere
    model2 = net()
    rule2 = dflearn.make_rule(name, model2, torch.zeros(1, *SHAPE, dtype=torch.float64)).double()
    opt, fopt = sgd(model2.parameters()), sgd(rule2.parameters())
    for x, y in batches():  # the base step's order (backward, then the feedback update), as DKP's
        dflearn.Rule.step(rule2, model2, x, y, opt, fopt)
    assert max_diff(model, model2) > 1e-6


def test_fused_adam_equals_foreach_adam():
    fused = lambda p: make_optimizer("adam", p, 1e-2, 1e-4)  # noqa: E731
    foreach = lambda p: naive.foreach_adam(p, 1e-2, 1e-4)  # noqa: E731
    a, _ = run("dfa", dtype=torch.float32, optimizer=fused)
    b, _ = run("dfa", dtype=torch.float32, optimizer=foreach)
    assert max_diff(a, b) < 1e-6
    assert max_diff(a, net(torch.float32)) > 1e-3


def test_benchmark_quick_mode(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
    proc = subprocess.run([sys.executable, str(BENCH / "bench.py"), "--quick", "--threads", "1", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "bench.json").read_text())
    steps = res["steps"]["mlp-mnist"]
    assert set(steps) >= {"bp", "shallow", "dfa", "sdfa", "drtp", "dkp", "las", "ltas"}
    for rule, row in steps.items():
        if rule == "bp_runs":
            continue
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, rule
    # at least the net's weights (784*1024 + 1024*1024 + 1024*10 floats: 7.2 MiB); BP holds also their
    # gradients and Adam's two moments, which shallow lacks for the first layer (784*1024 * 3 floats: 9.2 MiB)
    mem = res["memory"]["mlp-mnist"]
    assert all(mb is None or mb > 7.2 for mb in mem.values())
    assert mem["bp"] is None or (mem["bp"] > 3 * 7.2 and mem["bp"] > mem["shallow"] + 4)
    assert set(res["memory"]["mlp-mnist"]) == set(steps) - {"bp_runs"}
    assert steps["bp"]["ratio"] == 1.0 and "ratio_to_dfa" in steps["las"]
    import bench
    assert len(res["optimisations"]) == len(bench.OPTIMISATIONS)
    assert all(math.isfinite(r["speedup"]) and r["speedup"] > 0 for r in res["optimisations"])
    assert sorted(map(int, res["sdfa"]["rows"])) == [10, 20, 50, 100, 200]
    assert 0 < res["epoch"]["dfa"]["share"] < 1
    md = (tmp_path / "bench.md").read_text()
    assert "| rule | mlp-mnist |" in md and "| dfa | " in md and "**Targets**" in md
