"""NanoDet (v1: PAN + NanoDetHead) and NanoDet-Plus (GhostPAN + NanoDetPlusHead) in PyTorch.

Module and attribute names mirror the official code so that ``model.<key>`` checkpoints load
strictly. Shapes below are for a 416x416 input and the 1.0x backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone
from .backbones.shufflenetv2 import ShuffleNetV2
from .blocks import ConvModule, DepthwiseConvModule, GhostBottleneck


class GhostBlocks(nn.Module):
    """One GhostBottleneck (expand 1, no residual reduce conv): (B, 2C, H, W) -> (B, C, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, act: str) -> None:
        super().__init__()
        self.blocks = nn.Sequential(GhostBottleneck(in_channels, out_channels, out_channels, kernel_size, act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class GhostPAN(nn.Module):
    """NanoDet-Plus neck.

    (116x52x52, 232x26x26, 464x13x13) -> 4 levels of C=96: 52x52, 26x26, 13x13 and an extra 7x7.
    """

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, kernel_size: int = 5,
                 num_extra_level: int = 1, act: str = "LeakyReLU") -> None:
        super().__init__()
        n = len(in_channels)
        self.reduce_layers = nn.ModuleList(ConvModule(c, out_channels, 1, act=act) for c in in_channels)
        self.top_down_blocks = nn.ModuleList(
            GhostBlocks(out_channels * 2, out_channels, kernel_size, act) for _ in range(n - 1))
        self.downsamples = nn.ModuleList(
            DepthwiseConvModule(out_channels, out_channels, kernel_size, 2, act) for _ in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(
            GhostBlocks(out_channels * 2, out_channels, kernel_size, act) for _ in range(n - 1))
        self.extra_lvl_in_conv = nn.ModuleList(
            DepthwiseConvModule(out_channels, out_channels, kernel_size, 2, act) for _ in range(num_extra_level))
        self.extra_lvl_out_conv = nn.ModuleList(
            DepthwiseConvModule(out_channels, out_channels, kernel_size, 2, act) for _ in range(num_extra_level))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        reduced = [reduce(x) for x, reduce in zip(inputs, self.reduce_layers)]
        # top-down: upsample the coarser map and fuse it with the next finer one
        inner = [reduced[-1]]
        for i, block in zip(range(len(reduced) - 1, 0, -1), self.top_down_blocks):
            up = F.interpolate(inner[0], scale_factor=2.0, mode="bilinear", align_corners=False)
            inner.insert(0, block(torch.cat([up, reduced[i - 1]], 1)))
        # bottom-up: downsample the finer output and fuse it with the next coarser one
        outs = [inner[0]]
        for i, (down, block) in enumerate(zip(self.downsamples, self.bottom_up_blocks)):
            outs.append(block(torch.cat([down(outs[-1]), inner[i + 1]], 1)))
        for extra_in, extra_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            outs.append(extra_in(reduced[-1]) + extra_out(outs[-1]))
        return outs


class PAN(nn.Module):
    """NanoDet v1 neck: 1x1 laterals (with bias, no norm), bilinear top-down then bottom-up sums."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1, norm=False, act=None) for c in in_channels)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        lat = [conv(x) for x, conv in zip(inputs, self.lateral_convs)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2.0, mode="bilinear", align_corners=False)
        for i in range(len(lat) - 1):
            lat[i + 1] = lat[i + 1] + F.interpolate(lat[i], scale_factor=0.5, mode="bilinear", align_corners=False)
        return lat


class Integral(nn.Module):
    """GFL distribution -> expected distance: softmax over reg_max+1 bins, dot with 0..reg_max."""

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = F.softmax(x.reshape(*shape, 4, self.reg_max + 1), dim=-1)
        # a (bins, 1) matrix, not the 1-D vector: ONNX Runtime runs MatMul by a vector as one tiny product per
        # anchor (1.2 of NanoDet-Plus-m 416's 13 ms on an x86 Xeon), by a matrix as one GEMM
        return (x @ self.project.unsqueeze(-1)).squeeze(-1)


class NanoDetHead(nn.Module):
    """Per level: stacked depthwise convs -> one 1x1 conv giving C class logits + 4*(reg_max+1) bins.

    Serves both NanoDetPlusHead (kernel 5, 4 levels) and v1's NanoDetHead with shared cls/reg
    (kernel 3, 3 levels); v1 checkpoints also carry an unused ``gfl_reg`` conv per level.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int, stacked_convs: int,
                 kernel_size: int, num_levels: int, reg_max: int = 7, act: str = "LeakyReLU",
                 legacy_gfl_reg: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.cls_convs = nn.ModuleList(
            nn.ModuleList(
                DepthwiseConvModule(in_channels if i == 0 else feat_channels, feat_channels, kernel_size, 1, act)
                for i in range(stacked_convs))
            for _ in range(num_levels))
        out = num_classes + 4 * (reg_max + 1)
        self.gfl_cls = nn.ModuleList(nn.Conv2d(feat_channels, out, 1) for _ in range(num_levels))
        if legacy_gfl_reg:
            self.gfl_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4 * (reg_max + 1), 1) for _ in range(num_levels))
        self.distribution_project = Integral(reg_max)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Returns per level (B, num_classes + 4*(reg_max+1), H, W) raw logits."""
        outputs = []
        for feat, convs, gfl_cls in zip(feats, self.cls_convs, self.gfl_cls):
            for conv in convs:
                feat = conv(feat)
            outputs.append(gfl_cls(feat))
        return outputs


class NanoDet(nn.Module):
    """backbone -> neck -> head. ``forward`` returns raw per-level head maps (as ncnn's cls/dis)."""

    def __init__(self, backbone: nn.Module, fpn: nn.Module, head: NanoDetHead, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.strides = strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.fpn(self.backbone(x)))


class NanoDetDeploy(nn.Module):
    """Export wrapper: puts the cheap decode tail in the graph.

    Output ``scores``: (B, N, C) sigmoid class scores; ``distances``: (B, N, 4) left/top/right/bottom
    in stride units (0..reg_max), N = sum of H*W over levels, level-major then row-major.
    """

    def __init__(self, model: NanoDet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.model.head
        flat = torch.cat([o.flatten(start_dim=2) for o in self.model(x)], dim=2).permute(0, 2, 1)
        cls, reg = flat.split([head.num_classes, 4 * (head.reg_max + 1)], dim=-1)
        return cls.sigmoid(), head.distribution_project(reg)


def build_nanodet_plus(num_classes: int, backbone_name: str = "shufflenetv2-1.0x", fpn_channels: int = 96) -> NanoDet:
    """NanoDet-Plus on any backbone of ``backbones.BACKBONES``: GhostPAN (kernel 5, one extra level)
    and the 4-level head, ``fpn_channels`` wide."""
    backbone = build_backbone(backbone_name)
    fpn = GhostPAN(backbone.out_channels, fpn_channels, kernel_size=5, num_extra_level=1)
    head = NanoDetHead(num_classes, fpn_channels, fpn_channels, stacked_convs=2, kernel_size=5, num_levels=4)
    return NanoDet(backbone, fpn, head, strides=(8, 16, 32, 64))


def build_nanodet_v1(num_classes: int, model_size: str = "1.0x", fpn_channels: int = 96) -> NanoDet:
    backbone = ShuffleNetV2(model_size)
    fpn = PAN(backbone.out_channels, fpn_channels)
    head = NanoDetHead(num_classes, fpn_channels, fpn_channels, stacked_convs=2, kernel_size=3, num_levels=3,
                       legacy_gfl_reg=True)
    return NanoDet(backbone, fpn, head, strides=(8, 16, 32))
