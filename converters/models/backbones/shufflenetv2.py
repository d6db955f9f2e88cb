"""ShuffleNetV2 backbone as NanoDet builds it (``conv1``, ``maxpool``, ``stage2..4`` of ShuffleV2Block).

Never fetches ImageNet weights: every weight comes from the checkpoint being loaded.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import activation, conv_bn_act

STAGE_OUT_CHANNELS = {
    "0.5x": (24, 48, 96, 192),
    "1.0x": (24, 116, 232, 464),
    "1.5x": (24, 176, 352, 704),
    "2.0x": (24, 244, 488, 976),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleV2Block(nn.Module):
    """stride 2: both branches see the input; stride 1: split channels, transform one half."""

    def __init__(self, inp: int, oup: int, stride: int, act: str) -> None:
        super().__init__()
        self.stride = stride
        branch = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                activation(act),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            activation(act),
            nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            activation(act),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Input (B, 3, H, W) -> features of stages 2, 3, 4 at strides 8, 16, 32.

    (B, 3, 320, 320) -> (B, 116, 40, 40), (B, 232, 20, 20), (B, 464, 10, 10) for 1.0x;
    0.5x gives (48, 96, 192) channels, 1.5x (176, 352, 704).
    """

    def __init__(self, model_size: str = "1.0x", act: str = "LeakyReLU") -> None:
        super().__init__()
        stem, *stage_channels = STAGE_OUT_CHANNELS[model_size]
        self.out_channels = tuple(stage_channels)
        self.conv1 = conv_bn_act(3, stem, 3, 2, act=act)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = stem
        for name, repeats, out_ch in zip(("stage2", "stage3", "stage4"), (4, 8, 4), stage_channels):
            blocks = [ShuffleV2Block(in_ch, out_ch, 2, act)]
            blocks += [ShuffleV2Block(out_ch, out_ch, 1, act) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*blocks))
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5
