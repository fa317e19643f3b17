"""Every rule's float64 step reproduces the values recorded before the engine was
reshaped (tests/data/golden_steps.pt, made by scripts/golden_steps.py on the old
engine): model parameters, feedback state and loss, to 1e-12."""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("golden_steps", ROOT / "scripts" / "golden_steps.py")
golden_steps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden_steps)
GOLDEN = torch.load(ROOT / "tests" / "data" / "golden_steps.pt", weights_only=True)
CASES = [(net, rule, opts) for net, variants in golden_steps.VARIANTS.items() for rule, opts in variants]


def test_every_registered_rule_has_a_golden_step():
    from dflearn.rules import RULES
    recorded = {rule for _, rule, _ in CASES}
    builtin = {name for name, cls in RULES.items() if cls.__module__.startswith("dflearn.rules.")}
    assert builtin - recorded <= {"pepita", "localheads"}  # added after the golden values were recorded


@pytest.mark.parametrize("net,rule,options", CASES, ids=[golden_steps.key(*c) for c in CASES])
def test_step_equals_golden(net, rule, options):
    expected = GOLDEN[golden_steps.key(net, rule, options)]
    model, rule_obj, loss = golden_steps.one_step(net, rule, options)
    torch.testing.assert_close(loss, expected["loss"], rtol=0, atol=1e-12)
    got = model.state_dict()
    assert got.keys() == expected["model"].keys()
    for k, v in expected["model"].items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-12, msg=f"{k}")
    state = rule_obj.state_dict()
    assert state.keys() == expected["rule"].keys()
    for k, v in expected["rule"].items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=1e-12, msg=f"rule {k}")
