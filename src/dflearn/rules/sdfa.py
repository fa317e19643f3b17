from ..feedback.operators import SparseFeedback
from ..feedback.step import Pass
from .base import Rule, register_rule


@register_rule
class SparseDFA(Rule):
    """Sparse DFA (Crafton et al. 2019): each hidden unit receives exactly k of the
    d_L errors (k=1: one scalar per unit), through random signed weights.
    Optional `rank` gives the non-zeros a rank-r structure."""

    name = "sdfa"
    summary = "sparse DFA: g_i = e B_i^T, B_i with exactly k non-zeros per unit (gathered)"

    def __init__(self, model, example_input, *, k: int = 1, rank: int | None = None, last_bp: bool = False):
        super().__init__(model, example_input)
        if last_bp:
            self.cuts[self.last] = False
        direct = [i for i, cut in enumerate(self.cuts) if cut]
        self.feedback = SparseFeedback(self.layout, direct, k=k, rank=rank)

    def signals(self, fwd: Pass):
        return self.on_cut_points(self.feedback.project(fwd.error))
