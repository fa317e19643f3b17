"""Fully connected networks: [Linear -> activation -> FeedbackPoint] per hidden layer, then Linear."""
from __future__ import annotations

import math

from typing import Literal

from torch import nn

from ..errors import DflearnError
from ..feedback.point import FeedbackPoint
from .base import register_model

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "leaky_relu": nn.LeakyReLU, "linear": nn.Identity}


@register_model("mlp")
@register_model("mlp-mnist", widths=(1024, 1024))  # the LAS paper's FC MNIST net: 784-1024-1024-10
@register_model("mlp-cifar", widths=(4096, 4096, 4096))  # the LAS paper's FC CIFAR net: 3072-4096x3-d_L
def mlp(input_shape, num_classes, widths=(1024, 1024),
        activation: Literal[tuple(ACTIVATIONS)] = "relu") -> nn.Sequential:  # `dflearn models` lists the choices
    """MLP with the given hidden widths; a feedback point after every hidden activation."""
    if activation not in ACTIVATIONS:
        raise DflearnError(f"unknown activation '{activation}'; choose one of: {', '.join(ACTIVATIONS)}")
    if isinstance(widths, str):
        widths = [int(w) for w in widths.replace("x", ",").split(",") if w]
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for width in widths:
        layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation](), FeedbackPoint()]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)
