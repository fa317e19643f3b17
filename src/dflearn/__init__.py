"""dflearn: direct feedback learning rules for PyTorch.

    import dflearn
    summary = dflearn.fit(rule="las", dataset="digits", epochs=5)

or, step by step:

    model = dflearn.models.mlp((1, 28, 28), 10)
    rule = dflearn.make_rule("dfa", model, torch.zeros(1, 1, 28, 28))
    loss, logits = dflearn.train_step(model, rule, x, y, optimizer)
"""
from . import cost, data, models, rules
from .alignment import signal_alignment
from .data import load_dataset
from .errors import DflearnError
from .feedback import FeedbackPoint, feedback_report, mark, train_step
from .models import build_model
from .rules import RULES, Rule, make_rule, register_rule
from .training import Config, Trainer, fit

__version__ = "0.1.0"

__all__ = ["Config", "DflearnError", "FeedbackPoint", "RULES", "Rule", "Trainer", "build_model", "data",
           "feedback_report", "mark",
           "fit", "load_dataset", "make_rule", "models", "register_rule", "rules", "signal_alignment",
           "train_step"]
