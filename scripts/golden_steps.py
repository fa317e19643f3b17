"""Record one float64 training step of every registered rule (and option variants)
on a fixed MLP and a fixed conv net: all model parameters, the rule's state and the
loss after the step. Run once on the engine *before* a refactor; the test
tests/test_golden.py then requires every later engine to reproduce the file to 1e-12.

    PYTHONPATH=src python scripts/golden_steps.py tests/data/golden_steps.pt
"""
import sys

import torch
from torch import nn

from dflearn import FeedbackPoint, make_rule, train_step

VARIANTS = {  # (rule, options) per net; every registered rule with its defaults, and options that change maths
    "mlp": [("bp", {}), ("shallow", {}), ("dfa", {}), ("dfa", {"init": "product"}), ("dfa", {"last_bp": True}),
            ("sdfa", {}), ("sdfa", {"k": 2}), ("drtp", {}), ("dkp", {}), ("las", {}), ("las", {"init": "default"}),
            ("ltas", {}), ("fa", {}), ("usf", {}), ("brsf", {}), ("frsf", {}), ("kp", {}), ("wm", {})],
    "conv": [("bp", {}), ("shallow", {}), ("dfa", {}), ("sdfa", {}), ("drtp", {}), ("dkp", {}), ("las", {}),
             ("ltas", {}), ("fa", {}), ("usf", {}), ("brsf", {}), ("frsf", {}), ("kp", {}), ("wm", {})],
}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.Tanh(), FeedbackPoint(), nn.Linear(6, 5), nn.ReLU(),
                         FeedbackPoint(), nn.Linear(5, 4), nn.Tanh(), FeedbackPoint(), nn.Linear(4, 3))


def conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), FeedbackPoint(),
                         nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), FeedbackPoint(),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.ReLU(), FeedbackPoint(), nn.Linear(5, 3))


NETS = {"mlp": (mlp, (1, 2, 4)), "conv": (conv, (2, 6, 6))}


def data(net: str):
    g = torch.Generator().manual_seed(7)
    shape = NETS[net][1]
    return torch.randn(9, *shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (9,), generator=g)


def one_step(net: str, rule_name: str, options: dict):
    """(model, rule, loss) after one SGD step (lr 0.1; feedback lr 0.05): plain SGD exposes
    each gradient's magnitude, which Adam's first step would hide."""
    torch.manual_seed(0)
    model = NETS[net][0]().double()
    x, y = data(net)
    torch.manual_seed(1)
    rule = make_rule(rule_name, model, x[:1], **options).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    params = list(rule.parameters())
    fb = torch.optim.SGD(params, lr=0.05) if params else None
    torch.manual_seed(2)  # the weight mirror draws its noise in the step
    loss, _ = train_step(model, rule, x, y, opt, fb)
    return model, rule, loss


def key(net, rule, options):
    return f"{net}/{rule}" + "".join(f",{k}={v}" for k, v in sorted(options.items()))


if __name__ == "__main__":
    out = {}
    for net, variants in VARIANTS.items():
        for rule_name, options in variants:
            model, rule, loss = one_step(net, rule_name, options)
            out[key(net, rule_name, options)] = {
                "loss": loss.detach().clone(),
                "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "rule": {k: v.detach().clone() for k, v in rule.state_dict().items()}}
    torch.save(out, sys.argv[1])
    print(f"{len(out)} steps recorded in {sys.argv[1]}")
