"""The MobileNetV2/V3 inverted residual block, with NanoDet's MobileNetV2 key layout (``conv.N``)."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import SqueezeExcite, conv_bn_act


class InvertedResidual(nn.Module):
    """[1x1 expand] -> kxk depthwise -> [SE] -> 1x1 linear projection (+ input when shapes allow).

    (B, inp, H, W) -> (B, oup, H/stride, W/stride). The expand conv exists only when
    ``hidden != inp``; ``se_channels`` > 0 adds a squeeze-excite of that width (MobileNetV3).
    """

    def __init__(self, inp: int, hidden: int, oup: int, kernel_size: int, stride: int, act: str,
                 se_channels: int = 0, eps: float = 1e-5) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if hidden != inp:
            layers.append(conv_bn_act(inp, hidden, 1, act=act, eps=eps))
        layers.append(conv_bn_act(hidden, hidden, kernel_size, stride, groups=hidden, act=act, eps=eps))
        if se_channels:
            layers.append(SqueezeExcite(hidden, se_channels))
        layers += [nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup, eps=eps)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)
