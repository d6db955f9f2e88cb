"""RepVGG-A0 (Ding et al. 2021) as NanoDet builds it: ``stage0..4`` of RepVGGConvModule-style blocks
(``rbr_dense``, ``rbr_1x1``, ``rbr_identity``), so NanoDet's training-time checkpoints load by key.
``converters.compress.fuse`` collapses each block into one 3x3 conv for export."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import activation

# blocks per stage 1..4 and width multipliers of (64, 128, 256, 512): the paper's Table 2
ARCHS = {"A0": ((2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5))}
OUT_STAGES = (2, 3, 4)  # strides 8, 16, 32


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels))


class RepVGGBlock(nn.Module):
    """act(3x3 conv+BN + 1x1 conv+BN [+ BN of the input when shapes allow]): (B, Cin, H, W) ->
    (B, Cout, H/stride, W/stride). The three branches are linear, so they sum into one 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, act: str = "ReLU") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.rbr_identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.rbr_dense = _conv_bn(in_channels, out_channels, 3, stride)
        self.rbr_1x1 = _conv_bn(in_channels, out_channels, 1, stride)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.act(out)


class RepVGG(nn.Module):
    """Input (B, 3, H, W) -> stages 2, 3, 4 at strides 8, 16, 32.

    (B, 3, 320, 320) -> A0: (B, 96, 40, 40), (B, 192, 20, 20), (B, 1280, 10, 10).
    """

    def __init__(self, arch: str = "A0", act: str = "ReLU") -> None:
        super().__init__()
        num_blocks, widths = ARCHS[arch]
        in_ch = min(64, int(64 * widths[0]))
        self.stage0 = RepVGGBlock(3, in_ch, 2, act)
        channels = []
        for i, (n, base, width) in enumerate(zip(num_blocks, (64, 128, 256, 512), widths), start=1):
            out_ch = int(base * width)
            blocks = []
            for j in range(n):
                blocks.append(RepVGGBlock(in_ch, out_ch, 2 if j == 0 else 1, act))
                in_ch = out_ch
            setattr(self, f"stage{i}", nn.Sequential(*blocks))
            channels.append(out_ch)
        self.out_channels = tuple(channels[i - 1] for i in OUT_STAGES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stage0(x)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
            if i in OUT_STAGES:
                outs.append(x)
        return tuple(outs)
