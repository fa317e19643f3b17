"""The engine: feedback points, the graph cut between blocks, and the training step.

A model marks block outputs with `FeedbackPoint`. A rule, built once from the
model's `Layout`, says which points are cut and what signal each cut point
receives; `train_step` does one forward pass, asks the rule for its signals,
and runs a single backward that is exact BP inside every block and the head.
"""
from .layout import Layout, Point, forward_weight_product, probe
from .mark import feedback_report, mark
from .point import FeedbackPoint
from .step import Pass, forward, train_step
from .tape import Tape, recording

__all__ = ["FeedbackPoint", "Layout", "Pass", "Point", "Tape", "forward", "forward_weight_product",
           "feedback_report", "mark", "probe", "recording", "train_step"]
