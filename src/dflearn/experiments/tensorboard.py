"""Optional TensorBoard logging: scalars per epoch and per alignment measurement.

TensorBoard is not a dependency of dflearn: `pip install tensorboard` (or
`pip install dflearn[tensorboard]`) to use it; without it `--tensorboard`
fails at once with a one-line message instead of after training.
"""
from __future__ import annotations

import math

from ..errors import DflearnError


class TensorBoard:
    """A Trainer observer writing event files into RUN_DIR/tensorboard."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DflearnError("--tensorboard needs the tensorboard package: pip install tensorboard "
                               "(it does not change torch)") from None
        self._make, self.writer = SummaryWriter, None

    def _writer(self, trainer):
        if self.writer is None:
            self.writer = self._make(str(trainer.out / "tensorboard"))
        return self.writer

    def epoch(self, trainer, row: dict) -> None:
        w = self._writer(trainer)
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"):
            w.add_scalar(f"epoch/{key}", row[key], row["epoch"])
        w.flush()

    def alignment(self, trainer, step: int, values: dict[str, list[float]]) -> None:
        w = self._writer(trainer)
        points = [p.name for p in trainer.rule.layout.points]
        for key, per_point in values.items():
            for name, v in zip(points, per_point):
                if not math.isnan(v):
                    w.add_scalar(f"{key}/point_{name}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
