"""AlexNet with BatchNorm, as in the DKP reference code for CIFAR-100 (seed 003).

The architecture of webstah/dkp-gist `alexnet/models/alexnet.py` (torchvision's
"one weird trick" AlexNet with a BN after every conv), a FeedbackPoint where
that code places its DFA hooks, i.e. after each block:

    conv 11x11/4 pad 2 (64)  -> BN -> ReLU -> maxpool 3/2                         -> point
    conv 5x5 pad 2 (192)     -> BN -> ReLU -> maxpool 3/2                         -> point
    conv 3x3 pad 1 (384)     -> BN -> ReLU                                        -> point
    conv 3x3 pad 1 (256)     -> BN -> ReLU                                        -> point
    conv 3x3 pad 1 (256)     -> BN -> ReLU -> maxpool 3/2 -> avgpool to 6x6 -> flatten -> dropout -> point
    FC 9216 -> 4096 -> ReLU -> dropout                                            -> point
    FC 4096 -> 4096 -> ReLU                                                       -> point
    FC 4096 -> d_L

The reference feeds CIFAR-100 resized to 224x224 (RandomResizedCrop(224) for
training, Resize(256)+CenterCrop(224) for test). Here the images stay 32x32 in
memory and the model resizes them bilinearly to `resize` pixels first (default
224, the reference's; the smallest size the layers accept is 63, and the
presets' CPU budgets use 64: the same layers on a 15x15 first map, about 1/7 of
the multiply-adds, so not the reference's receptive fields).
"""
from __future__ import annotations

from torch import nn

from ..feedback.point import FeedbackPoint
from .base import register_model


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, pool: bool = False) -> list:
    layers = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding), nn.BatchNorm2d(c_out),
              nn.ReLU()]
    return layers + ([nn.MaxPool2d(3, stride=2)] if pool else [])


@register_model("alexnet")
def alexnet(input_shape, num_classes, resize: int = 224, hidden: int = 4096, dropout: float = 0.5) -> nn.Sequential:
    """AlexNet with BN after every conv (DKP reference, CIFAR-100), feedback points after its
    5 conv blocks and 2 hidden FC layers; input resized bilinearly to `resize` (default 224)."""
    c, h, w = input_shape
    if resize < 63:
        raise ValueError(f"resize must be at least 63 pixels (the last max-pool needs a 3x3 map), got {resize}")
    layers: list[nn.Module] = []
    if (h, w) != (resize, resize):
        layers.append(nn.Upsample(size=(resize, resize), mode="bilinear", align_corners=False))
    layers += _conv(c, 64, 11, stride=4, padding=2, pool=True) + [FeedbackPoint()]
    layers += _conv(64, 192, 5, padding=2, pool=True) + [FeedbackPoint()]
    layers += _conv(192, 384, 3, padding=1) + [FeedbackPoint()]
    layers += _conv(384, 256, 3, padding=1) + [FeedbackPoint()]
    layers += _conv(256, 256, 3, padding=1, pool=True)
    layers += [nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(), nn.Dropout(dropout), FeedbackPoint()]
    layers += [nn.Linear(256 * 6 * 6, hidden), nn.ReLU(), nn.Dropout(dropout), FeedbackPoint()]
    layers += [nn.Linear(hidden, hidden), nn.ReLU(), FeedbackPoint()]
    layers += [nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)
