"""GhostNet 1.0x (Han et al. 2020) as NanoDet builds it: ``conv_stem``/``bn1``, ``blocks.0..9`` of
GhostBottleneck, ``blocks.9`` a 1x1 ConvBnAct to 960 channels; NanoDet checkpoints load by key."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import GhostBottleneck, activation, make_divisible

# per stage: (kernel, expanded, out, se_ratio, stride) of each bottleneck; the paper's Table 1
STAGES = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),  # 4: stride 8
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)),  # 6: stride 16
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)
OUT_STAGES = (4, 6, 9)  # 9: the final ConvBnAct, stride 32


class ConvBnAct(nn.Module):
    """1x1 conv -> BN -> act with GhostNet's names (``conv``, ``bn1``, ``act1``)."""

    def __init__(self, in_chs: int, out_chs: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostNet(nn.Module):
    """Input (B, 3, H, W) -> blocks 4, 6 and 9 at strides 8, 16, 32.

    (B, 3, 320, 320) -> (B, 40, 40, 40), (B, 112, 20, 20), (B, 960, 10, 10).
    """

    def __init__(self, width_mult: float = 1.0, act: str = "ReLU") -> None:
        super().__init__()
        in_ch = make_divisible(16 * width_mult, 4)
        self.conv_stem = nn.Conv2d(3, in_ch, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = activation(act)
        stages: list[nn.Module] = []
        for stage in STAGES:
            layers = []
            for kernel, expanded, out, se_ratio, stride in stage:
                out_ch = make_divisible(out * width_mult, 4)
                layers.append(GhostBottleneck(in_ch, make_divisible(expanded * width_mult, 4), out_ch, kernel, act,
                                              stride, se_ratio))
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        last = make_divisible(STAGES[-1][-1][1] * width_mult, 4)
        stages.append(nn.Sequential(ConvBnAct(in_ch, last, act)))
        self.blocks = nn.Sequential(*stages)
        self.out_channels = (make_divisible(40 * width_mult, 4), make_divisible(112 * width_mult, 4), last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in OUT_STAGES:
                outs.append(x)
        return tuple(outs)
