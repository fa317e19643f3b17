"""Observers from a picklable description, for `train` and for `compare`'s worker processes."""
from __future__ import annotations


def make_observers(tensorboard: bool = False, wandb: str | None = None) -> list:
    """[TensorBoard()] if asked, [WandB(project)] if a project is named; each refuses at once if missing."""
    observers = []
    if tensorboard:
        from .tensorboard import TensorBoard
        observers.append(TensorBoard())
    if wandb:
        from .wandb import WandB
        observers.append(WandB(wandb))
    return observers


def add_arguments(g) -> None:
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars (one step axis) and the config as hparams to "
                        "OUT/tensorboard (needs: pip install tensorboard)")
    g.add_argument("--wandb", nargs="?", const="dflearn", metavar="PROJECT",
                   help="also log to Weights & Biases project PROJECT (default dflearn), offline unless "
                        "WANDB_MODE=online; needs: pip install wandb")


def from_args(args) -> dict:
    return {"tensorboard": bool(getattr(args, "tensorboard", False)), "wandb": getattr(args, "wandb", None)}
