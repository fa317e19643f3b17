"""A run's whole configuration: plain data, saved as JSON beside the run."""
from __future__ import annotations

import dataclasses
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
    max_steps_per_epoch: int = 0  # stop an epoch after this many batches (0: the whole split); smoke tests
    precision: str = "fp32"  # fp32 | bf16 (autocast; see training/modes.py)
    compile: bool = False  # torch.compile the model in place
    # where and how, not what: free to differ on resume
    device: str = "auto"
    data_dir: str | None = None
    download: bool = False

    RUNTIME = ("epochs", "device", "data_dir", "download")  # may change when a run is resumed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise DflearnError(f"unknown configuration key(s) {sorted(unknown)}; valid keys: {', '.join(sorted(names))}")
        return cls(**d)

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
        # options in their declared types (-o last_bp=false is False), so config.json is canonical
        # (callables stay as the module:attribute strings that name them)
        c.rule_options = _named(check_rule_options(c.rule, dict(c.rule_options)), c.rule_options)
        c.model_options = _named(check_model_options(c.model, dict(c.model_options)), c.model_options)
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
        if not isinstance(c.compile, bool):
            raise DflearnError(f"compile must be true or false, got {c.compile!r}")
        if c.epochs < 1 or c.batch_size < 1:
            raise DflearnError("epochs and batch size must be at least 1")
        if c.max_steps_per_epoch < 0 or c.align_every < 0:
            raise DflearnError("max steps per epoch and align every must be 0 (off) or positive")
        return c

    def differences(self, other: "Config") -> list[str]:
        """Fields (other than the runtime ones) in which two configurations differ."""
        import json

        a, b = (json.loads(json.dumps(c.to_dict())) for c in (self, other))
        return [k for k in a if k not in self.RUNTIME and a[k] != b[k]]


def _named(checked: dict, given: dict) -> dict:
    return {k: given[k] if callable(v) else v for k, v in checked.items()}
