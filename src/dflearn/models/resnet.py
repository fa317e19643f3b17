"""ResNet18 with block-wise direct feedback (LAS paper §IV.B; Launay et al. 2020).

A FeedbackPoint after every residual block: BP runs inside a block (both
convolutions and the shortcut), and a direct rule cuts the graph between
blocks. The stem has no point of its own: it belongs to the first block.
"""
from __future__ import annotations

from torch import nn

from ..feedback.point import FeedbackPoint
from .base import register_model


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        # the shortcut runs first so that the block's last conv (the one whose kernel
        # a LAS/LTAS local module copies) and last BN (its pre-activation) are conv2/bn2
        s = self.shortcut(x)
        return (self.bn2(self.conv2(self.bn1(self.conv1(x)).relu())) + s).relu()


@register_model("resnet18")
def resnet18(input_shape, num_classes, width: int = 64) -> nn.Sequential:
    """CIFAR stem (conv 7x7 stride 2 pad 3 -> BN -> ReLU, no max-pool), four stages of
    two BasicBlocks (width x 1/2/4/8 channels), global average pool, FC d_L."""
    c = input_shape[0]
    layers: list[nn.Module] = [nn.Conv2d(c, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    c = width
    for stage, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for i in range(2):
            layers += [BasicBlock(c, out, 2 if stage > 0 and i == 0 else 1), FeedbackPoint()]
            c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
