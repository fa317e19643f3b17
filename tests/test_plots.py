"""Plots worth looking at, checked on the Figure objects: every line visible, one colour per rule."""
import matplotlib.colors as mcolors
import pytest

import dflearn
from dflearn.experiments.plots import alignment_curves, learning_curves, load_runs, rule_style
from dflearn.rules import RULES

QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def one_epoch_runs(tmp_path_factory):
    """bp, dfa, las x seeds 0, 1: one epoch of 6 steps on digits, alignment every 2 steps."""
    root = tmp_path_factory.mktemp("runs")
    for rule in ("bp", "dfa", "las"):
        for seed in (0, 1):
            dflearn.fit(rule=rule, seed=seed, epochs=1, max_steps_per_epoch=6, align_every=2,
                        model_options={"widths": [16, 16]}, out=root / f"{rule}-{seed}", **QUIET)
    return load_runs([root])


def _rule_of(line):
    return line.get_gid().split(":", 1)[1].split(" ")[0].split("/")[-1].split("-")[0]


def test_a_one_epoch_run_draws_a_visible_marker_on_every_line(one_epoch_runs):
    for fig in (learning_curves(one_epoch_runs), alignment_curves(one_epoch_runs)):
        lines = [line for ax in fig.axes for line in ax.lines]
        assert lines
        for line in lines:
            assert line.get_marker() not in (None, "", "None", " ") and line.get_markersize() > 0
            assert len(line.get_xdata()) >= 1


def test_one_colour_per_rule_and_the_same_in_every_figure(one_epoch_runs):
    colours = {}
    figures = [learning_curves(one_epoch_runs), alignment_curves(one_epoch_runs),
               learning_curves([r for r in one_epoch_runs if r["config"]["rule"] == "las"])]  # las alone
    for fig in figures:
        for ax in fig.axes:
            for line in ax.lines:
                rule = _rule_of(line)
                colours.setdefault(rule, set()).add(mcolors.to_hex(line.get_color()))
    assert set(colours) >= {"bp", "dfa", "las"}
    assert all(len(c) == 1 for c in colours.values()), colours  # one colour per rule, in every figure
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # different rules, different colours


def test_every_registered_rule_has_its_own_colour():
    from dflearn.experiments.plots import EXTRA, STYLES

    builtin = [n for n, cls in RULES.items() if cls.__module__.startswith("dflearn.rules.")]
    assert set(builtin) <= set(STYLES), f"give {set(builtin) - set(STYLES)} a colour and marker in plots.STYLES"
    styles = {n: rule_style(n) for n in builtin}
    assert len({s["color"] for s in styles.values()}) == len(builtin)
    assert len({s["marker"] for s in styles.values()}) == len(builtin)  # told apart in greyscale too
    assert rule_style("mymodule:MyRule")["color"] in EXTRA  # a plugin never takes a built-in rule's colour
    assert rule_style("mymodule:MyRule") == rule_style("mymodule:MyRule")  # stable for any name


def test_axes_say_what_they_show(one_epoch_runs):
    fig = learning_curves(one_epoch_runs)
    acc, loss, val = fig.axes  # the runs hold out a validation split: its accuracy is the third panel
    assert "%" in acc.get_ylabel() and loss.get_yscale() == "log" and "validation" in val.get_ylabel()
    assert "validation-best" in acc.get_title()
    selected = [line for line in acc.lines if (line.get_gid() or "").startswith("selected:")]
    assert len(selected) == len(one_epoch_runs)  # one marker per run at its chosen epoch
    assert all(0 <= y <= 100 for line in acc.lines for y in line.get_ydata())
    assert "digits" in fig._suptitle.get_text() and "mlp" in fig._suptitle.get_text()
    assert "1 epoch" in fig._suptitle.get_text() and "2 seeds" in fig._suptitle.get_text()
    fig = alignment_curves(one_epoch_runs)
    assert [ax.get_title() for ax in fig.axes] == ["hidden block 1 (model[3])", "hidden block 2 (model[6])"]
    assert all(ax.get_ylabel() == "cosine, mean over samples" for ax in fig.axes)  # the default measure
    batch = [{**r, "config": {**r["config"], "align_measure": "batch"}} for r in one_epoch_runs]
    assert alignment_curves(batch).axes[0].get_ylabel() == "cosine over the whole batch"
    assert alignment_curves(one_epoch_runs, "update_alignment").axes[0].get_ylabel() == "cosine"


def test_alignment_is_drawn_per_measurement_with_mean_over_seeds(one_epoch_runs):
    fig = alignment_curves(one_epoch_runs)
    dfa = next(line for line in fig.axes[0].lines if line.get_gid() == "mean:dfa")
    assert list(dfa.get_xdata()) == [0, 2, 4]  # measured at steps 0, 2, 4 of the one epoch
    runs = [r for r in one_epoch_runs if r["config"]["rule"] == "dfa"]
    first = [r["rows"][0]["alignment_trace"][1]["alignment"][0] for r in runs]
    assert dfa.get_ydata()[1] == pytest.approx(sum(first) / 2)


def test_legend_names_the_values_that_vary(tmp_path):
    for lr in (1e-3, 1e-2):
        dflearn.fit(rule="dfa", lr=lr, epochs=1, max_steps_per_epoch=2, model_options={"widths": [8]},
                    out=tmp_path / f"lr{lr}", **QUIET)
    fig = learning_curves(load_runs([tmp_path]))
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == ["dfa lr=0.001", "dfa lr=0.01"]


def test_a_transfer_grids_legend_is_short_and_in_the_rules_order(tmp_path):
    from dflearn.experiments.grid import run_name
    from dflearn.training import Config

    kw = dict(epochs=1, max_steps_per_epoch=2, model_options={"widths": [8, 8]}, val_fraction=0.0)
    source = run_name(Config(rule="bp", **kw))
    dflearn.fit(rule="bp", out=tmp_path / source, **kw, **QUIET)
    dflearn.fit(rule="dfa", init_from=str(tmp_path / source), init_blocks=["3"], freeze=["3"], out=tmp_path / "t",
                **kw, **QUIET)
    fig = learning_curves(load_runs([tmp_path]))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [  # bp before dfa; the source by rule and seed
        "bp from=none copied=none frozen=none", "dfa from=bp-seed* copied=3 frozen=3"]  # its own seed's


def _with_rows(runs, rows_of):
    """Copies of runs whose epoch rows are replaced by rows_of(run)."""
    return [{**r, "rows": rows_of(r)} for r in runs]


def test_accuracy_by_rule_shows_the_validation_selected_epoch_per_seed_and_their_mean(one_epoch_runs):
    from dflearn.experiments.plots import accuracy_by_rule

    def rows(r):  # epoch 2 is best on validation, epoch 3 best on test: the figure must show epoch 2
        seed = r["config"]["seed"]
        return [{"epoch": 1, "val_acc": 0.1, "test_acc": 0.20 + seed / 100, "test_loss": 2.0},
                {"epoch": 2, "val_acc": 0.5, "test_acc": 0.30 + seed / 100, "test_loss": 1.5},
                {"epoch": 3, "val_acc": 0.4, "test_acc": 0.90, "test_loss": 1.0}]
    fig = accuracy_by_rule(_with_rows(one_epoch_runs, rows))
    (ax,) = fig.axes  # one data set and model: one panel
    lines = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    for r in one_epoch_runs:
        assert lines[f"run:{r['dir']}"].get_ydata()[0] == pytest.approx(30 + r["config"]["seed"])
    means = {gid: line for gid, line in lines.items() if gid.startswith("mean:")}
    assert set(means) == {"mean:bp", "mean:dfa", "mean:las"}
    assert all(line.get_ydata()[0] == pytest.approx(30.5) for line in means.values())  # seeds 0, 1: 30 and 31
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bp", "dfa", "las"]
    assert "validation-best" in fig._suptitle.get_text()


def test_accuracy_by_rule_without_a_validation_split_says_it_shows_the_paper_protocol(one_epoch_runs):
    from dflearn.experiments.plots import accuracy_by_rule

    rows = lambda r: [{"epoch": 1, "test_acc": 0.2, "test_loss": 2.0}, {"epoch": 2, "test_acc": 0.6, "test_loss": 1.0},
                      {"epoch": 3, "test_acc": 0.4, "test_loss": 1.2}]  # noqa: E731
    fig = accuracy_by_rule(_with_rows(one_epoch_runs, rows))
    mean = next(line for line in fig.axes[0].lines if line.get_gid() == "mean:bp")
    assert mean.get_ydata()[0] == pytest.approx(60.0)
    assert "paper protocol" in fig._suptitle.get_text()


def test_accuracy_by_rule_has_a_panel_per_data_set_and_model(one_epoch_runs):
    from dflearn.experiments.plots import accuracy_by_rule

    other = [{**r, "dir": r["dir"] + "-fashion", "config": {**r["config"], "dataset": "fashion"}} for r in one_epoch_runs]
    fig = accuracy_by_rule(one_epoch_runs + other)
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(
        f"{d} · {one_epoch_runs[0]['config']['model']}" for d in ("digits", "fashion"))
    four = [{**r, "dir": r["dir"] + f"-{d}", "config": {**r["config"], "dataset": d}}
            for d in ("a", "b", "c", "d") for r in one_epoch_runs]
    fig = accuracy_by_rule(four)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 4 and len({round(ax.get_position().y0, 3) for ax in shown}) == 2  # 2 x 2, not a strip
