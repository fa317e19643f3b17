"""Optional TensorBoard logging: every scalar against one axis, the global training step.

Epoch rows are written at the step the epoch ended on, alignment measurements at the
step they were taken, so both share TensorBoard's x axis. At the end the run's
configuration goes in as hparams (with best and final test accuracy as its metrics),
so the HParams tab compares runs of a grid (`dflearn compare --tensorboard`).

TensorBoard is not a dependency of dflearn: `pip install tensorboard` (or
`pip install dflearn[tensorboard]`) to use it; without it `--tensorboard`
fails at once with a one-line message instead of after training.
"""
from __future__ import annotations

import json
import math

from ..errors import DflearnError

EPOCH_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc", "lr", "seconds")


def hparams(config: dict) -> dict:
    """A config as TensorBoard hparams: numbers, text and booleans as they are, the rest as JSON text."""
    return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v, sort_keys=True)
            for k, v in config.items()}


class TensorBoard:
    """A Trainer observer writing event files into RUN_DIR/tensorboard."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DflearnError("--tensorboard needs the tensorboard package: pip install tensorboard "
                               "(it does not change torch)") from None
        self._make, self.writer, self.trainer = SummaryWriter, None, None

    def _writer(self, trainer):
        if self.writer is None:
            self.trainer = trainer
            self.writer = self._make(str(trainer.out / "tensorboard"))
        return self.writer

    def epoch(self, trainer, row: dict) -> None:
        w = self._writer(trainer)
        for key in EPOCH_KEYS:
            if key in row:
                w.add_scalar(f"epoch/{key}", row[key], row["step"])
        w.add_scalar("epoch/epoch", row["epoch"], row["step"])
        w.flush()

    def alignment(self, trainer, step: int, values: dict[str, list[float]]) -> None:
        w = self._writer(trainer)
        points = [p.name for p in trainer.rule.layout.points]
        for key, per_point in values.items():
            for name, v in zip(points, per_point):
                if not math.isnan(v):
                    w.add_scalar(f"{key}/point_{name}", v, step)

    def close(self) -> None:
        if self.writer is None:
            return
        h = self.trainer.history
        if h:
            metrics = {"hparam/best_test_acc": max(r["test_acc"] for r in h), "hparam/final_test_acc": h[-1]["test_acc"]}
            from ..training.selection import val_best

            chosen = val_best(h)
            if chosen is not None:  # the test accuracy at the validation-best epoch (the honest figure)
                metrics["hparam/test_acc_at_val_best"] = chosen["test_acc"]
                metrics["hparam/val_best_acc"] = chosen["val_acc"]
            self.writer.add_hparams(hparams(self.trainer.config.to_dict()), metrics, run_name=".",
                                    global_step=h[-1]["step"])
        self.writer.close()
