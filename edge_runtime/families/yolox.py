"""YOLOX, official ONNX export (``tools/export_onnx.py``, ``head.decode_in_inference = False``).

Graph output ``predictions`` (1, N, 5 + C): per anchor-free cell tx, ty, tw, th (raw),
objectness, C class scores. YOLOXHead applies sigmoid to objectness and classes in the graph in
this mode (``decoder.sigmoid_in_graph``, default true; false applies it here).
N runs over ``decoder.strides`` (default 8, 16, 32), each level row-major (y then x).
Decode, in input pixels: cx = (tx + gx) * s, cy = (ty + gy) * s, w = exp(tw) * s, h = exp(th) * s;
score = objectness * class score.

Preprocessing of the official model: BGR 0..255, no mean/std, letterbox padded bottom-right with
114 (``letterbox_top_left``).
"""

from __future__ import annotations

import numpy as np

from .base import ImportDefaults
from .single_output import SingleOutputFamily, sigmoid, xywh_to_xyxy

# exp() argument cap: a garbage tw would overflow float32 to inf; e^20 strides is already absurd
_MAX_LOG_WH = 20.0


class YoloxDecoder(SingleOutputFamily):
    # BGR 0..255, letterbox padded bottom-right with 114
    import_defaults = ImportDefaults("BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "letterbox_top_left",
                                     {"strides": [8, 16, 32], "sigmoid_in_graph": True},
                                     {"score_threshold": 0.3, "nms_iou": 0.45, "max_detections": 100,
                                      "multi_label": False})
    leading_columns = 5
    layout_text = "[1, N, 5 + classes]"

    def candidate_boxes(self, outputs):
        p = self.predictions(outputs)
        cxcy = (p[:, :2] + self._cells) * self._strides
        wh = np.exp(np.minimum(p[:, 2:4], _MAX_LOG_WH)) * self._strides
        obj, cls = p[:, 4:5], p[:, 5:]
        if not self.manifest.decoder.get("sigmoid_in_graph", True):
            obj, cls = sigmoid(obj), sigmoid(cls)
        return self.clip(xywh_to_xyxy(cxcy, wh)), obj * cls
