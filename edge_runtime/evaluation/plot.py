"""A validation report as one PNG a person can read at a glance, drawn with OpenCV (no matplotlib
on the device): mAP and AP50 bars per artifact on the left, precision-recall curves at IoU 0.5 on
the right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..fsutil import atomic_write_image

# BGR, distinguishable in print and for the common colour-vision deficiencies (Okabe-Ito)
PALETTE = [(178, 114, 0), (0, 159, 230), (115, 158, 0), (167, 121, 204), (0, 94, 213), (233, 180, 86),
           (66, 228, 240), (0, 0, 0)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
PANEL, MARGIN = 520, 60


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45, color=(40, 40, 40)) -> None:
    cv2.putText(img, text, org, FONT, scale, color, 1, cv2.LINE_AA)


def _axes(img: np.ndarray, x0: int, y0: int, w: int, h: int, title: str, xlabel: str) -> None:
    """Frame, 0..1 y grid every 0.2, title and x label for a panel whose plot area starts at (x0, y0)."""
    for i in range(6):
        y = y0 + h - int(h * i / 5)
        cv2.line(img, (x0, y), (x0 + w, y), (225, 225, 225), 1)
        _text(img, f"{i / 5:.1f}", (x0 - 32, y + 4))
    cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (90, 90, 90), 1)
    _text(img, title, (x0, y0 - 14), 0.55)
    _text(img, xlabel, (x0 + w // 2 - 30, y0 + h + 42))


def validation_chart(report: dict[str, Any], path: str | Path) -> Path:
    rows = report["artifacts"]
    width, height = 2 * PANEL + 3 * MARGIN, PANEL + 2 * MARGIN
    img = np.full((height, width, 3), 255, np.uint8)
    h = PANEL - 40
    # left: bars, mAP solid and AP50 hatched-light beside it
    x0, y0, w = MARGIN, MARGIN, PANEL
    _axes(img, x0, y0, w, h, f"{report['model']}: mAP per artifact ({report['protocol']['images']} images)", "")
    slot = w / max(len(rows), 1)
    bar = max(4, min(int(slot * 0.3), 48))
    for i, row in enumerate(rows):
        color = PALETTE[i % len(PALETTE)]
        cx = int(x0 + slot * (i + 0.5))
        for offset, value, light in ((-bar, row["map"], False), (0, row["map50"], True)):
            top = y0 + h - int(h * max(value, 0.0))
            fill = tuple(int(c + (255 - c) * 0.55) for c in color) if light else color
            cv2.rectangle(img, (cx + offset, top), (cx + offset + bar, y0 + h), fill, -1)
            _text(img, f"{value:.3f}", (cx + offset - 4, top - 5), 0.35)
        _text(img, f"{row['format']} {row['precision']}", (cx - bar - 6, y0 + h + 18), 0.4, color)
    _text(img, "dark: mAP@[.5:.95]   light: AP50", (x0 + 8, y0 + 18), 0.4)
    # right: PR curves
    x0 = 2 * MARGIN + PANEL
    _axes(img, x0, y0, w, h, "precision-recall at IoU 0.5 (class mean)", "recall")
    for i in range(6):
        _text(img, f"{i / 5:.1f}", (x0 + int(w * i / 5) - 10, y0 + h + 18))
    for i, row in enumerate(rows):
        curve = row["pr_curve_iou50"]
        pts = np.array([[x0 + int(w * r), y0 + h - int(h * max(p, 0.0))]
                        for r, p in zip(curve["recall"], curve["precision"])], np.int32)
        cv2.polylines(img, [pts], False, PALETTE[i % len(PALETTE)], 2, cv2.LINE_AA)
        _text(img, f"{row['format']} {row['precision']}  AP50 {row['map50']:.3f}", (x0 + w - 200, y0 + 20 + 18 * i),
              0.42, PALETTE[i % len(PALETTE)])
    return atomic_write_image(path, img)
