"""MobileNetV3 small and large (Howard et al. 2019, Tables 1 and 2), laid out as torchvision's
``features`` (stem, bottlenecks, last 1x1 conv) with BN eps 1e-3; blocks use NanoDet's
MobileNetV2 key names (``features.N.conv.M``), not torchvision's ``block.M``."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import conv_bn_act, make_divisible
from .inverted_residual import InvertedResidual

# kernel, expanded channels, out channels, squeeze-excite, activation, stride
SMALL = ((3, 16, 16, True, "ReLU", 2), (3, 72, 24, False, "ReLU", 2), (3, 88, 24, False, "ReLU", 1),
         (5, 96, 40, True, "Hardswish", 2), (5, 240, 40, True, "Hardswish", 1), (5, 240, 40, True, "Hardswish", 1),
         (5, 120, 48, True, "Hardswish", 1), (5, 144, 48, True, "Hardswish", 1), (5, 288, 96, True, "Hardswish", 2),
         (5, 576, 96, True, "Hardswish", 1), (5, 576, 96, True, "Hardswish", 1))
LARGE = ((3, 16, 16, False, "ReLU", 1), (3, 64, 24, False, "ReLU", 2), (3, 72, 24, False, "ReLU", 1),
         (5, 72, 40, True, "ReLU", 2), (5, 120, 40, True, "ReLU", 1), (5, 120, 40, True, "ReLU", 1),
         (3, 240, 80, False, "Hardswish", 2), (3, 200, 80, False, "Hardswish", 1),
         (3, 184, 80, False, "Hardswish", 1), (3, 184, 80, False, "Hardswish", 1),
         (3, 480, 112, True, "Hardswish", 1), (3, 672, 112, True, "Hardswish", 1),
         (5, 672, 160, True, "Hardswish", 2), (5, 960, 160, True, "Hardswish", 1),
         (5, 960, 160, True, "Hardswish", 1))
# ``features`` indices whose outputs are the stride 8, 16 and 32 maps (the last is the final 1x1 conv)
TAPS = {"small": (3, 8, 12), "large": (6, 12, 16)}
EPS = 1e-3


class MobileNetV3(nn.Module):
    """Input (B, 3, H, W) -> the last block at strides 8 and 16 and the final 1x1 conv at stride 32.

    (B, 3, 320, 320) -> small: (B, 24, 40, 40), (B, 48, 20, 20), (B, 576, 10, 10);
    large: (B, 40, 40, 40), (B, 112, 20, 20), (B, 960, 10, 10).
    """

    def __init__(self, size: str = "large") -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_act(3, 16, 3, 2, act="Hardswish", eps=EPS)]
        in_ch = 16
        for kernel, hidden, out, se, act, stride in SMALL if size == "small" else LARGE:
            se_channels = make_divisible(hidden // 4, 8) if se else 0
            layers.append(InvertedResidual(in_ch, hidden, out, kernel, stride, act, se_channels, EPS))
            in_ch = out
        layers.append(conv_bn_act(in_ch, 6 * in_ch, 1, act="Hardswish", eps=EPS))
        self.features = nn.Sequential(*layers)
        self.taps = TAPS[size]
        self.out_channels = tuple(_channels_after(self.features[i]) for i in self.taps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return tuple(outs)


def _channels_after(layer: nn.Module) -> int:
    """Output channels of a block: those of its last BatchNorm."""
    return [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
