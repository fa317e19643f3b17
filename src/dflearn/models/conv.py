"""Convolutional nets of the papers: Conv3 (seeds 001/002), Conv3+BN, the DKP small net.

Every conv block ends in a FeedbackPoint after its pooling, every hidden FC
layer after its activation, so a rule's signal reaches each block's output and
autograd carries it through the block's own BN, ReLU and pooling only.
"""
from __future__ import annotations

import math

from torch import nn

from ..feedback.point import FeedbackPoint
from .base import register_model


def hidden_layers(fan_in: int, widths) -> tuple[list[nn.Module], int]:
    """[Flatten, (Linear, ReLU, FeedbackPoint) per width]; returns the layers and the last width."""
    layers: list[nn.Module] = [nn.Flatten()]
    for width in widths:
        layers += [nn.Linear(fan_in, width), nn.ReLU(), FeedbackPoint()]
        fan_in = width
    return layers, fan_in


@register_model("conv3")
@register_model("conv3bn", batchnorm=True)
def conv3(input_shape, num_classes, channels=(96, 128, 256), hidden=(2048, 2048),
          batchnorm: bool = False) -> nn.Sequential:
    """Three [conv 5x5 pad 2 -> (BN) -> ReLU -> maxpool 3x3 stride 2 pad 1] blocks
    (96/128/256 channels; 32->16->8->4), then FC 2048 -> FC 2048 -> FC d_L."""
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 5, stride=1, padding=2)]
        layers += [nn.BatchNorm2d(out)] if batchnorm else []
        layers += [nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1), FeedbackPoint()]
        c, h, w = out, (h - 1) // 2 + 1, (w - 1) // 2 + 1  # the pooling halves, rounding up
    fc, width = hidden_layers(c * h * w, hidden)
    return nn.Sequential(*layers, *fc, nn.Linear(width, num_classes))


@register_model("dkpnet")
def dkpnet(input_shape, num_classes, channels: int = 32, hidden: int = 128) -> nn.Sequential:
    """The DKP paper's small net: conv3x3 (no pad) + BN + ReLU, conv3x3 (pad 1) + BN + ReLU,
    maxpool 2, FC 128, FC d_L (BN after every conv: DKP needs it for stability)."""
    c, h, w = input_shape
    layers = [nn.Conv2d(c, channels, 3), nn.BatchNorm2d(channels), nn.ReLU(), FeedbackPoint(),
              nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
              nn.MaxPool2d(2), FeedbackPoint()]
    fc, width = hidden_layers(channels * math.prod(((h - 2) // 2, (w - 2) // 2)), [hidden])
    return nn.Sequential(*layers, *fc, nn.Linear(width, num_classes))
