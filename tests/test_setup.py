"""The README's set-up commands are the ones CI runs (.ci/run), and the torch requirement is a floor."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    """The indented command lines of the README's Set-up section."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Set-up.*?(?=^## )", text, re.S | re.M)
    assert section, "README has no '## Set-up' section"
    return [line.strip() for line in section.group(0).splitlines()
            if line.startswith("    ") and re.match(r"\s+(pip|python|\.|[A-Z_]+=)", line)]


def normalise(command: str) -> list[str]:
    """One simple command as tokens, with spellings that do the same thing made equal:
    'python3 -m pip' = 'pip', 'python3' = 'python', pip's -q dropped, comments and VAR=value prefixes dropped."""
    tokens = shlex.split(command, comments=True)
    while tokens and re.fullmatch(r"[A-Z_]+=.*", tokens[0]):
        tokens.pop(0)
    if tokens[:1] == ["python3"]:
        tokens[0] = "python"
    if tokens[:3] == ["python", "-m", "pip"]:
        tokens = ["pip"] + tokens[3:]
    if tokens[:1] == ["pip"]:
        tokens = [t for t in tokens if t != "-q"]
    return tokens


def simple_commands(lines) -> list[list[str]]:
    return [normalise(part) for line in lines for part in line.split("&&") if normalise(part)]


def ci_commands() -> list[list[str]]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return simple_commands(l for l in lines if l and not l.startswith(("#", "set ", "cd ", "export ")))


def test_ci_runs_the_readme_install_and_test_commands():
    readme = setup_commands()
    test_lines = [l for l in readme if "pytest" in l and "not slow" not in l]
    assert len(test_lines) == 1, test_lines
    wanted = simple_commands(test_lines)  # e.g. [pip install -e .[test]], [python -m pytest -q]
    ci = ci_commands()
    position = 0
    for command in wanted:  # in the README's order, each one in .ci/run
        assert command in ci[position:], f"README's {' '.join(command)!r} is not run by .ci/run: {ci}"
        position = ci.index(command, position) + 1
    assert ci[-1] == wanted[-1], "CI must end with the README's test command"


def test_readme_offers_a_cpu_wheel_and_ci_never_uses_the_pytorch_index():
    readme = " ".join(setup_commands())
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert "venv" in readme
    section = re.search(r"^## Set-up.*?(?=^## )", (ROOT / "README.md").read_text(), re.S | re.M).group(0)
    assert re.search(r"GPU: pip install torch\s*$", section, re.M), "the ordinary wheel where there is a GPU"
    assert ["dflearn", "train"] in simple_commands(setup_commands())  # the main job: a short run on digits
    assert "download.pytorch.org" not in (ROOT / ".ci" / "run").read_text()
    assert ["pip", "install", "torch==2.13.0"] in ci_commands()


def test_torch_requirement_is_a_floor_that_the_tested_version_meets():
    requirements = pytest.importorskip("packaging.requirements")
    text = (ROOT / "pyproject.toml").read_text()
    spec = re.search(r'"(torch[^"]*)"', text).group(1)
    req = requirements.Requirement(spec)
    assert req.specifier.contains("2.13.0") and req.specifier.contains("3.0.0"), spec
    assert not any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), spec
