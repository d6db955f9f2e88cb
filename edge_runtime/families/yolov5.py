"""YOLOv5 (ultralytics/yolov5 ``export.py``): the Detect layer decodes in the graph.

Graph output ``predictions`` (1, N, 5 + C): cx, cy, w, h in input pixels, objectness, C class
scores, all sigmoid'ed and decoded already. N = ``decoder.anchors_per_cell`` (default 3) rows per
cell over ``decoder.strides`` (default 8, 16, 32): 25200 for 640x640 (the export orders a level's
rows anchor, y, x; the boxes are decoded already, so only the count matters here).
score = objectness * class.

Preprocessing of the official model: RGB / 255, letterbox centred with pad 114 (``letterbox``).
"""

from __future__ import annotations

from .base import ImportDefaults
from .single_output import SingleOutputFamily, xywh_to_xyxy


class YoloV5Decoder(SingleOutputFamily):
    # Ultralytics: RGB / 255, letterbox centred with pad 114
    import_defaults = ImportDefaults("RGB", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "letterbox",
                                     {"strides": [8, 16, 32], "anchors_per_cell": 3},
                                     {"score_threshold": 0.25, "nms_iou": 0.45, "max_detections": 100,
                                      "multi_label": False})
    leading_columns = 5
    layout_text = "[1, N, 5 + classes]"

    @property
    def anchors_per_cell(self) -> int:
        return int(self.manifest.decoder.get("anchors_per_cell", 3))

    def candidate_boxes(self, outputs):
        p = self.predictions(outputs)
        return self.clip(xywh_to_xyxy(p[:, :2], p[:, 2:4])), p[:, 4:5] * p[:, 5:]
