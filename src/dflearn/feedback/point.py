"""The marker that says where a direct-feedback rule injects its signal."""
from torch import nn


class FeedbackPoint(nn.Identity):
    """Identity module placed at a block's output: a *feedback point*.

    Outside a training step it does nothing. During a step (see `Tape`) the
    engine records the tensor that passes through it and, for rules that cut
    the graph there, hands the layers above a detached copy, so autograd keeps
    exact BP inside the block and stops at its input.
    """
