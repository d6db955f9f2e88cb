"""MobileNetV2 backbone as NanoDet builds it (``first_layer``, ``stage0..6`` of InvertedResidual, the
last stage ending in a 1x1 conv to 1280 channels), so NanoDet checkpoints load by key."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import conv_bn_act
from .inverted_residual import InvertedResidual

# t (expansion), c (output channels), n (repeats), s (first block's stride): the paper's Table 2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
OUT_STAGES = (2, 4, 6)  # strides 8, 16, 32


class MobileNetV2(nn.Module):
    """Input (B, 3, H, W) -> stages 2, 4 and 6 (+ the 1x1 to ``last_channel``) at strides 8, 16, 32.

    (B, 3, 320, 320) -> (B, 32, 40, 40), (B, 96, 20, 20), (B, 1280, 10, 10).
    """

    def __init__(self, last_channel: int = 1280, act: str = "ReLU6") -> None:
        super().__init__()
        self.first_layer = conv_bn_act(3, 32, 3, 2, act=act)
        in_ch = 32
        for i, (t, c, n, s) in enumerate(SETTINGS):
            blocks: list[nn.Module] = []
            for j in range(n):
                blocks.append(InvertedResidual(in_ch, in_ch * t, c, 3, s if j == 0 else 1, act))
                in_ch = c
            if i == len(SETTINGS) - 1:
                blocks.append(conv_bn_act(in_ch, last_channel, 1, act=act))
            setattr(self, f"stage{i}", nn.Sequential(*blocks))
        self.out_channels = (SETTINGS[2][1], SETTINGS[4][1], last_channel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.first_layer(x)
        outs = []
        for i in range(len(SETTINGS)):
            x = getattr(self, f"stage{i}")(x)
            if i in OUT_STAGES:
                outs.append(x)
        return tuple(outs)
