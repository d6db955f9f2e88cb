"""Score filtering and class-wise NMS, vectorised in numpy with OpenCV's C++ NMS."""

from __future__ import annotations

import cv2
import numpy as np

from .preprocess import ImageMeta


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
                   max_detections: int, multi_label: bool = True, pre_nms_top_k: int = 2000
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise NMS over the (box, class) pairs scoring above the threshold.

    ``multi_label``: every class above the threshold is a candidate (NanoDet's multiclass_nms);
    otherwise only each box's best class (YOLO-FastestV2's rule).
    ``boxes``: (N, 4) xyxy, ``scores``: (N, C). Returns kept boxes, scores and class ids, best first.
    """
    if multi_label:
        idx, cls = np.nonzero(scores > score_threshold)
    else:
        best = scores.argmax(axis=1)
        idx = np.nonzero(scores[np.arange(scores.shape[0]), best] > score_threshold)[0]
        cls = best[idx]
    if idx.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    cand_scores = scores[idx, cls]
    if idx.size > pre_nms_top_k:
        top = np.argpartition(-cand_scores, pre_nms_top_k)[:pre_nms_top_k]
        idx, cls, cand_scores = idx[top], cls[top], cand_scores[top]
    cand_boxes = boxes[idx]
    xywh = np.concatenate([cand_boxes[:, :2], cand_boxes[:, 2:] - cand_boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxesBatched(xywh.astype(np.float64), cand_scores.astype(np.float32),
                                   cls.astype(np.int32), score_threshold, iou_threshold)
    keep = np.asarray(keep, np.int64).reshape(-1)
    keep = keep[np.argsort(-cand_scores[keep], kind="stable")][:max_detections]
    return cand_boxes[keep].astype(np.float32), cand_scores[keep].astype(np.float32), cls[keep].astype(np.int32)


def boxes_to_original(boxes: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Map xyxy boxes from model-input pixels to original pixels and clip to the image."""
    m = meta.to_original
    x = boxes[:, [0, 2]] * m[0, 0] + m[0, 2]
    y = boxes[:, [1, 3]] * m[1, 1] + m[1, 2]
    out = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, meta.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, meta.height)
    return out.astype(np.float32)
