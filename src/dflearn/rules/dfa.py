from ..feedback.layout import forward_weight_product
from ..errors import DflearnError
from ..feedback.operators import DenseFeedback
from ..feedback.step import Pass
from .base import Rule, register_rule


@register_rule
class DFA(Rule):
    """Direct Feedback Alignment (Nøkland 2016): g_i = e B_i^T, B_i fixed random.

    Options: `init` 'kaiming' (uniform, fan-in d_L) or 'product' (B_i from the
    initial forward weights above point i, the alignment experiment's init);
    `last_bp` gives the last hidden block the exact BP signal (off, as in the
    reference code, which sends B e to every block).
    """

    name = "dfa"
    summary = "direct feedback alignment: g_i = e B_i^T, B_i fixed random"

    def __init__(self, model, example_input, *, init: str = "kaiming", last_bp: bool = False):
        super().__init__(model, example_input)
        if last_bp:
            self.cuts[self.last] = False
        direct = [i for i, cut in enumerate(self.cuts) if cut]
        self.feedback = DenseFeedback(self.layout, direct, init=fixed_init(init, model, self.layout, direct))

    def signals(self, fwd: Pass):
        return self.on_cut_points(self.feedback.project(fwd.error))


def fixed_init(init: str, model, layout, points):
    """'product' -> the transposed forward-weight products of the chosen points."""
    if init == "product":
        products = forward_weight_product(model, layout)
        return [products[i].t() for i in points]
    if init not in ("kaiming", "zeros"):
        raise DflearnError(f"unknown feedback init '{init}'; choose kaiming, product or zeros")
    return init
