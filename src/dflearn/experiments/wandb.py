"""Optional Weights & Biases logging, off unless asked for (`--wandb`), offline unless told otherwise.

The run is created with the run's config and directory name; epoch rows and alignment
measurements are logged against the global training step (W&B's `step`), like TensorBoard.
Offline by default (WANDB_MODE, if set, wins): files go to RUN_DIR/wandb and `wandb sync` uploads
them later, so a run never waits on the network or a login. wandb is an extra:
`pip install dflearn[wandb]`.
"""
from __future__ import annotations

import math
import os

from ..errors import DflearnError


class WandB:
    """A Trainer observer logging to Weights & Biases."""

    def __init__(self, project: str = "dflearn"):
        try:
            import wandb
        except ImportError:
            raise DflearnError("--wandb needs the wandb package: pip install wandb (it does not change torch)") from None
        self.wandb, self.project, self.run = wandb, project, None

    def _run(self, trainer):
        if self.run is None:
            trainer.out.mkdir(parents=True, exist_ok=True)
            self.run = self.wandb.init(project=self.project, name=trainer.out.name, dir=str(trainer.out),
                                       config=trainer.config.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"),
                                       resume="allow", id=_run_id(trainer.out))
        return self.run

    def epoch(self, trainer, row: dict) -> None:
        values = {f"epoch/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        self._run(trainer).log(values, step=row["step"])

    def alignment(self, trainer, step: int, values: dict[str, list[float]]) -> None:
        points = [p.name for p in trainer.rule.layout.points]
        logged = {f"{key}/point_{name}": v for key, per_point in values.items()
                  for name, v in zip(points, per_point) if not math.isnan(v)}
        self._run(trainer).log(logged, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


def _run_id(out) -> str:
    """One W&B id per run directory, so a resumed run continues its W&B run."""
    import hashlib

    return hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16]
