"""FGSM and PGD against their definitions, with the true gradient whatever the rule."""
import json

import pytest
import torch
from torch import nn

import dflearn
from dflearn import robust
from dflearn.cli import main


def test_fgsm_equals_hand_computed_step_on_softmax_regression():
    """For logits z = W x + b, d(sum CE)/dx = W^T (softmax(z) - onehot(y)) per sample."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x = torch.rand(5, 1, 3, 4)
    y = torch.tensor([0, 1, 2, 3, 1])
    W, b = net[1].weight.detach(), net[1].bias.detach()
    z = x.flatten(1) @ W.t() + b
    p = torch.exp(z - z.logsumexp(1, keepdim=True))
    grad = (p - torch.eye(4)[y]) @ W
    expected = (x.flatten(1) + 0.1 * grad.sign()).clamp(0, 1).view_as(x)
    torch.testing.assert_close(robust.fgsm(net, x, y, 0.1), expected)


def test_pgd_stays_in_the_ball_and_the_pixel_range_and_hurts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.rand(64, 1, 3, 4)
    with torch.no_grad():
        y = net(x).argmax(1)  # every clean prediction right
    eps = 0.05
    adv = robust.pgd(net, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-7
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert (net(adv).argmax(1) == y).float().mean() < 1.0
    assert torch.equal(robust.pgd(net, x, y, 0.0), x)


@pytest.mark.parametrize("rule", ["dfa", "fa"])
def test_attacks_use_the_true_gradient_whatever_the_rule(tmp_path, rule):
    """A run trained under DFA or FA (whose training backward is not the true one) is
    attacked with autograd's gradient of its network: the hand-derived two-layer gradient."""
    out = tmp_path / rule
    dflearn.fit(rule=rule, model_options={"widths": [16]}, epochs=1, max_steps_per_epoch=10,
                out=out, progress=False, log=lambda *a: None)
    net, data, _ = robust.load_network(out)
    x = data.x_test[:6].float() / 255
    y = data.y_test[:6]
    lin1, lin2 = [m for m in net.model.modules() if isinstance(m, nn.Linear)]
    mean, std = net.mean, net.std
    u = ((x - mean) / std).flatten(1)
    a1 = u @ lin1.weight.t() + lin1.bias
    z = torch.relu(a1) @ lin2.weight.t() + lin2.bias
    p = torch.softmax(z, 1)
    delta2 = p - torch.eye(10)[y]
    delta1 = (delta2 @ lin2.weight) * (a1 > 0)
    hand = (delta1 @ lin1.weight).view_as(x) / std
    torch.testing.assert_close(robust.input_gradient(net, x, y), hand.detach(), rtol=1e-4, atol=1e-6)


def test_cli_table_plot_and_transfer(tmp_path, capsys):
    runs = []
    for rule in ("bp", "dfa"):
        out = tmp_path / rule
        dflearn.fit(rule=rule, model_options={"widths": [32]}, epochs=2, out=out, progress=False, log=lambda *a: None)
        runs.append(str(out))
    assert main(["robust", *runs, "--eps", "0,8/255,64/255", "--twin", runs[0], "--limit", "200",
                 "--steps", "3", "--out", str(tmp_path / "rob")]) == 0
    rows = json.loads((tmp_path / "rob" / "robust.json").read_text())
    assert len(rows) == 2 * 2 * 3
    clean = [r for r in rows if r["eps"] == 0]
    for r in clean:  # eps 0 is the clean accuracy of the trained network
        net, data, _ = robust.load_network(r["run"])
        index = robust.test_subset(len(data.y_test), 200)
        with torch.no_grad():
            acc = (net(data.x_test[index].float() / 255).argmax(1) == data.y_test[index]).float().mean().item()
        assert r["accuracy"] == pytest.approx(acc) and acc > 0.25
    strong = [r for r in rows if r["eps"] == 64 / 255 and r["attack"] == "pgd"]
    assert all(r["accuracy"] < c["accuracy"] for r, c in zip(strong, clean))
    assert (tmp_path / "rob" / "robust.png").stat().st_size > 1000
    assert "fgsm eps=" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--eps", "a,b"], "is not a comma-separated list"),
    (["--eps", "2"], "eps must lie in [0, 1]"),
    (["--attacks", "cw"], "unknown attack 'cw'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_robust_options_are_one_line(tmp_path, capsys, args, message):
    dflearn.fit(rule="bp", model_options={"widths": [8]}, epochs=1, max_steps_per_epoch=2,
                out=tmp_path / "r", progress=False, log=lambda *a: None)
    assert main(["robust", str(tmp_path / "r"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_run_is_one_line(tmp_path, capsys):
    assert main(["robust", str(tmp_path / "nope")]) == 1
    assert "holds no run" in capsys.readouterr().err


def test_several_seeds_give_mean_and_std_per_rule(tmp_path):
    """Runs of the same rule (seeds) merge into one row: mean and sample std of their accuracies."""
    def row(run, rule, eps, acc, transfer):
        return {"run": run, "rule": rule, "dataset": "mnist", "model": "mlp", "attack": "fgsm", "eps": eps,
                "accuracy": acc, "transfer_accuracy": transfer}
    rows = [row("a0", "dfa", 0.0, 0.90, 0.90), row("a1", "dfa", 0.0, 0.94, 0.90),
            row("a0", "dfa", 0.1, 0.50, 0.70), row("a1", "dfa", 0.1, 0.60, 0.80),
            row("b0", "bp", 0.0, 0.97, 0.97), row("b0", "bp", 0.1, 0.20, 0.20)]
    merged = {(r["rule"], r["eps"]): r for r in robust.by_rule(rows)}
    dfa = merged[("dfa", 0.1)]
    assert dfa["runs"] == 2 and dfa["accuracy"] == pytest.approx(0.55)
    assert dfa["accuracy_std"] == pytest.approx(((0.05 ** 2 + 0.05 ** 2) / 1) ** 0.5)  # n - 1 = 1
    assert dfa["transfer_accuracy_std"] == pytest.approx((2 * 0.05 ** 2) ** 0.5)
    assert merged[("bp", 0.1)]["accuracy_std"] == 0.0
    table = robust.markdown(rows).splitlines()
    assert table[0] == "| rule | runs | fgsm eps=0 | fgsm eps=0.1 |"
    assert table[2] == "| dfa | 2 | 92.0 ± 2.8 / 90.0 ± 0.0 | 55.0 ± 7.1 / 75.0 ± 7.1 |"
    assert "mean ± std" in table[-1]
    assert robust.plot(rows, tmp_path / "r.png").stat().st_size > 1000


def test_the_attacked_images_are_a_fixed_draw_over_every_class():
    """A test set stored by class (as the CIFAR subsets are) must not give a one-class sample."""
    labels = torch.arange(10).repeat_interleave(1000)  # 10,000 labels, grouped by class
    index = robust.test_subset(len(labels), 500)
    assert len(index) == len(set(index.tolist())) == 500
    assert torch.bincount(labels[index], minlength=10).min() >= 25  # every class, roughly 50 each
    assert torch.equal(index, robust.test_subset(len(labels), 500))  # the same draw for every run
    assert torch.equal(robust.test_subset(300, 1000), torch.arange(300))  # the whole set, in order
