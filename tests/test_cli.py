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
    out = tmp_path / "runs" / "digits-mlp-noaug-lr0.001-las-seed0"  # the name compare gives this run
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


def test_train_and_compare_name_a_run_alike(tmp_path):
    assert main(["train", "--rule", "dfa", "--epochs", "1", "--max-steps-per-epoch", "2", "--lr", "0.002", "-q"]) == 0
    assert main(["compare", "--rules", "dfa", "--seeds", "0", "--epochs", "1", "--max-steps-per-epoch", "2",
                 "--lr", "0.002", "-q", "--out", str(tmp_path / "grid")]) == 0
    trained = [p.name for p in (tmp_path / "runs").iterdir()]
    compared = [p.name for p in (tmp_path / "grid").iterdir() if p.is_dir()]
    assert trained == compared == ["digits-mlp-noaug-lr0.002-dfa-seed0"]


def test_version_and_rule_lists_in_one_syntax(capsys):
    import dflearn
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"dflearn {dflearn.__version__}"
    assert main(["cost", "--rules", "dfa,sdfa", "--brief"]) == 0
    new = capsys.readouterr()
    assert main(["cost", "--rule", "dfa", "--rule", "sdfa", "--brief"]) == 0  # the old spelling still works
    old = capsys.readouterr()
    assert old.out == new.out and "deprecated" in old.err and len(old.err.strip().splitlines()) == 1
    assert new.err == ""


def test_listings_say_what_users_need(capsys, monkeypatch, tmp_path):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "RULES.md" not in out and "seed 00" not in out and "Direct Feedback Learning With Local Alignment" in out
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    options = lines[lines.index(next(l for l in lines if l.startswith("conv3bn "))) + 1]
    assert "batchnorm (true or false) = True (preset)" in options  # not the builder's default False
    from dflearn.models.mlp import ACTIVATIONS
    mlp = lines[lines.index(next(l for l in lines if l.startswith("mlp "))) + 1]
    assert f"activation (one of {', '.join(ACTIVATIONS)}) = 'relu'" in mlp  # a Literal option lists its allowed values
    assert not any("seed 00" in l.lower() for l in lines)
    monkeypatch.setenv("DFLEARN_DATA_DIR", str(tmp_path / "empty"))
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index(next(l for l in lines if l.startswith("mnist"))) + 1].strip().startswith("not found")
    assert lines[lines.index(next(l for l in lines if l.startswith("digits"))) + 1].strip().startswith("present")


def test_rule_options_annotated_literal_list_their_values():
    from typing import Literal

    from dflearn.cli.info import _options
    from dflearn.rules import rule_options
    from dflearn.rules.dfa import DFA

    class Picky(DFA):  # as a rule (built-in or a plugin) declares a closed set of values
        def __init__(self, model, example_input, *, init: Literal["kaiming", "product", "zeros"] = "kaiming"):
            super().__init__(model, example_input, init=init)

    assert _options(Picky.__init__, rule_options(Picky)) == "init (one of kaiming, product, zeros) = 'kaiming'"


def test_compare_seed_is_that_one_seed(tmp_path):
    assert main(["compare", "--rules", "dfa", "--seed", "5", "--epochs", "1", "--max-steps-per-epoch", "2",
                 "-m", "widths=[8]", "-q", "--out", str(tmp_path / "g")]) == 0
    assert [p.name for p in (tmp_path / "g").iterdir() if p.is_dir()] == ["digits-mlp-noaug-lr0.001-dfa-seed5"]


def test_rules_lists_the_allowed_values_of_every_literal_option(capsys):
    import typing

    from dflearn.options import hints
    from dflearn.rules import RULES, rule_options

    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    found = 0
    for cls in RULES.values():
        for name, hint in hints(cls.__init__).items():
            if name in rule_options(cls) and typing.get_origin(hint) is typing.Literal:
                assert f"{name} (one of {', '.join(typing.get_args(hint))}) = " in out, (cls.name, name)
                found += 1
    assert found >= 5  # dfa, drtp, dkp, las, ltas: init
