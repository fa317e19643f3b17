"""--init-from (another run's weights, optionally its feedback) and --freeze (issue 14)."""
import subprocess
import sys

import pytest
import torch

import dflearn
from dflearn.errors import DflearnError
from dflearn.training import Config, Trainer
from dflearn.training.checkpoint import load

QUICK = dict(epochs=1, max_steps_per_epoch=4, model_options={"widths": [32, 16]})


def quiet(**kw):
    return dict(progress=False, log=lambda *a: None, **kw)


@pytest.fixture
def source(tmp_path):
    """A finished DFA run (mlp 64-32-16-10 on digits) to copy from."""
    dflearn.fit(rule="dfa", seed=5, out=tmp_path / "src", **QUICK, **quiet())
    return tmp_path / "src"


def test_init_from_copies_exactly_the_named_blocks(tmp_path, source):
    src = load(source / "checkpoint.pt")
    fresh = Trainer(Config(rule="bp", **QUICK), tmp_path / "fresh", **quiet()).model.state_dict()
    lines = []
    t = Trainer(Config(rule="bp", init_from=str(source), init_blocks=["3"], **QUICK), tmp_path / "t",
                progress=False, log=lines.append)
    got = t.model.state_dict()
    # point '3' is the first hidden block, Linear '1': copied bitwise; every other tensor as a fresh run's
    for k in got:
        expected = src["model"][k] if k.startswith("1.") else fresh[k]
        assert torch.equal(got[k], expected), k
    assert any("loaded 2 tensors of blocks 3 (modules 1)" in line for line in lines)
    whole = Trainer(Config(rule="bp", init_from=str(source / "checkpoint.pt"), **QUICK), tmp_path / "w", **quiet())
    assert all(torch.equal(v, src["model"][k]) for k, v in whole.model.state_dict().items())


def test_init_feedback_copies_the_rule_state(tmp_path, source):
    src = load(source / "checkpoint.pt")
    t = Trainer(Config(rule="dfa", init_from=str(source), init_feedback=True, **QUICK), tmp_path / "t", **quiet())
    assert all(torch.equal(v, src["rule"][k]) for k, v in t.rule.state_dict().items())
    plain = Trainer(Config(rule="dfa", init_from=str(source), **QUICK), tmp_path / "p", **quiet())
    assert not torch.equal(plain.rule.state_dict()["feedback.B"], src["rule"]["feedback.B"])  # seed 0, not 5


def test_init_from_refuses_a_shape_mismatch_in_one_line(tmp_path, source):
    other = {**QUICK, "model_options": {"widths": [48, 16]}}
    with pytest.raises(DflearnError) as err:
        Trainer(Config(rule="bp", init_from=str(source), **other), tmp_path / "t", **quiet())
    msg = str(err.value)
    assert "\n" not in msg and "'1.weight' has shape (32, 64) there but (48, 64)" in msg
    # the CLI: one line, exit code 1, naming the tensor
    r = subprocess.run([sys.executable, "-m", "dflearn", "train", "--rule", "bp", "--epochs", "1", "-q",
                        "--init-from", str(source), "-m", "widths=[48,16]", "--out", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "'1.weight'" in r.stderr
    with pytest.raises(DflearnError, match="no checkpoint there"):
        Trainer(Config(rule="bp", init_from=str(tmp_path / "nowhere"), **QUICK), tmp_path / "u", **quiet())


def test_freeze_keeps_frozen_blocks_bitwise_unchanged(tmp_path):
    # the DKP small net on digits: conv+BN blocks, so BN statistics must stay fixed too
    kw = dict(rule="dfa", model="dkpnet", epochs=2, max_steps_per_epoch=5, val_fraction=0.0)
    t = Trainer(Config(**kw, freeze=["3"]), tmp_path / "f", **quiet())
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    assert t.frozen == ["0", "1"]  # the first point's block: its conv and BN
    t.fit()
    after = t.model.state_dict()
    for k in after:
        if k.startswith(("0.", "1.")):
            assert torch.equal(after[k], before[k]), k  # weights, BN affine and running statistics
    assert not torch.equal(after["4.weight"], before["4.weight"])  # the second conv block learned
    assert all(not p.requires_grad for p in t.model[0].parameters())
    assert sum(len(g["params"]) for g in t.optimizer.param_groups) == \
        sum(1 for p in t.model.parameters() if p.requires_grad)
    # freezing by module name works the same; both BP and a cut rule leave the block alone
    t2 = Trainer(Config(**{**kw, "rule": "bp"}, freeze=["0", "1"]), tmp_path / "g", **quiet())
    w = t2.model[0].weight.clone()
    t2.fit()
    assert torch.equal(t2.model[0].weight, w)


def test_freeze_refuses_an_unknown_name_in_one_line_listing_the_valid_ones(tmp_path):
    with pytest.raises(DflearnError) as err:
        Trainer(Config(rule="dfa", freeze=["conv9"], **QUICK), tmp_path / "t", **quiet())
    msg = str(err.value)
    assert "\n" not in msg and "'conv9'" in msg and "feedback points 3, 6; head; modules 1, 4, 7" in msg
    with pytest.raises(DflearnError, match="need --init-from"):
        Config(init_blocks=["3"]).resolved()
    assert Config(freeze="3, 6").resolved().freeze == ["3", "6"]
    # alignment is measured beside frozen blocks (theirs is None: tests/test_diagnostics.py)
    assert Config(freeze=["3"], align_every=5).resolved().align_every == 5


def test_a_grid_run_can_start_from_another_run_of_the_grid(tmp_path):
    from dflearn.experiments import Grid, run_grid
    from dflearn.experiments.grid import run_name

    base = {"epochs": 1, "max_steps_per_epoch": 3, "model_options": {"widths": [16, 8]}}
    src = run_name(Config(**base, rule="bp", seed=0))[:-1] + "{seed}"
    transfer = {"init_from": src, "init_blocks": ["3"], "freeze": ["3"]}
    # the transfer variant is listed first: the grid still runs its sources before it
    grid = Grid(base, [], [0, 1], [{"rules": ["dfa"], **transfer}, {"rules": ["bp"]}])
    runs = grid.runs()
    assert [c.init_from for _, c in runs[:2]] == [src.replace("{seed}", "0"), src.replace("{seed}", "1")]
    out = tmp_path / "grid"  # not the current folder: the source is found beside the run's own folder
    run_grid(runs, out, log=lambda *a: None)
    for seed in (0, 1):
        bp = load(out / src.replace("{seed}", str(seed)) / "checkpoint.pt")["model"]
        name = [n for n, c in runs if c.rule == "dfa" and c.seed == seed][0]
        assert name.endswith("-init=3-freeze=3")
        got = load(out / name / "checkpoint.pt")["model"]
        assert torch.equal(got["1.weight"], bp["1.weight"])  # copied from its own seed's source, then frozen
        assert not torch.equal(got["4.weight"], bp["4.weight"])
    from dflearn.experiments import table

    rows = {r["rule"]: r for r in table(out)}  # each seed's own source counts as one setting
    assert rows["dfa"]["seeds"] == rows["bp"]["seeds"] == 2 and rows["dfa"]["init_from"].endswith("seed*")


def test_a_run_starts_as_soon_as_its_own_source_is_done_not_a_whole_wave(tmp_path, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from dflearn.experiments import grid

    runs = [("slow", Config(rule="bp")),  # a source nobody waits for
            ("child", Config(rule="dfa", init_from="fast")), ("fast", Config(rule="bp"))]
    assert grid._sources(runs) == {"slow": None, "child": "fast", "fast": None}
    assert grid._in_order(grid._sources(runs)) == ["slow", "fast", "child"]  # one job: each run after its source
    child_started, events = threading.Event(), []

    def worker(out, config, threads, loggers):  # the slow source finishes only once the child has started
        events.append(f"start {out.name}")
        if out.name == "child":
            child_started.set()
        if out.name == "slow":
            child_started.wait(timeout=20)
        events.append(f"end {out.name}")
        return {"rule": config.rule}

    # threads in place of processes, so the stand-in worker is seen; the schedule is run_grid's own
    monkeypatch.setattr(grid, "ProcessPoolExecutor", lambda jobs, mp_context: ThreadPoolExecutor(jobs))
    monkeypatch.setattr(grid, "_worker", worker)
    summaries = grid.run_grid(runs, tmp_path / "grid", jobs=2, log=lambda *a: None)
    assert [s["rule"] for s in summaries] == ["bp", "dfa", "bp"]  # in the grid's order
    assert events.index("start child") > events.index("end fast")
    assert events.index("start child") < events.index("end slow")  # waves would have waited for slow
    with pytest.raises(DflearnError, match="circle"):
        grid._sources([("a", Config(init_from="b")), ("b", Config(init_from="a"))])


def test_sdfa_transfer_preset_freezes_conv3s_conv_blocks_and_starts_from_bp():
    from dflearn.experiments.grid import _sources
    from dflearn.experiments.presets import PRESETS

    for budget in ("smoke", "short", "paper"):
        runs = PRESETS["sdfa-transfer"].grid(budget).runs()
        names = {n for n, _ in runs}
        sources = [c for _, c in runs if not c.init_from]
        assert {c.rule for c in sources} == {"bp"}
        moved = [c for _, c in runs if c.init_from]
        assert {(c.rule, c.rule_options.get("k")) for c in moved} == {("bp", None), ("dfa", None), ("sdfa", 1),
                                                                      ("sdfa", 5)}
        for c in moved:
            assert c.init_from in names and c.init_from.endswith(f"seed{c.seed}")
            assert c.freeze == c.init_blocks == ["3", "7", "11"] and c.model == "conv3"
        assert {_sources(runs)[n] for n, c in runs if c.init_from} <= {n for n, c in runs if not c.init_from}
        if budget == "short":
            assert len({c.seed for c in sources}) == 3 and all(c.val_fraction > 0 for _, c in runs)
    runs = PRESETS["dkp-cifar100"].grid("short").runs()
    assert {c.rule for _, c in runs} == {"bp", "dkp", "dfa"} and {c.seed for _, c in runs} == {0, 1, 2}
    dkp = [c for _, c in runs if c.rule == "dkp"][0].resolved()
    assert dkp.model == "alexnet" and dkp.rule_options == {"init": "zeros"} and dkp.feedback_lr == 0.01


@pytest.mark.parametrize("rule", sorted(n for n, cls in dflearn.RULES.items()  # the built-in ones (other test
                                         if cls.__module__.startswith("dflearn.")))  # files register their own)
def test_every_rule_leaves_a_frozen_block_alone(tmp_path, rule):
    # rules that write weights themselves (PEPITA) or read their gradients (KP) included
    t = Trainer(Config(rule=rule, epochs=1, max_steps_per_epoch=3, freeze=["3"], val_fraction=0.0,
                       model_options={"widths": [16, 16]}), tmp_path / "r", **quiet())
    frozen = {k: v.clone() for k, v in t.model[1].state_dict().items()}
    other = t.model[4].weight.clone()
    t.train_epoch()
    assert all(torch.equal(v, frozen[k]) for k, v in t.model[1].state_dict().items())
    assert not torch.equal(t.model[4].weight, other)  # the block above still learns
