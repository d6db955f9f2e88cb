"""Backbones for NanoDet-Plus, selectable by name.

``BACKBONES`` maps a name to a builder of a module whose ``forward`` gives the stride 8, 16 and 32
feature maps and whose ``out_channels`` lists their channel counts. Layouts and key names follow
NanoDet's own backbones where it has one (ShuffleNetV2, MobileNetV2, GhostNet, RepVGG,
EfficientNet-Lite), so NanoDet checkpoints load by key; MobileNetV3 follows torchvision and PP-LCNet
PaddleDetection. Nothing here fetches ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .efficientnet_lite import EfficientNetLite
from .ghostnet import GhostNet
from .lcnet import LCNet
from .mobilenetv2 import MobileNetV2
from .mobilenetv3 import MobileNetV3
from .repvgg import RepVGG
from .shufflenetv2 import ShuffleNetV2

BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "shufflenetv2-0.5x": partial(ShuffleNetV2, "0.5x"),
    "shufflenetv2-1.0x": partial(ShuffleNetV2, "1.0x"),
    "shufflenetv2-1.5x": partial(ShuffleNetV2, "1.5x"),
    "mobilenetv2": MobileNetV2,
    "mobilenetv3-small": partial(MobileNetV3, "small"),
    "mobilenetv3-large": partial(MobileNetV3, "large"),
    "ghostnet": GhostNet,
    "repvgg-a0": partial(RepVGG, "A0"),
    "efficientnet-lite0": EfficientNetLite,
    "lcnet": LCNet,
}


def build_backbone(name: str) -> nn.Module:
    """The backbone called ``name`` (a key of ``BACKBONES``), randomly initialised."""
    try:
        return BACKBONES[name]()
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None
