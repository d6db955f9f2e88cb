"""YOLOv8 / YOLO11 (ultralytics ``export``): anchor-free, decoded in the graph, no objectness.

Graph output ``predictions`` (1, 4 + C, N) -- channels first, as ultralytics exports it -- or
(1, N, 4 + C): rows cx, cy, w, h in input pixels, then C sigmoid class scores. Which axis is which
is read from the shape (the one of size 4 + C is the row; (1, 4 + C, N) when both are). N runs over
``decoder.strides`` (default 8, 16, 32): 8400 for 640x640.

Preprocessing of the official model: RGB / 255, letterbox centred with pad 114 (``letterbox``).
"""

from __future__ import annotations

import numpy as np

from .base import ImportDefaults
from .single_output import SingleOutputFamily, xywh_to_xyxy


class YoloV8Decoder(SingleOutputFamily):
    # Ultralytics: RGB / 255, letterbox centred with pad 114
    import_defaults = ImportDefaults("RGB", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "letterbox",
                                     {"strides": [8, 16, 32]},
                                     {"score_threshold": 0.25, "nms_iou": 0.7, "max_detections": 100,
                                      "multi_label": False})
    leading_columns = 4
    layout_text = "[1, 4 + classes, N] (or [1, N, 4 + classes])"

    axis_orders = ((2, 1), (1, 2))

    def predictions(self, outputs):
        p = np.asarray(outputs[0][0], np.float32)
        return p.T if p.shape[0] == self.row_width else p

    def candidate_boxes(self, outputs):
        p = self.predictions(outputs)
        return self.clip(xywh_to_xyxy(p[:, :2], p[:, 2:4])), p[:, 4:]
