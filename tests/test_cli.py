"""The command line: a readable result, and one-line errors with a non-zero exit."""
import json
import subprocess
import sys

import pytest

from dflearn.cli import main


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dflearn", *args], capture_output=True, text=True, cwd=cwd)


def test_default_train_runs_on_digits_and_reports(tmp_path):
    r = run("train", "--epochs", "2", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "las · mlp · digits: test accuracy" in r.stdout
    out = tmp_path / "runs" / "digits-mlp-las-seed0"
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("args, message", [
    (["train", "--rule", "nope"], "unknown rule 'nope'; choose one of: bp, "),
    (["train", "--model", "nope"], "unknown model 'nope'; choose one of: "),
    (["train", "--dataset", "nope"], "unknown dataset 'nope'; choose one of: "),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent"], "mnist not found: put"),
    (["train", "-o", "kk=1", "--rule", "sdfa"], "rule 'sdfa' has no option 'kk'"),
    (["train", "--resume", "/nonexistent"], "holds no run"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, args, message):
    assert main(args + ["--out", str(tmp_path / "r")] if "--resume" not in args else args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dflearn: error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_model_option_value_is_one_line(tmp_path, capsys):
    assert main(["train", "--model", "mlp", "-m", "widths=[8,-1]", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dflearn: error: model 'mlp' cannot be built") and len(err.splitlines()) == 1


def test_model_data_shape_mismatch_is_named():
    import torch

    import dflearn

    net = dflearn.models.mlp((1, 8, 8), 10)  # built for digits, given MNIST-sized input
    with pytest.raises(dflearn.DflearnError, match=r"cannot run on input of shape \(1, 28, 28\).*model and data set"):
        dflearn.make_rule("dfa", net, torch.zeros(1, 1, 28, 28))


def test_resume_another_configuration_via_cli(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "-q", "--out", str(tmp_path / "r"), "-m", "widths=[16]"]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--rule", "dfa"]) == 1
    assert "another configuration (rule: 'las' in the run vs 'dfa' asked)" in capsys.readouterr().err


def test_help_of_every_command():
    r = run("--help")
    assert r.returncode == 0
    for command in ("train", "rules", "models", "datasets", "compare", "plot", "reproduce", "cost"):
        assert command in r.stdout
        sub = run(command, "--help")
        assert sub.returncode == 0 and "usage: dflearn " + command in sub.stdout


def test_rules_lists_every_rule_with_its_maths(capsys):
    import dflearn

    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for name, cls in dflearn.RULES.items():
        assert f"{name} " in out and cls.summary in out
