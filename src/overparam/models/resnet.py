"""Residual convolutional networks for 32x32 images, as the field measures them.

- :func:`resnet20` is He et al. 2016's CIFAR ResNet (3 stages of n=3 basic blocks, widths w, 2w, 4w; w=16 gives
  0.27M parameters), the model PyHessian's and Sagun/Papyan's curvature papers use.
- :func:`resnet18` is the ImageNet ResNet-18 layout (4 stages of 2 basic blocks, widths 64..512) with the usual
  CIFAR stem (one 3x3 convolution, no max-pool): 11.2M parameters.

Both use BatchNorm after every convolution. Curvature is defined for BatchNorm in eval mode (running statistics):
in training mode a layer's output depends on the rest of the batch, so the per-example loss is not a function
of that example alone (see :mod:`overparam.measure.hessian_operator`).
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (a strided 1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem convolution, stages of basic blocks (the first block of every stage but the first halves the
    resolution), global average pooling and a linear classifier."""

    def __init__(self, blocks_per_stage: list[int], widths: list[int], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if len(blocks_per_stage) != len(widths) or min(blocks_per_stage + widths) < 1:
            raise ValueError(f"need one positive width per stage, got blocks {blocks_per_stage}, widths {widths}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        stages, in_ch = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks_per_stage, widths)):
            blocks = [BasicBlock(in_ch, w, 1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def resnet20(width: int = 16, num_classes: int = 10, in_channels: int = 3, blocks: int = 3) -> ResNet:
    """The CIFAR ResNet-(6n+2) with n = ``blocks`` (n=3: ResNet-20) and stage widths w, 2w, 4w."""
    return ResNet([blocks] * 3, [width, 2 * width, 4 * width], num_classes, in_channels)


def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18 with a CIFAR stem: stages of 2 blocks, widths w, 2w, 4w, 8w (w=64: 11.2M parameters)."""
    return ResNet([2, 2, 2, 2], [width, 2 * width, 4 * width, 8 * width], num_classes, in_channels)
