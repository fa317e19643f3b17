"""Models, each with FeedbackPoint markers at its block outputs."""
from . import mlp as _mlp  # noqa: F401  (register)
from . import alexnet as _alexnet, conv as _conv, gpt as _gpt, resnet as _resnet, vit as _vit  # noqa: F401  (register)
from .base import MODELS, build_model, model_options, register_model
from .mlp import mlp

__all__ = ["MODELS", "build_model", "mlp", "model_options", "register_model"]
