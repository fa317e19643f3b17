"""The training loop, its configuration and its checkpoints."""
from .config import Config
from .trainer import Trainer, fit

__all__ = ["Config", "Trainer", "fit"]
