from ..feedback.rule import default_loss, optimizer_step
from .base import Rule, register_rule


@register_rule
class BP(Rule):
    """Backpropagation: nothing is cut, autograd carries the exact gradient everywhere.
    Its step is plain PyTorch (forward, loss.backward(), optimizer step), so its numbers
    are those of a PyTorch script, bitwise, and the baseline of every ratio is PyTorch's
    own. Works on any model, feedback points or not."""

    name = "bp"
    summary = "backpropagation: delta_i = (W_{i+1}^T delta_{i+1}) * f'(a_i)"

    def step(self, model, x, y, optimizer, feedback_optimizer=None, loss_fn=None, sync=None):
        optimizer.zero_grad(set_to_none=True)
        with self.forward_context(model):
            logits = model(x)
        loss = (loss_fn or default_loss)(logits, y)
        loss.backward()
        optimizer_step(optimizer, sync)
        return loss.detach(), logits.detach()
