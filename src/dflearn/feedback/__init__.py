"""The engine: feedback points, the graph cut between blocks, the rule contract and the step.

A model marks block outputs with `FeedbackPoint`. A rule (`rule.Rule`), built once
from the model's `Layout`, owns its training step: for most rules one forward pass
with the graph cut at the points, the rule's signal injected at each, and a single
backward that is exact BP inside every block and the head. `train_step` calls it.
"""
from .layout import Layout, Point, forward_weight_product, probe
from .mark import feedback_report, mark
from .point import FeedbackPoint
from .rule import Pass, Rule, default_loss, output_error
from .step import forward, train_step
from .tape import Tape, recording

__all__ = ["FeedbackPoint", "Layout", "Pass", "Point", "Rule", "Tape", "default_loss", "forward",
           "forward_weight_product", "feedback_report", "mark", "output_error", "probe", "recording",
           "train_step"]
