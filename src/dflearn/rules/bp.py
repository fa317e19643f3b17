from .base import Rule, register_rule


@register_rule
class BP(Rule):
    """Backpropagation: nothing is cut, autograd carries the exact gradient everywhere
    (the base step, with no signals). Works on any model, feedback points or not."""

    name = "bp"
    summary = "backpropagation: delta_i = (W_{i+1}^T delta_{i+1}) * f'(a_i)"
