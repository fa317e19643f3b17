"""How the arithmetic runs, beside what it computes: `precision` and `compile`.

- `precision="bf16"`: the training step and the evaluation run under
  `torch.autocast(device, bfloat16)`. Matmuls and convolutions (the rules' feedback
  projections included) compute in bfloat16; the loss, the error e and every
  parameter, gradient and optimizer state stay float32, so checkpoints and resume
  are the same as in fp32. Default `fp32`: autocast off.
- `compile=True`: `nn.Module.compile()` (torch.compile in place, so parameter names
  and checkpoints are unchanged). On CPU it needs a C++ compiler.

Both change the numbers a run produces, so both are part of a run's configuration
(a resume keeps them); a run resumed in the same mode equals the uninterrupted one.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_model(model: nn.Module) -> nn.Module:
    model.compile()
    return model
