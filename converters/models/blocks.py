"""Small conv blocks shared by the NanoDet family and its backbones.

Attribute names follow the official NanoDet modules (``conv``/``bn``, ``depthwise``/``dwnorm``/
``pointwise``/``pwnorm``, ``primary_conv``/``cheap_operation``, ``conv_dw``/``bn_dw``/``se``) so
official checkpoints load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def activation(name: str | None) -> nn.Module:
    """NanoDet's activation table: LeakyReLU uses slope 0.1, not torch's default 0.01."""
    if name is None:
        return nn.Identity()
    if name == "LeakyReLU":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    if name == "ReLU":
        return nn.ReLU(inplace=True)
    if name == "ReLU6":
        return nn.ReLU6(inplace=True)
    if name == "Hardswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unsupported activation {name!r}")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10% (the TF
    MobileNet rule that GhostNet, MobileNetV3, LCNet and EfficientNet's round_filters share)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                act: str | None = "ReLU", eps: float = 1e-5, momentum: float = 0.1) -> nn.Sequential:
    """conv (no bias, 'same' padding) -> BN -> act as a Sequential: keys ``0.weight``, ``1.*``
    (NanoDet's ConvBNReLU, torchvision's Conv2dNormActivation)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
        activation(act),
    )


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> 1x1 reduce -> ReLU -> 1x1 expand -> hard sigmoid -> scale input."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(scale)


class ConvModule(nn.Module):
    """conv -> (bn) -> (act). Without a norm the conv carries a bias (as NanoDet's ``bias='auto'``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm: bool = True,
        act: str | None = "LeakyReLU",
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.act(x)


class DepthwiseConvModule(nn.Module):
    """depthwise kxk -> BN -> act -> pointwise 1x1 -> BN -> act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        act: str = "LeakyReLU",
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, kernel_size // 2, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dwnorm = nn.BatchNorm2d(in_channels)
        self.pwnorm = nn.BatchNorm2d(out_channels)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


class GhostModule(nn.Module):
    """GhostNet module: a 1x1 'primary' conv makes half the channels, a cheap depthwise conv the rest."""

    def __init__(self, inp: int, oup: int, dw_size: int = 3, act: str | None = "LeakyReLU") -> None:
        super().__init__()
        self.oup = oup
        init_channels = math.ceil(oup / 2)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(init_channels),
            activation(act) if act else nn.Sequential(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, init_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            nn.BatchNorm2d(init_channels),
            activation(act) if act else nn.Sequential(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)[:, : self.oup]


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: ghost1 (expand) -> [stride-2 depthwise] -> [SE] -> ghost2 (+ shortcut).

    GhostPAN uses the stride-1, SE-free form; GhostNet's backbone the strided and SE ones.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int, act: str, stride: int = 1,
                 se_ratio: float = 0.0) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, act=act)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, (dw_kernel_size - 1) // 2,
                                     groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        # GhostNet's SE rounds its squeeze width to a multiple of 4 and always uses ReLU inside
        self.se = SqueezeExcite(mid_chs, make_divisible(mid_chs * se_ratio, 4)) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, act=None)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, (dw_kernel_size - 1) // 2, groups=in_chs,
                          bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.stride > 1:
            y = self.bn_dw(self.conv_dw(y))
        if self.se is not None:
            y = self.se(y)
        return self.ghost2(y) + self.shortcut(x)
