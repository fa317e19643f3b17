from ..feedback.step import Pass
from .base import Rule, register_rule


@register_rule
class BP(Rule):
    """Backpropagation: nothing is cut, autograd carries the exact gradient everywhere."""

    name = "bp"
    summary = "backpropagation: delta_i = (W_{i+1}^T delta_{i+1}) * f'(a_i)"
    needs_points = False

    def __init__(self, model, example_input):
        super().__init__(model, example_input)
        self.cuts = [False] * len(self.cuts)

    def signals(self, fwd: Pass):
        return [None] * len(fwd.points)
