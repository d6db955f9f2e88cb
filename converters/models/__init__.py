"""Registry of the models the converters can build, with what the runtime must know about each.

A ``ModelSpec`` ties a model name to its torch builder, its export wrapper and the manifest
fields (family, preprocessing, decoder parameters) that make the exported graph usable on a
device without any Python model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from torch import nn

from edge_runtime.errors import CheckpointError
from edge_runtime.manifest import InputSpec

from ..darknet import YoloV3Deploy, load_darknet, yolov3_decoder_params
from ..demo_data import CLASS_NAMES as SHAPE_CLASSES
from .backbones import BACKBONES
from .nanodet import NanoDet, NanoDetDeploy, build_nanodet_plus, build_nanodet_v1
from .yolo_fastest_v2 import YoloFastestV2, YoloFastestV2Deploy

NANODET_MEAN = (103.53, 116.28, 123.675)
NANODET_STD = (57.375, 57.12, 58.395)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    build: Callable[[int], nn.Module]
    deploy: Callable[[nn.Module], nn.Module]
    default_imgsz: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str
    output_names: tuple[str, str]
    decoder: Callable[[nn.Module], dict[str, Any]]
    color: str = "BGR"
    postprocess: dict[str, float] = field(default_factory=lambda: {
        "score_threshold": 0.35, "nms_iou": 0.6, "max_detections": 100, "multi_label": True})
    class_names: tuple[str, ...] | None = None  # when the checkpoint's classes are known (bundled models)
    weights: Path | None = None  # bundled default checkpoint: export needs no --weights
    # loads weights whose architecture comes from a file beside them (darknet .cfg), instead of build + state_dict
    load: Callable[[Path], tuple[nn.Module, int]] | None = None
    # the class count a checkpoint was trained with, read from its classifier weights (a state_dict)
    num_classes_from: Callable[[dict[str, Any]], int] = lambda state_dict: _no_class_count()

    def input_spec(self, imgsz: int, resize: str | None = None) -> InputSpec:
        """The input block export writes at ``imgsz`` (``resize`` overrides the model's mode): what the
        runtime preprocesses with, so training and calibration see exactly what the device will."""
        return InputSpec(name="input", shape=(1, 3, imgsz, imgsz), layout="NCHW", dtype="float32", color=self.color,
                         mean=self.mean, std=self.std, resize=resize or self.resize)


def _no_class_count() -> int:
    raise CheckpointError("this model's class count is not read from a state_dict (its loader gives it)")


def _nanodet_classes(state_dict: dict[str, Any]) -> int:
    """gfl_cls outputs the classes plus 4 sides x (reg_max + 1) distribution bins (reg_max 7)."""
    return int(state_dict["head.gfl_cls.0.weight"].shape[0]) - 4 * (7 + 1)


def _nanodet_decoder(center_offset: float) -> Callable[[nn.Module], dict[str, Any]]:
    def decoder(model: NanoDet) -> dict[str, Any]:
        return {"strides": list(model.strides), "reg_max": model.head.reg_max, "center_offset": center_offset,
                "score_in_graph": "sigmoid", "distribution_in_graph": "softmax_integral"}
    return decoder


def _yolo_fastest_v2_decoder(model: YoloFastestV2) -> dict[str, Any]:
    return {"strides": list(model.strides), "anchors": [list(a) for a in model.anchors],
            "anchor_num": model.anchor_num, "score_in_graph": "sigmoid(obj)*softmax(cls)",
            "box_in_graph": "sigmoid"}


# k-means (IoU distance) of the boxes of 1500 generated training images, in 192x192 input pixels
SHAPE_ANCHORS = ((22, 26), (23, 33), (29, 38), (37, 49), (46, 62), (59, 78))
ASSETS = Path(__file__).resolve().parents[1] / "assets"

_YOLO_FASTEST_V2_COMMON = dict(family="yolo-fastestv2", deploy=YoloFastestV2Deploy, mean=(0.0, 0.0, 0.0),
                               std=(255.0, 255.0, 255.0), resize="resize", output_names=("scores", "box_sigmoid"),
                               decoder=_yolo_fastest_v2_decoder,
                               num_classes_from=lambda sd: int(sd["output_cls_layers.weight"].shape[0]),
                               postprocess={"score_threshold": 0.3, "nms_iou": 0.4, "max_detections": 100,
                                            "multi_label": False})


def _darknet_build(num_classes: int) -> nn.Module:
    raise CheckpointError("darknet models are built from the .cfg beside their .weights, not from a class count")


DARKNET_MODELS = ("yolo-fastest-1.1", "yolo-fastest-1.1-xl")


def _darknet_loader(name: str) -> Callable[[Path], tuple[nn.Module, int]]:
    """load_darknet, refusing weights whose cfg is named after another darknet model: the cfg decides
    the architecture, so XL weights given as yolo-fastest-1.1 would build XL under the wrong name."""
    def load(weights: Path) -> tuple[nn.Module, int]:
        stem = weights.with_suffix(".cfg").stem.lower()
        if stem != name and stem in DARKNET_MODELS:
            raise CheckpointError(f"{weights}: its cfg {stem}.cfg describes {stem}, not {name} (use --model {stem})")
        return load_darknet(weights)
    return load


# YOLO-Fastest v1.1 cfgs: 320x320, darknet letterbox=0 (plain resize), RGB /255 as OpenCV's blobFromImage
_DARKNET_YOLOV3_COMMON = dict(family="yolov3", build=_darknet_build, deploy=YoloV3Deploy,
                              default_imgsz=320, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), resize="resize",
                              color="RGB", output_names=("scores", "box_terms"), decoder=yolov3_decoder_params,
                              # darknet `detector test` defaults: -thresh .25, nms .45
                              postprocess={"score_threshold": 0.25, "nms_iou": 0.45, "max_detections": 100,
                                           "multi_label": False})
_NANODET_COMMON = dict(family="nanodet", deploy=NanoDetDeploy, mean=NANODET_MEAN, std=NANODET_STD,
                       output_names=("scores", "distances"), num_classes_from=_nanodet_classes)


def _nanodet_plus(name: str, backbone: str, fpn_channels: int) -> ModelSpec:
    # NanoDet-Plus COCO configs train and evaluate with keep_ratio: False (a plain warp to the input size)
    return ModelSpec(name=name, build=partial(build_nanodet_plus, backbone_name=backbone, fpn_channels=fpn_channels),
                     default_imgsz=416, resize="warp_affine", decoder=_nanodet_decoder(0.0), **_NANODET_COMMON)


MODELS: dict[str, ModelSpec] = {
    "nanodet-plus-m": _nanodet_plus("nanodet-plus-m", "shufflenetv2-1.0x", 96),
    "nanodet-plus-m-1.5x": _nanodet_plus("nanodet-plus-m-1.5x", "shufflenetv2-1.5x", 128),
    "nanodet-m": ModelSpec(name="nanodet-m", build=lambda nc: build_nanodet_v1(nc, "1.0x", 96),
                           default_imgsz=320, resize="warp_affine_keep_ratio", decoder=_nanodet_decoder(0.0),
                           **_NANODET_COMMON),
    "yolo-fastestv2": ModelSpec(name="yolo-fastestv2", build=lambda nc: YoloFastestV2(nc), default_imgsz=352,
                                **_YOLO_FASTEST_V2_COMMON),
    # darknet .weights with the same-stem .cfg beside them (dog-qiuqiu/Yolo-Fastest ModelZoo)
    **{n: ModelSpec(name=n, load=_darknet_loader(n), **_DARKNET_YOLOV3_COMMON) for n in DARKNET_MODELS},
    # trained by this project on generated shapes (python -m converters.demo_model train): works offline
    "demo-shapes": ModelSpec(name="demo-shapes", build=lambda nc: YoloFastestV2(nc, anchors=SHAPE_ANCHORS),
                             default_imgsz=192, class_names=SHAPE_CLASSES,
                             weights=ASSETS / "yolo-fastestv2-shapes.pth", **_YOLO_FASTEST_V2_COMMON),
}
# NanoDet-Plus on each seed backbone, with nanodet-plus-m's 96-channel neck and head so that only the
# backbone differs (shufflenetv2-1.0x is nanodet-plus-m itself)
MODELS.update({f"nanodet-plus-{b}": _nanodet_plus(f"nanodet-plus-{b}", b, 96)
               for b in BACKBONES if b != "shufflenetv2-1.0x"})


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
