from ..feedback.operators import SparseFeedback
from .base import Pass, register_rule
from .direct import DirectRule


@register_rule
class SparseDFA(DirectRule):
    """Sparse DFA (Crafton et al. 2019): each hidden unit receives exactly k of the
    d_L errors (k=1: one scalar per unit), through random signed weights.
    Optional `rank` gives the non-zeros a rank-r structure. Per position on
    sequence outputs (each unit gathers its k errors at its own position)."""

    name = "sdfa"
    summary = "sparse DFA: g_i = e B_i^T, B_i with exactly k non-zeros per unit (gathered)"

    def __init__(self, model, example_input, *, k: int = 1, rank: int | None = None, last_bp: bool = False):
        super().__init__(model, example_input)
        direct = self.cut_points(keep_last=last_bp)
        self.feedback = SparseFeedback(self.layout, direct, k=k, rank=rank)

    def signals(self, fwd: Pass):
        return self.on_cut_points(self.feedback.project(fwd.error))

    def feedback_cost(self, batch_size):
        """Gather k errors per unit: N prod(S) n_i k MACs; values and int32 indices held."""
        rows = self.layout.rows(batch_size)
        sizes = [self.layout.points[i].features for i in self.feedback.points]
        out = {}
        for i, index in zip(self.feedback.points, self.feedback.index.split(sizes)):
            out[self.layout.points[i].name] = {
                "signal": rows * index.numel(), "feedback_values": index.numel(), "feedback_indices": index.numel(),
                "received_errors": rows * index.unique().numel(), "received_weights": index.numel(),
                "received_indices": index.numel()}
        return out
