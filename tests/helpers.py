"""Small nets and batches shared by the tests."""
import torch
import torch.nn.functional as F

import dflearn


def small_mlp(widths=(16, 12, 8), activation="relu", inputs=10, outputs=5, bias=True):
    net = dflearn.models.mlp((1, 1, inputs), outputs, widths=widths, activation=activation)
    if not bias:
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.Linear):
                    m.bias.zero_()
    return net


def batch(n=7, inputs=10, outputs=5):
    return torch.randn(n, 1, 1, inputs), torch.randint(0, outputs, (n,))


def grads_of(model):
    return {k: (None if p.grad is None else p.grad.clone()) for k, p in model.named_parameters()}


def autograd_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return grads_of(model)


def rule_grads(model, rule, x, y):
    """Parameter gradients that train_step would apply (SGD lr 0 so nothing moves)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    dflearn.train_step(model, rule, x, y, opt)
    return grads_of(model)


def linears(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
