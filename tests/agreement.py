"""Detection agreement between two artifacts of one package (FP32 reference vs a converted one)."""

from __future__ import annotations

import numpy as np

from edge_runtime import Detections


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-9)


def unmatched(a: Detections, b: Detections, score: float = 0.4, iou_min: float = 0.8, slack: float = 0.3
              ) -> list[str]:
    """Detections of ``a`` scoring above ``score`` with no same-class box in ``b`` (scoring above
    ``slack``, so a box just under the threshold on the other side still counts) at IoU > ``iou_min``."""
    misses = []
    for box, s, c in zip(a.boxes, a.scores, a.class_ids):
        if s <= score:
            continue
        keep = (b.class_ids == c) & (b.scores > slack)
        if not keep.any() or iou(box, b.boxes[keep]).max() <= iou_min:
            misses.append(f"{a.class_names[c]} {s:.2f} {np.round(box).astype(int).tolist()}")
    return misses


def assert_agree(reference: Detections, other: Detections, what: str) -> None:
    """The issue's rule: same classes, IoU > 0.8, for boxes scoring > 0.4 on either side."""
    lost, extra = unmatched(reference, other), unmatched(other, reference)
    assert not lost and not extra, f"{what}: missing {lost}, extra {extra}"
