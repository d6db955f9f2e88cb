"""NanoDet-Plus, official ONNX export (RangiLyu/nanodet ``tools/export_onnx.py``): one output.

Graph output ``predictions`` (1, N, C + 4 * (reg_max + 1)): C sigmoid class scores, then the raw
GFL distribution logits of the left, top, right, bottom distances (reg_max + 1 bins each).
Here: softmax per side, integral over bins 0..reg_max -> distance in stride units, then as the
native ``nanodet`` family: box = centre -/+ distance * stride, centre of cell (i, j) =
((j + center_offset) * s, (i + center_offset) * s). N runs over ``decoder.strides`` (default 8, 16,
32, 64), each level row-major.

Preprocessing of the official model: BGR, mean (103.53, 116.28, 123.675), std (57.375, 57.12,
58.395), ``warp_affine`` (the COCO configs use keep_ratio: False).
"""

from __future__ import annotations

import numpy as np

from .base import ImportDefaults
from .single_output import SingleOutputFamily


class NanoDetPlusDecoder(SingleOutputFamily):
    # the COCO configs: BGR, ImageNet mean/std in 0..255, keep_ratio False (a plain warp)
    import_defaults = ImportDefaults("BGR", (103.53, 116.28, 123.675), (57.375, 57.12, 58.395), "warp_affine",
                                     {"strides": [8, 16, 32, 64], "reg_max": 7, "center_offset": 0.0},
                                     {"score_threshold": 0.35, "nms_iou": 0.6, "max_detections": 100,
                                      "multi_label": True})
    default_strides = (8, 16, 32, 64)
    layout_text = "[1, N, classes + 4 * (reg_max + 1)]"

    def __init__(self, manifest, input_spec=None) -> None:
        super().__init__(manifest, input_spec)
        self.reg_max = int(manifest.decoder.get("reg_max", 7))
        self.leading_columns = 4 * (self.reg_max + 1)  # the distribution columns, after the scores here
        self._centers = (self._cells + float(manifest.decoder.get("center_offset", 0.0))) * self._strides
        self._bins = np.arange(self.reg_max + 1, dtype=np.float32)

    def candidate_boxes(self, outputs):
        p = self.predictions(outputs)
        c = len(self.class_names)
        logits = p[:, c:].reshape(-1, 4, self.reg_max + 1)
        e = np.exp(logits - logits.max(axis=2, keepdims=True))
        dist = (e @ self._bins) / e.sum(axis=2) * self._strides
        boxes = np.concatenate([self._centers - dist[:, :2], self._centers + dist[:, 2:]], axis=1)
        return self.clip(boxes), p[:, :c]
