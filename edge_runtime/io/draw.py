"""Annotate frames: class-coloured boxes with labels, and an FPS overlay."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # Detections.plot imports this module
    from ..detections import Detections


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (golden-ratio hue walk)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(image: np.ndarray, dets: Detections) -> np.ndarray:
    """Draw boxes and 'label score' tags on ``image`` in place; returns it."""
    thickness = max(1, round(min(image.shape[:2]) / 320))
    font_scale = 0.4 * thickness + 0.1
    for box, score, cid in zip(dets.boxes.astype(int), dets.scores, dets.class_ids):
        color = class_color(int(cid))
        x1, y1, x2, y2 = box.tolist()
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        text = f"{dets.class_names[cid]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - th - base if y1 - th - base >= 0 else y1
        cv2.rectangle(image, (x1, ty), (x1 + tw + 2, ty + th + base), color, -1)
        cv2.putText(image, text, (x1 + 1, ty + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return image


def draw_fps(image: np.ndarray, fps: float, latency_ms: float | None = None) -> np.ndarray:
    text = f"{fps:5.1f} FPS" + (f"  {latency_ms:5.1f} ms" if latency_ms is not None else "")
    cv2.putText(image, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    return image
