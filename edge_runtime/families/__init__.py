"""Family registry: manifest ``model.family`` -> decoder class. One file + one line per family.

A family class declares its output roles, and for a foreign export (``edge-runtime import``) its
preprocessing and postprocess defaults (``import_defaults``) and import checks (base.py)."""

from __future__ import annotations

from ..errors import ManifestError
from ..manifest import InputSpec, Manifest
from .base import Family, ImportDefaults
from .nanodet import NanoDetDecoder
from .nanodet_plus import NanoDetPlusDecoder
from .ssd import SsdDecoder
from .yolo_fastest_v2 import YoloFastestV2Decoder
from .yolov3 import YoloV3Decoder
from .yolov5 import YoloV5Decoder
from .yolov8 import YoloV8Decoder
from .yolox import YoloxDecoder

FAMILIES: dict[str, type[Family]] = {
    "nanodet": NanoDetDecoder,  # NanoDet v1 and NanoDet-Plus share the GFL output layout
    "yolo-fastestv2": YoloFastestV2Decoder,
    "yolov3": YoloV3Decoder,  # darknet YOLOv3-style heads: YOLO-Fastest v1.1 / 1.1-XL
    # foreign exports with one prediction tensor, brought in by `edge-runtime import` (importer.py)
    "yolox": YoloxDecoder,
    "yolov5": YoloV5Decoder,
    "yolov8": YoloV8Decoder,
    "nanodet-plus": NanoDetPlusDecoder,  # official NanoDet-Plus ONNX: scores + raw GFL logits in one tensor
    "ssd": SsdDecoder,  # TF Object Detection API SSD with its post-processing in the graph (detect.tflite)
}


def importable_families() -> tuple[str, ...]:
    """The families ``edge-runtime import`` accepts: those that declare import defaults."""
    return tuple(name for name, cls in FAMILIES.items() if cls.import_defaults is not None)


def make_family(manifest: Manifest, input_spec: InputSpec | None = None) -> Family:
    try:
        cls = FAMILIES[manifest.family]
    except KeyError:
        raise ManifestError(f"{manifest.path}: unknown model.family {manifest.family!r} "
                            f"(known: {', '.join(FAMILIES)})") from None
    return cls(manifest, input_spec)


__all__ = ["FAMILIES", "Family", "ImportDefaults", "importable_families", "make_family"]
