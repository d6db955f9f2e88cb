"""EfficientNet-Lite0 (no squeeze-excite, ReLU6) as NanoDet builds it: ``stem``, ``blocks.i.j`` of
MBConvBlock with the TF port's names (``_expand_conv``, ``_bn0``, ``_depthwise_conv``, ...), BN eps
1e-3, so NanoDet checkpoints load by key."""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import activation, conv_bn_act, make_divisible

# repeats, kernel, stride, expansion, in, out (Lite0: width and depth multipliers 1.0)
SETTINGS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
            (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
OUT_STAGES = (2, 4, 6)  # strides 8, 16, 32
EPS, MOMENTUM = 1e-3, 0.01


class MBConvBlock(nn.Module):
    """[1x1 expand] -> kxk depthwise -> 1x1 projection (+ input when shapes allow), no SE.

    (B, inp, H, W) -> (B, oup, H/stride, W/stride).
    """

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int, expand_ratio: int, act: str) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_skip = stride == 1 and inp == oup
        if expand_ratio != 1:
            self._expand_conv = nn.Conv2d(inp, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=EPS, momentum=MOMENTUM)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel_size, stride, (kernel_size - 1) // 2, groups=hidden,
                                         bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=EPS, momentum=MOMENTUM)
        self._project_conv = nn.Conv2d(hidden, oup, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(oup, eps=EPS, momentum=MOMENTUM)
        self._relu = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._relu(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(self._relu(self._bn1(self._depthwise_conv(y)))))
        # NanoDet's drop-connect is training-only: at inference the skip is a plain sum
        return y + x if self.use_skip else y


class EfficientNetLite(nn.Module):
    """Input (B, 3, H, W) -> stages 2, 4, 6 at strides 8, 16, 32.

    (B, 3, 320, 320) -> Lite0: (B, 40, 40, 40), (B, 112, 20, 20), (B, 320, 10, 10).
    """

    def __init__(self, width_mult: float = 1.0, act: str = "ReLU6") -> None:
        super().__init__()
        self.stem = conv_bn_act(3, 32, 3, 2, act=act, eps=EPS, momentum=MOMENTUM)
        self.blocks = nn.ModuleList()
        for i, (repeats, kernel, stride, expand, inp, out) in enumerate(SETTINGS):
            inp = inp if i == 0 else make_divisible(inp * width_mult)
            out = make_divisible(out * width_mult)
            stage = nn.ModuleList()
            for j in range(repeats):
                stage.append(MBConvBlock(inp if j == 0 else out, out, kernel, stride if j == 0 else 1, expand, act))
            self.blocks.append(stage)
        self.out_channels = tuple(make_divisible(SETTINGS[i][5] * width_mult) for i in OUT_STAGES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.blocks):
            for block in stage:
                x = block(x)
            if i in OUT_STAGES:
                outs.append(x)
        return tuple(outs)
