from typing import Literal

from ..feedback.operators import DenseFeedback
from .base import Pass, register_rule
from .direct import DirectRule, fixed_init


@register_rule
class DFA(DirectRule):
    """Direct Feedback Alignment (Nøkland 2016): g_i = e B_i^T, B_i fixed random.

    Options: `init` 'kaiming' (uniform, fan-in d_L), 'kaiming_n' (uniform, bound
    sqrt(6/n_i): what the DKP reference's kaiming_uniform_ on a (d_L, n_i) tensor
    draws, much smaller on a wide conv map) or 'product' (B_i from the
    initial forward weights above point i, the alignment experiment's init);
    `last_bp` gives the last hidden block the exact BP signal (off, as in the
    reference code, which sends B e to every block). Per position on sequence
    outputs: one B_i shared over positions, g[n, t] = e[n, t] B_i^T.
    """

    name = "dfa"
    summary = "direct feedback alignment: g_i = e B_i^T, B_i fixed random"

    def __init__(self, model, example_input, *, init: Literal["kaiming", "kaiming_n", "product", "zeros"] = "kaiming",
                 last_bp: bool = False):
        super().__init__(model, example_input)
        direct = self.cut_points(keep_last=last_bp)
        self.feedback = DenseFeedback(self.layout, direct, init=fixed_init(init, model, self.layout, direct))

    def signals(self, fwd: Pass):
        return self.on_cut_points(self.feedback.project(fwd.error))
