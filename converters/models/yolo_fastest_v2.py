"""YOLO-FastestV2 in PyTorch, layer names as in dog-qiuqiu/Yolo-FastestV2 (``first_conv``,
``branch_main``/``branch_proj``, ``conv1x1_2``, ``cls_head_2`` ...). Shapes for a 352x352 input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COCO_ANCHORS = ((12.64, 19.39), (37.88, 51.48), (55.71, 138.31),
                (126.91, 78.23), (131.57, 214.55), (279.92, 258.87))


class ShuffleV2Block(nn.Module):
    """YOLO-FastestV2's ShuffleNetV2 block: the shuffle happens on the input of stride-1 blocks."""

    def __init__(self, inp: int, oup: int, mid_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        outputs = oup - inp
        self.branch_main = nn.Sequential(
            nn.Conv2d(inp, mid_channels, 1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, mid_channels, 3, stride, 1, groups=mid_channels, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.Conv2d(mid_channels, outputs, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
        )
        if stride == 2:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, inp, 1, bias=False),
                nn.BatchNorm2d(inp),
                nn.ReLU(inplace=True),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        b, c, h, w = x.shape
        # split even/odd channels (the official reshape-permute shuffle)
        x = x.reshape(b * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, c // 2, h, w)
        return torch.cat((x[0], self.branch_main(x[1])), 1)


class ShuffleNetV2(nn.Module):
    """(B, 3, 352, 352) -> C2 (B, 96, 22, 22) at stride 16 and C3 (B, 192, 11, 11) at stride 32."""

    def __init__(self, stage_out_channels: tuple[int, ...] = (24, 48, 96, 192)) -> None:
        super().__init__()
        stem = stage_out_channels[0]
        self.first_conv = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = stem
        for name, repeats, out_ch in zip(("stage2", "stage3", "stage4"), (4, 8, 4), stage_out_channels[1:]):
            blocks = [ShuffleV2Block(in_ch, out_ch, out_ch // 2, 2)]
            blocks += [ShuffleV2Block(out_ch // 2, out_ch, out_ch // 2, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*blocks))
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c2 = self.stage3(self.stage2(self.maxpool(self.first_conv(x))))
        return c2, self.stage4(c2)


class DWConvblock(nn.Module):
    """Two (depthwise 5x5 -> BN -> ReLU -> pointwise -> BN) units; channels unchanged."""

    def __init__(self, channels: int, size: int = 5) -> None:
        super().__init__()
        pad = size // 2
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, size, 1, pad, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, size, 1, pad, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _conv1x1_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LightFPN(nn.Module):
    """C2, C3 -> (cls, reg) features at strides 16 and 32, each (B, 72, H, W); obj shares cls."""

    def __init__(self, input2_depth: int, input3_depth: int, out_depth: int) -> None:
        super().__init__()
        self.conv1x1_2 = _conv1x1_bn_relu(input2_depth, out_depth)
        self.conv1x1_3 = _conv1x1_bn_relu(input3_depth, out_depth)
        self.cls_head_2 = DWConvblock(out_depth)
        self.reg_head_2 = DWConvblock(out_depth)
        self.reg_head_3 = DWConvblock(out_depth)
        self.cls_head_3 = DWConvblock(out_depth)

    def forward(self, c2: torch.Tensor, c3: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s3 = self.conv1x1_3(c3)
        p2 = torch.cat((F.interpolate(c3, scale_factor=2.0, mode="nearest"), c2), 1)
        s2 = self.conv1x1_2(p2)
        return self.cls_head_2(s2), self.reg_head_2(s2), self.cls_head_3(s3), self.reg_head_3(s3)


class YoloFastestV2(nn.Module):
    """``forward`` returns the official raw maps: reg_22 (B, 4A, 22, 22), obj_22 (B, A, 22, 22),
    cls_22 (B, C, 22, 22), then the same three at 11x11."""

    strides = (16, 32)

    def __init__(self, num_classes: int = 80, anchor_num: int = 3,
                 anchors: tuple[tuple[float, float], ...] = COCO_ANCHORS) -> None:
        super().__init__()
        out_depth = 72
        self.num_classes = num_classes
        self.anchor_num = anchor_num
        # (w, h) in input pixels, anchor_num per level, stride-16 level first; not weights, so a
        # model trained on other data carries its own anchors into the manifest through the spec
        self.anchors = anchors
        self.backbone = ShuffleNetV2()
        self.fpn = LightFPN(96 + 192, 192, out_depth)
        self.output_reg_layers = nn.Conv2d(out_depth, 4 * anchor_num, 1)
        self.output_obj_layers = nn.Conv2d(out_depth, anchor_num, 1)
        self.output_cls_layers = nn.Conv2d(out_depth, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls_2, reg_2, cls_3, reg_3 = self.fpn(*self.backbone(x))
        out = []
        for cls, reg in ((cls_2, reg_2), (cls_3, reg_3)):
            out += [self.output_reg_layers(reg), self.output_obj_layers(cls), self.output_cls_layers(cls)]
        return tuple(out)


class YoloFastestV2Deploy(nn.Module):
    """Export wrapper with the official score rule in the graph.

    Output ``scores``: (B, N, C) = sigmoid(obj) * softmax(cls); ``box_sigmoid``: (B, N, 4) sigmoid of
    (tx, ty, tw, th). N runs over levels, then rows, columns and anchors (as the official decoder).
    """

    def __init__(self, model: YoloFastestV2) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, nc = self.model.anchor_num, self.model.num_classes
        outs = self.model(x)
        scores, boxes = [], []
        for reg, obj, cls in (outs[0:3], outs[3:6]):
            b, _, h, w = reg.shape
            reg = reg.permute(0, 2, 3, 1).reshape(b, h * w * a, 4).sigmoid()
            obj = obj.permute(0, 2, 3, 1).reshape(b, h * w, a, 1).sigmoid()
            cls = F.softmax(cls.permute(0, 2, 3, 1), dim=-1).reshape(b, h * w, 1, nc)
            scores.append((obj * cls).reshape(b, h * w * a, nc))
            boxes.append(reg)
        return torch.cat(scores, 1), torch.cat(boxes, 1)
