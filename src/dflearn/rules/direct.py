"""What the direct rules share: one matrix B_i per cut point, from the output to the point.

`DirectRule` describes such feedback for the tools (angles with the forward path,
cost); `fixed_init` draws or derives a fixed B_i.
"""
from ..feedback.layout import forward_weight_product
from .base import Rule


class DirectRule(Rule):
    """Base of the rules whose feedback is one matrix B_i per cut point (DFA, DRTP, DKP,
    sparse DFA): `feedback` is their operator; its B_i are compared with the forward path
    (`feedback_pairs`) and costed (`feedback_cost`) here, once for all of them."""

    def feedback_pairs(self, model):
        return matrix_pairs(model, self.layout, dict(zip(self.feedback.points, self.feedback.matrices())))

    def feedback_cost(self, batch_size):
        """g_i = e B_i^T: N prod(S) n_i d_L MACs; block i holds and receives B_i and e."""
        rows = self.layout.rows(batch_size)
        d, out = self.layout.num_outputs, {}
        for i, B in zip(self.feedback.points, self.feedback.matrices()):
            out[self.layout.points[i].name] = {"signal": rows * B.numel(), "feedback_values": B.numel(),
                                               "received_errors": rows * d, "received_weights": B.numel()}
        return out


def matrix_pairs(model, layout, matrices: dict) -> list:
    """(point name, B_i, (W_L...W_{i+1})^T) where the layers above point i are all Linear."""
    products = forward_weight_product(model, layout, strict=False)
    return [(layout.points[i].name, B.detach(), products[i].t())
            for i, B in matrices.items() if products[i] is not None]


def fixed_init(init: str, model, layout, points):
    """'product' -> the transposed forward-weight products of the chosen points."""
    if init == "product":
        products = forward_weight_product(model, layout)
        return [products[i].t() for i in points]
    return init  # drawn (or refused, naming the choices) by DenseFeedback
