import torch
import torch.nn.functional as F

from ..feedback.rule import default_loss
from .base import Pass, register_rule
from .las import LAS


@register_rule
class LTAS(LAS):
    """Local Target Alignment Support (seed 001, Algorithm 2): as LAS, but each
    local module learns to predict the target: CE(softmax(M_i h_i), y), gradient
    h_i^T (softmax(y_i) - onehot(y)) / N (mean over positions too). The signal is the
    same VJP of the updated M_i."""

    name = "ltas"
    summary = "local target alignment support: as LAS with M_i trained on CE(softmax(M_i h_i), y)"

    def local_loss(self, y_i: torch.Tensor, fwd: Pass) -> torch.Tensor:
        return default_loss(y_i, fwd.target)

    def local_error(self, y_rows: torch.Tensor, fwd: Pass) -> torch.Tensor:
        """d CE / d y_i per row: (softmax(y_i) - onehot(y)) / rows."""
        onehot = F.one_hot(fwd.target.reshape(-1), y_rows.shape[-1]).to(y_rows.dtype)
        return (y_rows.softmax(-1) - onehot) / len(y_rows)
