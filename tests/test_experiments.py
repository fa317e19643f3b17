"""Grids, tables, resume, plots, presets, TensorBoard (on the bundled digits: seconds)."""
import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest

from dflearn.cli import main
from dflearn.errors import DflearnError
from dflearn.experiments import Grid, run_grid, table, write_table
from dflearn.experiments.plots import alignment_curves, learning_curves, load_runs, plot_all
from dflearn.experiments.presets import BUDGETS, PRESETS
from dflearn.training import Config

QUIET = dict(log=lambda *a: None)
BASE = {"model_options": {"widths": [16]}, "epochs": 2, "max_steps_per_epoch": 4, "align_every": 2}


def small_grid(rules=("bp", "dfa"), seeds=(0, 1, 2)):
    return Grid(dict(BASE), list(rules), list(seeds))


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    run_grid(small_grid().runs(), out, **QUIET)
    return out


def test_table_equals_hand_computation(grid_dir):
    rows = write_table(grid_dir)
    assert [r["rule"] for r in rows] == ["bp", "dfa"] and all(r["seeds"] == 3 for r in rows)
    for row in rows:
        best, final = [], []
        for seed in range(3):
            d = grid_dir / f"digits-mlp-noaug-lr0.001-{row['rule']}-seed{seed}"
            accs = [json.loads(line)["test_acc"] for line in (d / "metrics.jsonl").read_text().splitlines()]
            best.append(max(accs))
            final.append(accs[-1])
        for name, values in (("best", best), ("final", final)):
            mean = sum(values) / 3
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
            assert row[f"{name}_mean"] == pytest.approx(mean, abs=1e-12)
            assert row[f"{name}_std"] == pytest.approx(std, abs=1e-12)
        md = (grid_dir / "results.md").read_text()
        assert f"{100 * row['best_mean']:.2f} ± {100 * row['best_std']:.2f}" in md
    csv_lines = (grid_dir / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("dataset,model,rule,seeds,best_mean")


def test_papers_layout_has_rules_as_columns(grid_dir):
    rows = write_table(grid_dir, layout="papers")
    md = (grid_dir / "results.md").read_text().splitlines()
    assert md[0] == "| dataset | model | bp | dfa |"
    # the runs have a validation split, so the cells show the test accuracy at the validation-best epoch
    assert md[2].startswith("| digits | mlp | " + f"{100 * rows[0]['selected_mean']:.2f} ± ")
    assert "Test accuracy at the epoch of best validation accuracy" in md[-1]
    write_table(grid_dir, layout="papers", metric="paper")  # the LAS paper's protocol, on request, named
    md = (grid_dir / "results.md").read_text().splitlines()
    assert md[2].startswith("| digits | mlp | " + f"{100 * rows[0]['best_mean']:.2f} ± ")
    assert "Best test accuracy over epochs" in md[-1] and "protocol" in md[-1]


def test_interrupted_grid_finishes_with_the_same_table(grid_dir, tmp_path):
    runs = small_grid().runs()
    epoch_lines = []

    def interrupt(line, *a):  # stop in the middle of the 4th run (after its first epoch)
        if line.startswith("epoch"):
            epoch_lines.append(line)
            if len(epoch_lines) == 7:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(runs, tmp_path, log=interrupt)
    names = [n for n, _ in runs]
    assert (tmp_path / names[2] / "summary.json").exists()
    assert (tmp_path / names[3] / "checkpoint.pt").exists() and not (tmp_path / names[3] / "summary.json").exists()
    first = (tmp_path / names[0] / "summary.json").read_text()
    (tmp_path / names[4]).mkdir()  # a run that died before its first checkpoint
    (tmp_path / names[4] / "config.json").write_text("{}")
    log = []
    run_grid(runs, tmp_path, log=log.append)
    assert any("resuming" in line and names[3] in line for line in log)  # resumed, not restarted
    assert (tmp_path / names[0] / "summary.json").read_text() == first  # finished runs skipped
    key = ("rule", "seeds", "best_mean", "best_std", "final_mean", "final_std")
    assert [[r[k] for k in key] for r in table(tmp_path)] == [[r[k] for k in key] for r in table(grid_dir)]


def test_rerun_with_another_configuration_is_refused(grid_dir):
    grid = Grid({**BASE, "lr": 0.01}, ["bp"], [0])
    name, config = grid.runs()[0]
    (grid_dir / name).symlink_to(grid_dir / "digits-mlp-noaug-lr0.001-bp-seed0")
    try:
        with pytest.raises(DflearnError, match="another configuration"):
            run_grid([(name, config)], grid_dir, **QUIET)
    finally:
        (grid_dir / name).unlink()


def test_plots_have_one_curve_per_run(grid_dir, tmp_path):
    runs = load_runs([grid_dir])
    assert len(runs) == 6
    fig = learning_curves(runs)
    for ax in fig.axes:
        gids = [line.get_gid() for line in ax.lines]
        assert sorted(g for g in gids if g.startswith("run:")) == sorted(f"run:{r['dir']}" for r in runs)
        assert sorted(g for g in gids if g.startswith("mean:")) == ["mean:bp", "mean:dfa"]
        bp = next(line for line in ax.lines if line.get_gid() == "mean:bp")
        assert list(bp.get_xdata()) == [1, 2]
    acc = next(line for line in fig.axes[0].lines if line.get_gid() == "mean:dfa").get_ydata()
    dfa = [r for r in runs if r["config"]["rule"] == "dfa"]
    assert acc[1] == pytest.approx(100 * statistics.fmean(r["rows"][1]["test_acc"] for r in dfa))  # percent
    fig = alignment_curves(runs, "feedback_angle")  # only DFA has a feedback matrix
    assert len(fig.axes) == 1 and {line.get_gid() for line in fig.axes[0].lines} >= {"mean:dfa"}
    written = plot_all([grid_dir / "digits-mlp-noaug-lr0.001-bp-seed0", grid_dir], tmp_path)
    assert {p.name for p in written} == {"accuracy.png", "learning_curves.png", "alignment.png", "update_alignment.png",
                                         "feedback_angle.png"}
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_compare_cli_routes_rule_options(tmp_path, capsys):
    assert main(["compare", "--rules", "bp,dfa", "--seeds", "0", "--epochs", "1", "--max-steps-per-epoch", "2",
                 "-m", "widths=[8]", "-o", "init=product", "--layout", "papers", "-q", "--out", str(tmp_path)]) == 0
    assert "| dataset | model | bp | dfa[init=product] |" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "digits-mlp-noaug-lr0.001-bp-seed0" / "config.json").read_text())["rule_options"] == {}
    assert main(["compare", "--rules", "bp", "-o", "k=1", "--out", str(tmp_path)]) == 1
    assert "no rule of bp has the option(s) k" in capsys.readouterr().err


KNOWN_PENDING = {"conv3", "conv3bn", "resnet18", "dkpnet", "cifar10", "cifar100", "tinyimagenet",
                 "crop", "cutout", "randaugment"}  # added on another branch


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_valid_configs(name, budget):
    from dflearn.data import AUGMENTATIONS, DATASETS
    from dflearn.models import MODELS
    from dflearn.rules import RULES, rule_options

    runs = PRESETS[name].grid(budget).runs()
    assert runs
    missing = set()
    for _, config in runs:
        c = config.resolved()
        assert set(c.rule_options) <= set(rule_options(RULES[c.rule]))
        names = [(c.model, MODELS), (c.dataset, DATASETS)] + [(a, AUGMENTATIONS) for a in (c.augment or "").split("+") if a]
        missing |= {n for n, registry in names if n not in registry}
        if budget == "smoke":
            assert c.epochs == 1 and c.max_steps_per_epoch
    assert missing <= KNOWN_PENDING, f"unknown names {missing - KNOWN_PENDING}"
    if missing:
        pytest.skip(f"not registered on this branch yet: {sorted(missing)}")


@pytest.mark.parametrize("args, rules", [(["las-alignment"], ["dfa[init=product]", "las", "ltas"]),
                                         (["las-fc-table", "--dataset", "mnist"], ["bp", "shallow", "dfa", "las", "ltas"])])
def test_smoke_budget_runs_end_to_end(args, rules, tmp_path, capsys):
    assert main(["reproduce", *args, "--budget", "smoke", "-q", "--layout", "papers", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "results.md").read_text()
    assert md.splitlines()[0] == "| dataset | model | " + " | ".join(rules) + " |"
    assert md.splitlines()[2].startswith("| mnist | mlp-mnist |")
    assert (tmp_path / "plots" / "learning_curves.png").stat().st_size > 0
    if args[0] == "las-alignment":
        assert (tmp_path / "plots" / "feedback_angle.png").exists()


def test_list_shows_every_preset_and_budget(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS) and out.count("  short ") == len(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_cell_of_a_short_budget_has_three_seeds(name):
    """A claim that one rule beats another needs a spread: the short budget (the one the
    docs' tables are measured at) runs every cell (a run's folder name less its seed) with 3 seeds."""
    seeds_of_cell = {}
    for run, c in PRESETS[name].grid("short").runs():
        assert f"-seed{c.seed}" in run
        seeds_of_cell.setdefault(run.replace(f"-seed{c.seed}", "-seed*", 1), set()).add(c.seed)
    assert seeds_of_cell and all(len(s) >= 3 for s in seeds_of_cell.values()), name


def test_tensorboard_missing_is_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    assert main(["train", "--epochs", "1", "--tensorboard", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "dflearn: error: --tensorboard needs the tensorboard package: pip install tensorboard " \
                  "(it does not change torch)"
    assert not (tmp_path / "r").exists()  # failed before training


def test_tensorboard_writes_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", "--rule", "dfa", "--epochs", "2", "--max-steps-per-epoch", "4", "--align-every", "2",
                 "-m", "widths=[8]", "--tensorboard", "-q", "--out", str(tmp_path / "r")]) == 0
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("epoch/test_acc")] == [4, 8]  # one axis: the step each epoch ended on
    assert [e.value for e in acc.Scalars("epoch/epoch")] == [1, 2]
    assert [e.step for e in acc.Scalars(next(t for t in tags if t.startswith("alignment/")))] == [0, 2, 4, 6]


def test_a_setting_that_follows_the_rule_does_not_split_the_cells(tmp_path):
    """DKP resolves its own feedback optimizer defaults (feedback_lr 1e-4, ...) into its config:
    the table keeps one row per data set and model, as an lr that varies within a rule still splits."""
    out = tmp_path / "g"
    # DKP with its own weight decay too, as the DKP reference's CIFAR-100 recipe (preset dkp-cifar100)
    grid = Grid({**BASE, "epochs": 1, "align_every": 0}, [], [0],
                [{"rules": ["dfa"]}, {"rules": ["dkp"], "weight_decay": 1e-6}])
    run_grid(grid.runs(), out, **QUIET)
    configs = [json.loads(p.read_text()) for p in out.glob("*/config.json")]
    assert len({c["feedback_lr"] for c in configs}) == 2  # the premise: the rules' configs differ
    rows = write_table(out, layout="papers")
    assert len(rows) == 2 and "feedback_lr" not in rows[0] and "weight_decay" not in rows[0]
    md = (out / "results.md").read_text().splitlines()
    assert md[0] == "| dataset | model | dfa | dkp |" and md[3] == ""  # one data row
    assert md[-1] == "Settings that differ by rule, part of each rule's recipe: weight_decay: dfa 0.0, dkp 1e-06."
    from dflearn.experiments.plots import group
    assert list(group(load_runs([out]))) == ["dfa", "dkp"]  # the legend: no feedback_lr=... either
    run_grid(Grid({**BASE, "epochs": 1, "align_every": 0, "lr": 0.01}, ["dfa"], [0]).runs(), out, **QUIET)
    assert "lr" in write_table(out)[0]  # dfa at two lrs: a column (a transfer variant too: test_transfer)


def _run(rule, seed, acc, **config):
    return {"config": {"dataset": "digits", "model": "mlp", "rule": rule, "rule_options": {}, "seed": seed,
                       "lr": 1e-3, **config}, "test_accuracy_at_val_best": acc, "best_test_accuracy": 1.0}


def test_spread_judges_a_difference_by_twice_the_std_of_the_difference():
    from dflearn.experiments.spread import differences

    runs = [_run("bp", s, a) for s, a in enumerate([0.90, 0.91, 0.92])]      # mean 91, sd 1 (points)
    runs += [_run("dfa", s, a) for s, a in enumerate([0.86, 0.88, 0.87])]    # mean 87, sd 1
    runs += [_run("las", s, a) for s, a in enumerate([0.85, 0.90, 0.89])]    # mean 88, sd sqrt(7)
    runs += [_run("dfa", s, 0.10, lr=1e-2) for s in range(3)]               # another cell: never paired with lr 1e-3
    pairs = {(p["a"], p["b"], p.get("lr")): p for p in differences(runs)}
    assert len(pairs) == 3  # the lone lr=1e-2 cell has one rule: no pair
    bp_dfa = pairs["bp", "dfa", 1e-3]
    assert bp_dfa["difference"] == pytest.approx(4.0) and bp_dfa["bar"] == pytest.approx(2 * math.sqrt(2))
    assert bp_dfa["apart"] and bp_dfa["better"] and bp_dfa["a_ahead"] == 3 and bp_dfa["paired_seeds"] == 3
    dfa_las = pairs["dfa", "las", 1e-3]  # -1 against a bar of 2 sqrt(8): within; las ahead on 2 of 3 seeds
    assert dfa_las["difference"] == pytest.approx(-1.0) and dfa_las["bar"] == pytest.approx(2 * math.sqrt(8))
    assert not dfa_las["apart"] and dfa_las["a_ahead"] == 1
    bp_las = pairs["bp", "las", 1e-3]  # 3 against 2 sqrt(1 + 7) = 5.66: within, though bp leads every seed
    assert not bp_las["apart"] and bp_las["a_ahead"] == 3


def test_spread_on_bits_per_character_counts_lower_as_better():
    from dflearn.experiments.spread import differences

    runs = [{**_run("bp", s, None), "final_test_bpc": v} for s, v in enumerate([2.0, 2.1, 2.2])]
    runs += [{**_run("dfa", s, None), "final_test_bpc": v} for s, v in enumerate([3.0, 3.1, 3.2])]
    (pair,) = differences(runs)
    assert pair["difference"] == pytest.approx(-1.0) and pair["apart"] and pair["better"] and pair["a_ahead"] == 3


def test_results_md_carries_the_differences_of_the_grid(grid_dir):
    from dflearn.experiments import spread

    write_table(grid_dir)
    (pair,) = spread.write(grid_dir)
    accs = {rule: [json.loads((grid_dir / f"digits-mlp-noaug-lr0.001-{rule}-seed{s}" / "summary.json").read_text())
                   ["test_accuracy_at_val_best"] for s in range(3)] for rule in ("bp", "dfa")}
    expected = 100 * (statistics.fmean(accs["bp"]) - statistics.fmean(accs["dfa"]))
    bar = 200 * math.sqrt(statistics.variance(accs["bp"]) + statistics.variance(accs["dfa"]))
    assert pair["difference"] == pytest.approx(expected) and pair["bar"] == pytest.approx(bar)
    md = (grid_dir / "results.md").read_text()
    assert "## Differences between rules against the seeds' spread" in md and f"| {expected:+.2f} | {bar:.2f} |" in md


def _lr_probe():
    import importlib.util
    path = Path(__file__).parents[1] / "scripts" / "lr_probe.py"
    spec = importlib.util.spec_from_file_location("lr_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lr_probe_reports_the_training_loss_and_a_divergence(data_dir, monkeypatch):
    monkeypatch.setenv("DFLEARN_DATA_DIR", str(data_dir))
    probe = _lr_probe().probe
    calm = probe("dkp-cifar10", "dfa", 1e-6, "smoke", 10, None)
    means = [float(v) for v in calm.split("loss by 5 steps ")[1].split(" (")[0].split()]
    assert len(means) == 2 and all(abs(m - math.log(10)) < 0.3 for m in means), calm  # an untrained 10-way net
    assert re.fullmatch(r"dfa lr 1e\+06: diverged at step \d+", probe("dkp-cifar10", "dfa", 1e6, "smoke", 10, None))
    with pytest.raises(DflearnError, match="has no las run at seed 0; its rules are bp, dfa, dkp"):
        probe("dkp-cifar10", "las", 0.1, "smoke", 10, None)
