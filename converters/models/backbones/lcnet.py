"""PP-LCNet (Cui et al. 2021) 1.0x as PaddleDetection's backbone for PicoDet: ``conv1``, ``blocks2..6``
of depthwise-separable blocks (``dw_conv``, [``se``], ``pw_conv``, each conv/bn/Hardswish), output
blocks 4, 5, 6. Conv/BN keys follow PaddleClas; its SE's ``conv1``/``conv2`` are ``conv_reduce``/``conv_expand``."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ConvModule, SqueezeExcite, make_divisible

# per stage: (kernel, in, out, stride, squeeze-excite) of each block, for scale 1.0
STAGES = {
    "blocks2": ((3, 16, 32, 1, False),),
    "blocks3": ((3, 32, 64, 2, False), (3, 64, 64, 1, False)),
    "blocks4": ((3, 64, 128, 2, False), (3, 128, 128, 1, False)),  # stride 8
    "blocks5": ((3, 128, 256, 2, False),) + ((5, 256, 256, 1, False),) * 5,  # stride 16
    "blocks6": ((5, 256, 512, 2, True), (5, 512, 512, 1, True)),  # stride 32
}
OUT_STAGES = ("blocks4", "blocks5", "blocks6")


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> ConvModule:
    return ConvModule(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, act="Hardswish", groups=groups)


class DepthwiseSeparable(nn.Module):
    """kxk depthwise (+BN+Hardswish) -> [SE] -> 1x1 pointwise (+BN+Hardswish):
    (B, inp, H, W) -> (B, oup, H/stride, W/stride)."""

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int, use_se: bool) -> None:
        super().__init__()
        self.dw_conv = _conv(inp, inp, kernel_size, stride, groups=inp)
        self.se = SqueezeExcite(inp, inp // 4) if use_se else None
        self.pw_conv = _conv(inp, oup, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_conv(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw_conv(x)


class LCNet(nn.Module):
    """Input (B, 3, H, W) -> blocks 4, 5, 6 at strides 8, 16, 32.

    (B, 3, 320, 320) -> 1.0x: (B, 128, 40, 40), (B, 256, 20, 20), (B, 512, 10, 10).
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = _conv(3, make_divisible(16 * scale), 3, 2)
        for name, blocks in STAGES.items():
            setattr(self, name, nn.Sequential(*(
                DepthwiseSeparable(make_divisible(i * scale), make_divisible(o * scale), k, s, se)
                for k, i, o, s, se in blocks)))
        self.out_channels = tuple(make_divisible(STAGES[name][-1][2] * scale) for name in OUT_STAGES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for name in STAGES:
            x = getattr(self, name)(x)
            if name in OUT_STAGES:
                outs.append(x)
        return tuple(outs)
