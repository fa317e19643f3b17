"""--config FILE: the same run as the flags, a run's own config.json reruns it bitwise, typos refused."""
import json

import pytest
import torch

from dflearn.cli import main

FLAGS = ["--rule", "dfa", "-o", "init=product", "--model", "mlp", "-m", "widths=[32,16]", "--lr", "3e-4",
         "--batch-size", "32", "--epochs", "2", "--max-steps-per-epoch", "5", "--seed", "7", "-q"]


def test_yaml_file_and_flags_give_the_same_config_json(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "rule: dfa\nrule_options: {init: product}\nmodel: mlp\nmodel_options:\n  widths: [32, 16]\n"
        "lr: 3e-4\nbatch-size: 32\nepochs: 2\nmax_steps_per_epoch: 5\nseed: 7\n")  # 3e-4 is a string to YAML 1.1
    assert main(["train", *FLAGS, "--out", str(tmp_path / "flags")]) == 0
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "-q", "--out", str(tmp_path / "file")]) == 0
    flags, file = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("flags", "file"))
    assert file == flags and flags["rule_options"] == {"init": "product"} and flags["lr"] == 3e-4


def test_flags_override_the_file_and_print_config_shows_the_result(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"rule": "dfa", "lr": 0.01, "rule_options": {"init": "product"}}))
    assert main(["train", "--config", str(tmp_path / "run.json"), "--lr", "0.5", "-o", "init=zeros",
                 "--print-config"]) == 0
    import yaml
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["rule"] == "dfa" and printed["lr"] == 0.5 and printed["rule_options"] == {"init": "zeros"}
    assert printed["feedback_lr"] == 0.5  # resolved: the network's lr where the rule has no own default
    assert not (tmp_path / "runs").exists()


def test_a_run_started_from_another_runs_config_json_reproduces_it_bitwise(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    las = [a for a in FLAGS if a not in ("-o", "init=product")] + ["--rule", "las"]  # learned feedback too
    assert main(["train", *las, "--out", str(first)]) == 0
    assert main(["train", "--config", str(first / "config.json"), "-q", "--out", str(second)]) == 0
    assert (first / "config.json").read_text() == (second / "config.json").read_text()
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (first, second))
    for part in ("model", "rule"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]
    assert strip(a["history"]) == strip(b["history"])


@pytest.mark.parametrize("command, text, suggestion", [
    (["train"], "lrr: 0.1\n", "did you mean 'lr'?"),
    (["train"], "batchsize: 8\n", "did you mean 'batch_size'?"),
    (["compare", "--out", "g"], "rule_option: {k: 1}\n", "did you mean 'rule_options'?"),
    (["reproduce", "las-alignment"], "epoch: 1\n", "did you mean 'epochs'?"),
])
def test_unknown_key_is_one_line_with_the_nearest_name(tmp_path, capsys, command, text, suggestion):
    (tmp_path / "run.yaml").write_text(text)
    assert main([*command, "--config", str(tmp_path / "run.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dflearn: error: unknown key") and err.endswith(suggestion) and len(err.splitlines()) == 1


@pytest.mark.parametrize("text, message", [("[1, 2]\n", "must hold a mapping"), ("a: [1\n", "not valid YAML/JSON")])
def test_a_bad_file_is_one_line(tmp_path, capsys, text, message):
    (tmp_path / "run.yaml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_compare_reads_a_runs_config_json_as_that_rule_and_seed(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"rule": "bp", "seed": 4, "epochs": 1, "max_steps_per_epoch": 2}))
    assert main(["compare", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "g"), "-q"]) == 0
    runs = sorted(p.name for p in (tmp_path / "g").iterdir() if p.is_dir())
    assert len(runs) == 1 and runs[0].endswith("bp-seed4"), runs  # --seed 4 is one seed, not 0,1,2


@pytest.mark.parametrize("command", [["train", "--rule", "dfa", "-o", "init=product", "-m", "widths=[32,16]"],
                                     ["compare", "--rules", "bp,dfa", "--seed", "3", "--out", "g"],
                                     ["reproduce", "las-alignment", "--rules", "dfa,las"]])
def test_print_config_is_a_file_that_config_reads_back(tmp_path, capsys, command):
    assert main([*command, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert not printed.startswith("{") and len(printed.splitlines()) > 5  # one key per line
    (tmp_path / "printed.yaml").write_text(printed)
    assert main([command[0], "--config", str(tmp_path / "printed.yaml"), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize("name, command", [("dfa-mnist.yaml", "train"), ("fc-mnist-grid.yaml", "compare"),
                                           ("las-alignment-short.yaml", "reproduce")])
def test_the_example_config_files_are_read(capsys, name, command):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / name
    assert path.read_text().startswith(f"# dflearn {command} --config examples/configs/{name}")
    assert main([command, "--config", str(path), "--print-config"]) == 0
    printed = __import__("yaml").safe_load(capsys.readouterr().out)
    assert {"train": "rule", "compare": "rules", "reproduce": "name"}[command] in printed
