"""Small conv blocks shared by the NanoDet family.

Attribute names follow the official NanoDet modules (``conv``/``bn``, ``depthwise``/``dwnorm``/
``pointwise``/``pwnorm``, ``primary_conv``/``cheap_operation``) so official checkpoints load
without renaming.
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
    raise ValueError(f"unsupported activation {name!r}")


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
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not norm)
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
    """Stride-1 Ghost bottleneck without SE, as GhostPAN uses it: ghost1 -> ghost2 (+ shortcut)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int, act: str) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, act=act)
        self.ghost2 = GhostModule(mid_chs, out_chs, act=None)
        if in_chs == out_chs:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, 1, (dw_kernel_size - 1) // 2, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)
