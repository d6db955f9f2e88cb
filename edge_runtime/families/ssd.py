"""SSD with its post-processing in the graph: the TensorFlow Object Detection API's exports (TFLite
``TFLite_Detection_PostProcess``, e.g. the classic ``ssd_mobilenet_v1`` ``detect.tflite``; tf2onnx
exports of the same models).

Four graph outputs, told apart by name (``detection_boxes`` ..., or the post-process op's output
index ``:0`` .. ``:3``), since their order in a flatbuffer is arbitrary:
  ``boxes``   (1, N, 4) ymin, xmin, ymax, xmax, normalised to the input (0..1)
  ``classes`` (1, N)    class index as float, 0-based over the real classes (no background)
  ``scores``  (1, N)    score of that class
  ``count``   (1,)      how many of the N rows are filled
N is the graph's ``max_detections``. The graph has already run NMS; the runtime's own score
threshold, class-wise NMS and top-k run again on its rows (harmless, and they apply the manifest's
thresholds). Preprocessing of the official models: RGB, (x - 127.5) / 127.5, plain resize; a
quantised uint8 input is fed through its own scale and zero point by the TFLite backend.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .base import Family, ImportDefaults

_ROLE_WORDS = (("boxes", "box"), ("classes", "class"), ("scores", "score"), ("count", "num"))


def _index_suffix(name: str) -> int:
    """The op output index a TF tensor name carries (``X:2`` -> 2, ``X`` -> 0)."""
    match = re.search(r":(\d+)$", name)
    return int(match.group(1)) if match else 0


class SsdDecoder(Family):
    output_roles = ("boxes", "classes", "scores", "count")
    # [-1, 1] RGB input, stretched; the TF OD API examples keep scores >= 0.5
    import_defaults = ImportDefaults("RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), "resize", {},
                                     {"score_threshold": 0.5, "nms_iou": 0.6, "max_detections": 100,
                                      "multi_label": False})
    coco_id_slots = True  # TF models predict the 90 COCO category ids, gaps included

    @property
    def num_candidates(self) -> int:
        # N is the graph's max_detections, read from the boxes output when the model loads
        return int(self.manifest.decoder.get("max_detections", 0))

    def imported_decoder(self, shapes: list[tuple[int | str, ...]]) -> dict[str, Any]:
        return {"max_detections": int(shapes[0][1])}  # the graph's own: rows of its boxes output

    def output_shape_problem(self, shape: tuple[int | str, ...]) -> str | None:
        if len(shape) == 3 and shape[0] in (1, "?") and shape[2] == 4:
            return None
        shown = "[" + ", ".join(str(d) for d in shape) + "]"
        return f"has shape {shown}; family ssd expects boxes [1, N, 4] (then classes [1, N], scores [1, N], count [1])"

    def match_outputs(self, outputs: list) -> tuple[str, ...] | None:
        """Graph output names in role order: by the TF OD API's output names, else by the
        post-process op's output index; None unless there are exactly the four expected shapes."""
        if len(outputs) != 4:
            return None
        by_word = {}
        for role, word in _ROLE_WORDS:
            hits = [o for o in outputs if word in o.name.lower()]
            if len(hits) == 1:
                by_word[role] = hits[0]
        ordered = [by_word[r] for r in self.output_roles] if len(by_word) == 4 else \
            sorted(outputs, key=lambda o: _index_suffix(o.name))
        boxes, classes, scores, count = (tuple(o.shape) for o in ordered)
        n = boxes[1] if len(boxes) == 3 else None
        if self.output_shape_problem(boxes) or classes != (1, n) or scores != (1, n) or len(count) not in (1, 2):
            return None
        return tuple(o.name for o in ordered)

    def candidate_boxes(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        boxes, classes, scores, count = (np.asarray(o, np.float32).reshape(-1) for o in outputs)
        n = min(int(count[0]), len(scores))
        h, w = self.input_hw
        yxyx = boxes.reshape(-1, 4)[:n]
        xyxy = np.clip(yxyx[:, [1, 0, 3, 2]], 0.0, 1.0) * np.array([w, h, w, h], np.float32)
        ids = classes[:n].astype(np.int64)
        known = (ids >= 0) & (ids < len(self.class_names))  # a shorter label list than the model's: drop the rest
        matrix = np.zeros((int(known.sum()), len(self.class_names)), np.float32)
        matrix[np.arange(len(matrix)), ids[known]] = scores[:n][known]
        return xyxy[known], matrix
