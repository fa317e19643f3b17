"""The user's own model and rule, from a module of theirs or an installed plugin, everywhere."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import dflearn
from dflearn.cli import main

USER_CODE = textwrap.dedent('''
    import torch
    from torch import nn
    import dflearn
    from dflearn.rules.dfa import DFA

    def wide(input_shape, num_classes, width=40):
        """The user's two-block MLP."""
        n = 1
        for s in input_shape:
            n *= s
        return nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.Tanh(), dflearn.FeedbackPoint(),
                             nn.Linear(width, width), nn.Tanh(), dflearn.FeedbackPoint(),
                             nn.Linear(width, num_classes))

    class HalfDFA(DFA):
        """DFA with half the signal; the buffer shows in the checkpoint that this class ran."""
        name = "halfdfa"

        def __init__(self, model, example_input):
            super().__init__(model, example_input)
            self.register_buffer("user_marker", torch.tensor(42.0))

        def signals(self, fwd):
            return [None if g is None else 0.5 * g for g in super().signals(fwd)]
''')


def dflearn_cli(*args, cwd, pythonpath=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "dflearn", *args], capture_output=True, text=True, cwd=cwd, env=env)


def check_run(out, width=40):
    config = json.loads((out / "config.json").read_text())
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model"]["1.weight"].shape == (width, 64)  # the user's model, with the user's option
    assert float(state["rule"]["user_marker"]) == 42.0  # the user's rule
    return config, json.loads((out / "summary.json").read_text())


SHORT = ["--epochs", "1", "--max-steps-per-epoch", "6", "-q"]


def test_module_function_and_class_train_from_the_cli(tmp_path):
    (tmp_path / "mynets.py").write_text(USER_CODE)  # in the current directory, as a user's file would be
    r = dflearn_cli("train", "--model", "mynets:wide", "-m", "width=24", "--rule", "mynets:HalfDFA",
                    "--epochs", "3", "--lr", "1e-2", "-q", "--out", "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    config, summary = check_run(tmp_path / "run", width=24)
    assert config["model"] == "mynets:wide" and config["rule"] == "mynets:HalfDFA"
    assert summary["best_test_accuracy"] > 0.8  # it learns (chance: 0.1; measured 0.91)


def test_user_code_in_compare_with_worker_processes(tmp_path):
    (tmp_path / "mynets.py").write_text(USER_CODE)
    r = dflearn_cli("compare", "--rules", "mynets:HalfDFA", "--models", "mynets:wide", "--seeds", "0,1",
                    "--jobs", "2", *SHORT, "--out", "grid", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = [p for p in (tmp_path / "grid").iterdir() if (p / "config.json").exists()]
    assert len(runs) == 2
    for out in runs:
        check_run(out)


def test_user_code_under_nproc_2(tmp_path):
    (tmp_path / "mynets.py").write_text(USER_CODE)
    r = dflearn_cli("train", "--model", "mynets:wide", "--rule", "mynets:HalfDFA", "--nproc", "2", *SHORT,
                    "--out", "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    check_run(tmp_path / "run")


def test_user_code_in_cost_and_reproduce(tmp_path, capsys, data_dir):
    (tmp_path / "mynets_rc.py").write_text(USER_CODE)  # cwd is tmp_path: importable as ./mynets_rc.py
    assert main(["cost", "--model", "mynets_rc:wide", "--rules", "dfa,mynets_rc:HalfDFA", "--brief"]) == 0
    assert "| mynets_rc:HalfDFA " in capsys.readouterr().out
    assert main(["reproduce", "las-alignment", "--budget", "smoke", "--rules", "dfa,mynets_rc:HalfDFA",
                 "--max-steps-per-epoch", "2", "--data-dir", str(data_dir), "-q", "--out", str(tmp_path / "g")]) == 0
    runs = sorted(p.name for p in (tmp_path / "g").iterdir() if (p / "summary.json").exists())
    assert len(runs) == 2 and "-dfa_init=product_-" in runs[0], runs  # the preset's dfa keeps its options
    assert runs[1].endswith("mynets_rc_HalfDFA-seed0")
    assert json.loads((tmp_path / "g" / runs[1] / "config.json").read_text())["rule"] == "mynets_rc:HalfDFA"


PLUGIN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "dflearn-myplug"
version = "0.1"

[tool.setuptools]
py-modules = ["dflearn_myplug"]

[project.entry-points."dflearn.models"]
plugwide = "dflearn_myplug:wide"

[project.entry-points."dflearn.rules"]
plughalf = "dflearn_myplug:HalfDFA"
"""


@pytest.fixture
def installed_plugin(tmp_path):
    """A test package 'dflearn-myplug' declaring the entry points in its pyproject.toml, installed by pip
    into tmp_path/site (offline: no index, no build isolation). Where this environment cannot build a
    wheel offline (no setuptools, or one older than 70.1 without the wheel package), the dist-info pip
    would leave is written by hand."""
    import importlib.metadata
    import importlib.util
    import re

    site, source = tmp_path / "site", tmp_path / "dflearn-myplug"
    source.mkdir()
    (source / "dflearn_myplug.py").write_text(USER_CODE)
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    try:
        version = tuple(int(x) for x in re.findall(r"\d+", importlib.metadata.version("setuptools"))[:2])
    except importlib.metadata.PackageNotFoundError:
        version = (0, 0)
    if version >= (64, 0) and (version >= (70, 1) or importlib.util.find_spec("wheel")):
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                            "--no-build-isolation", "--target", str(site), str(source)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    else:
        info = site / "dflearn_myplug-0.1.dist-info"
        info.mkdir(parents=True)
        (site / "dflearn_myplug.py").write_text(USER_CODE)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dflearn-myplug\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(
            "[dflearn.models]\nplugwide = dflearn_myplug:wide\n\n[dflearn.rules]\nplughalf = dflearn_myplug:HalfDFA\n")
    assert list(site.glob("dflearn_myplug-0.1.dist-info/entry_points.txt"))
    (tmp_path / "work").mkdir()
    return site, tmp_path / "work"


def test_an_installed_plugin_registers_itself(installed_plugin):
    site, work = installed_plugin
    listed = dflearn_cli("models", cwd=work, pythonpath=[site]).stdout + dflearn_cli("rules", cwd=work, pythonpath=[site]).stdout
    assert "plugwide" in listed and "The user's two-block MLP" in listed and "plughalf" in listed
    r = dflearn_cli("train", "--model", "plugwide", "--rule", "plughalf", *SHORT, "--out", "run", cwd=work,
                    pythonpath=[site])
    assert r.returncode == 0, r.stderr
    config, _ = check_run(work / "run")
    assert (config["model"], config["rule"]) == ("plugwide", "plughalf")
    r = dflearn_cli("compare", "--rules", "bp,plughalf", "--models", "plugwide", "--seeds", "0", *SHORT,
                    "--out", "grid", cwd=work, pythonpath=[site])
    assert r.returncode == 0, r.stderr
    assert len([p for p in (work / "grid").iterdir() if (p / "config.json").exists()]) == 2
    r = dflearn_cli("train", "--model", "plugwide", "--rule", "plughalf", "--nproc", "2", *SHORT, "--out", "ddp",
                    cwd=work, pythonpath=[site])
    assert r.returncode == 0, r.stderr
    check_run(work / "ddp")


@pytest.mark.parametrize("name, message", [
    ("nomodule_xyz:f", "cannot import module 'nomodule_xyz'"),
    ("dflearn.models.mlp:nope", "module 'dflearn.models.mlp' has no 'nope'"),
])
def test_a_bad_module_name_is_one_line(tmp_path, capsys, name, message):
    assert main(["train", "--model", name, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _two_block(width=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), dflearn.FeedbackPoint(),
                         nn.Linear(width, 10))


def test_fit_takes_a_module_and_a_rule_class_or_instance(tmp_path):
    from dflearn.rules.dfa import DFA

    class Doubled(DFA):
        name = "doubled-test"

    torch.manual_seed(0)
    a = dflearn.fit(model=_two_block(), rule=Doubled, epochs=1, max_steps_per_epoch=3, out=tmp_path / "a",
                    progress=False, log=lambda *_: None)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["rule"] == "doubled-test" and config["model"].endswith(":Sequential")
    torch.manual_seed(0)
    model = _two_block()
    rule = DFA(model, torch.zeros(1, 1, 8, 8))
    dflearn.fit(model=model, rule=rule, epochs=1, max_steps_per_epoch=3, out=tmp_path / "b", progress=False,
                log=lambda *_: None)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["rule"] == "dflearn.rules.dfa:DFA"
    trained = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(trained["1.weight"], model.state_dict()["1.weight"])  # this very module was trained
    assert a["epochs"] == 1


def test_fit_refuses_a_non_model_in_one_line(tmp_path):
    with pytest.raises(dflearn.DflearnError) as e:
        dflearn.fit(model=[1, 2, 3], out=tmp_path / "x")
    assert "model must be a name" in str(e.value) and len(str(e.value).splitlines()) == 1
