"""A run's whole configuration: plain data, saved as JSON beside the run."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import DflearnError


@dataclass
class Config:
    rule: str = "las"
    rule_options: dict[str, Any] = field(default_factory=dict)
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    augment: str | None = None  # e.g. 'flip'
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False
    schedule: str = "none"  # none | paper (x0.25 at 50/75/89/94% of epochs) | exp (x gamma per epoch)
    gamma: float = 0.8  # for schedule 'exp'
    # learned feedback (LAS/LTAS local modules, DKP matrices): None = the rule's default, else the network's
    feedback_optimizer: str | None = None
    feedback_lr: float | None = None
    feedback_weight_decay: float | None = None
    feedback_schedule: str | None = None
    feedback_gamma: float | None = None
    seed: int = 0
    align_every: int = 0  # measure alignment with BP every K steps (0: never)
    # signal alignment per sample (mean and std over the batch's samples) or per batch (one cosine
    # over the flattened batch): alignment.MEASURES
    align_measure: str = "sample"
    max_steps_per_epoch: int = 0  # stop an epoch after this many batches (0: the whole split); smoke tests
    precision: str = "fp32"  # fp32 | bf16 (autocast; see training/modes.py)
    compile: bool = False  # torch.compile the model in place
    # validation split and transfer (training/selection.py, training/transfer.py)
    val_fraction: float = 0.1  # of the training split, held out with a fixed seed (data/split.py); 0: none
    init_from: str | None = None  # a run directory or checkpoint: start from its model weights
    init_blocks: list[str] = field(default_factory=list)  # with init_from: only these blocks (empty: all)
    init_feedback: bool = False  # with init_from: also the rule's feedback state
    freeze: list[str] = field(default_factory=list)  # feedback points or modules whose parameters stay fixed
    # where and how, not what: free to differ on resume
    device: str = "auto"
    data_dir: str | None = None
    download: bool = False
    # CPU threads (0: torch's default, recorded as the number it is): results are reproducible at a
    # fixed thread count, not across counts (reductions split differently)
    threads: int = 0
    versions: dict[str, str] = field(default_factory=dict)  # filled in: torch, dflearn, python (a record)

    RUNTIME = ("epochs", "device", "data_dir", "download", "threads", "versions")  # may change on resume

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise DflearnError(f"unknown configuration key(s) {sorted(unknown)}; valid keys: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def from_saved(cls, d: dict) -> "Config":
        """A configuration read back from a run directory (config.json, a checkpoint): a field
        added since the run was made takes the value that run had, not today's default."""
        before = {"val_fraction": 0.0}  # a run from before the validation split had none
        if d.get("align_every"):  # one from before per-sample alignment measured over the whole batch
            before["align_measure"] = "batch"
        return cls.from_dict({**before, **d})

    def resolved(self) -> "Config":
        """Fill the feedback settings left to defaults: the rule's own, else the network's."""
        from ..plugins import find_rule
        from ..rules import RULES

        find_rule(self.rule)
        if self.rule not in RULES:
            raise DflearnError(f"unknown rule '{self.rule}'; choose one of: {', '.join(sorted(RULES))}")
        from ..models.base import check_model_options
        from ..rules.base import check_rule_options

        d = RULES[self.rule].feedback_defaults
        c = dataclasses.replace(self)
        c.feedback_optimizer = c.feedback_optimizer or d.get("optimizer", c.optimizer)
        c.feedback_lr = c.feedback_lr if c.feedback_lr is not None else d.get("lr", c.lr)
        if c.feedback_weight_decay is None:
            c.feedback_weight_decay = d.get("weight_decay", c.weight_decay)
        if c.feedback_gamma is None:
            c.feedback_gamma = d.get("gamma", c.gamma)
        c.feedback_schedule = c.feedback_schedule or ("exp" if "gamma" in d else c.schedule)
        for name in ("optimizer", "feedback_optimizer"):
            if getattr(c, name) not in ("adam", "sgd"):
                raise DflearnError(f"unknown {name.replace('_', ' ')} '{getattr(c, name)}'; choose adam or sgd")
        for name in ("schedule", "feedback_schedule"):
            if getattr(c, name) not in ("none", "paper", "exp"):
                raise DflearnError(f"unknown {name.replace('_', ' ')} '{getattr(c, name)}'; choose none, paper or exp")
        if c.precision not in ("fp32", "bf16"):
            raise DflearnError(f"unknown precision '{c.precision}'; choose fp32 or bf16")
        from ..alignment import check_measure
        check_measure(c.align_measure)
        if not isinstance(c.compile, bool):
            raise DflearnError(f"compile must be true or false, got {c.compile!r}")
        _check_values(c)
        # options in their declared types (-o last_bp=false is False), so config.json is canonical
        # (callables stay as the module:attribute strings that name them)
        c.rule_options = _named(check_rule_options(c.rule, dict(c.rule_options)), c.rule_options)
        c.model_options = _named(check_model_options(c.model, dict(c.model_options)), c.model_options)
        if not c.threads:
            import torch
            c.threads = torch.get_num_threads()
        if not c.versions:
            c.versions = _versions()
        from .transfer import check_config
        check_config(c)  # validation split and transfer fields (training/transfer.py)
        return c

    def differences(self, other: "Config") -> list[str]:
        """Fields (other than the runtime ones) in which two configurations differ."""
        import json

        a, b = (json.loads(json.dumps(c.to_dict())) for c in (self, other))
        return [k for k in a if k not in self.RUNTIME and a[k] != b[k]]


def _named(checked: dict, given: dict) -> dict:
    return {k: given[k] if callable(v) else v for k, v in checked.items()}


def _versions() -> dict[str, str]:
    import platform

    import torch

    from .. import __version__
    return {"dflearn": str(__version__), "torch": str(torch.__version__), "python": platform.python_version()}


INTS = {"epochs": 1, "batch_size": 1, "max_steps_per_epoch": 0, "align_every": 0, "threads": 0, "seed": 0}
BOOLS = ("nesterov", "compile", "download")
STRINGS = ("rule", "model", "dataset", "optimizer", "schedule", "precision", "device", "feedback_optimizer",
           "feedback_schedule")
OPTIONAL_STRINGS = ("augment", "data_dir")
MAPPINGS = ("rule_options", "model_options", "versions")
FLAG = {"max_steps_per_epoch": "max-steps-per-epoch", "align_every": "align-every", "batch_size": "batch-size",
        "weight_decay": "weight-decay", "feedback_lr": "feedback-lr", "feedback_weight_decay": "feedback-weight-decay",
        "feedback_gamma": "feedback-gamma"}


def _name(key: str) -> str:
    return "--" + FLAG.get(key, key.replace("_", "-"))


def _check_values(c: Config) -> None:
    """Types and ranges of every field, for the CLI and the API alike: one line naming the option."""
    for key, low in INTS.items():
        v = getattr(c, key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise DflearnError(f"{_name(key)} must be a whole number, got {v!r}")
        if v < low:
            what = "at least 1" if low == 1 else "0 (off) or positive" if key in ("max_steps_per_epoch", "align_every") \
                else "0 or positive" if key == "seed" else "0 (torch's default) or positive"
            raise DflearnError(f"{_name(key)} must be {what}, got {v}")
    for key in BOOLS:
        if not isinstance(getattr(c, key), bool):
            raise DflearnError(f"{key} must be true or false, got {getattr(c, key)!r}")
    for key in STRINGS:
        if not isinstance(getattr(c, key), str) or not getattr(c, key):
            raise DflearnError(f"{_name(key)} must be a non-empty name, got {getattr(c, key)!r}")
    for key in OPTIONAL_STRINGS:
        if getattr(c, key) is not None and not isinstance(getattr(c, key), str):
            raise DflearnError(f"{_name(key)} must be a string, got {getattr(c, key)!r}")
    for key in MAPPINGS:
        if not isinstance(getattr(c, key), dict):
            raise DflearnError(f"{key} must be a mapping of names to values, got {getattr(c, key)!r}")
    # rates: finite and positive (a rate of 0 trains nothing; learned feedback may be frozen with 0);
    # decays and momentum: finite, not negative (momentum below 1: at 1 or more SGD's velocity never decays)
    checks = (("lr", 0.0, False), ("feedback_lr", 0.0, True), ("weight_decay", 0.0, True),
              ("feedback_weight_decay", 0.0, True), ("momentum", 0.0, True), ("gamma", 0.0, False),
              ("feedback_gamma", 0.0, False))
    for key, low, inclusive in checks:
        v = getattr(c, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DflearnError(f"{_name(key)} must be a number, got {v!r}")
        if not math.isfinite(v) or v < low or (v == low and not inclusive):
            bound = "0 or more" if inclusive else "more than 0"
            raise DflearnError(f"{_name(key)} must be a finite number, {bound}; got {v!r}")
    if c.momentum >= 1:
        raise DflearnError(f"--momentum must be below 1 (SGD's velocity would never decay), got {c.momentum!r}")
