"""Annotate frames: boxes with labels (coloured by class, or by track id when tracked), counting lines and
zones with their counts, and an FPS overlay."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # Detections.plot imports this module
    from ..detections import Detections
    from ..tracking import Tracking


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (golden-ratio hue walk)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def track_color(track_id: int) -> tuple[int, int, int]:
    """The colour of a tracked box: one per id, so an id switch shows as a colour change."""
    return class_color(track_id + 7)  # offset: the first ids do not take the first classes' colours


def draw_detections(image: np.ndarray, dets: Detections) -> np.ndarray:
    """Draw boxes and 'label score' tags on ``image`` in place; returns it."""
    thickness = max(1, round(min(image.shape[:2]) / 320))
    font_scale = 0.4 * thickness + 0.1
    ids = dets.track_ids if dets.track_ids is not None else [None] * len(dets)
    for box, score, cid, track_id in zip(dets.boxes.astype(int), dets.scores, dets.class_ids, ids):
        color = class_color(int(cid)) if track_id is None else track_color(int(track_id))
        x1, y1, x2, y2 = box.tolist()
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        text = f"{dets.class_names[cid]}{'' if track_id is None else f' #{track_id}'} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - th - base if y1 - th - base >= 0 else y1
        cv2.rectangle(image, (x1, ty), (x1 + tw + 2, ty + th + base), color, -1)
        cv2.putText(image, text, (x1 + 1, ty + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return image


def _outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, color: tuple[int, int, int]
                   ) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_regions(image: np.ndarray, tracking: Tracking) -> np.ndarray:
    """Counting lines (with in / out totals, an arrow pointing "in") and zones (with how many are inside)."""
    thickness = max(1, round(min(image.shape[:2]) / 320))
    scale = 0.45 * thickness + 0.1
    for counter in tracking.lines:
        (sx, sy), (ex, ey) = counter.line.start, counter.line.end
        start, end = (round(sx), round(sy)), (round(ex), round(ey))
        cv2.line(image, start, end, (0, 255, 255), thickness + 1, cv2.LINE_AA)
        mx, my, length = (sx + ex) / 2, (sy + ey) / 2, max(float(np.hypot(ex - sx, ey - sy)), 1.0)
        nx, ny = -(ey - sy) / length * 25, (ex - sx) / length * 25  # towards the line's right: "in"
        cv2.arrowedLine(image, (round(mx), round(my)), (round(mx + nx), round(my + ny)), (0, 255, 255), thickness,
                        cv2.LINE_AA, tipLength=0.4)
        n_in, n_out = sum(counter.counts["in"].values()), sum(counter.counts["out"].values())
        _outlined_text(image, f"{counter.line.name}: in {n_in} out {n_out}", (start[0] + 4, start[1] - 6), scale,
                       (0, 255, 255))
    for zone_counter in tracking.zones:
        polygon = np.round(np.asarray(zone_counter.zone.polygon)).astype(np.int32)
        cv2.polylines(image, [polygon], True, (255, 128, 0), thickness + 1, cv2.LINE_AA)
        x, y = polygon.min(axis=0)
        _outlined_text(image, f"{zone_counter.zone.name}: {len(zone_counter.present)} inside", (int(x) + 4,
                       int(y) + 18), scale, (255, 160, 0))
    return image


def draw_fps(image: np.ndarray, fps: float, latency_ms: float | None = None) -> np.ndarray:
    text = f"{fps:5.1f} FPS" + (f"  {latency_ms:5.1f} ms" if latency_ms is not None else "")
    _outlined_text(image, text, (8, 24), 0.7, (255, 255, 255))
    return image
