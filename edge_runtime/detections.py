"""Detections: the one result type used by the pipeline, drawing, JSON output and validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in original-image pixels
    scores: np.ndarray  # (N,) float32, descending
    class_ids: np.ndarray  # (N,) int32
    class_names: Sequence[str]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def labels(self) -> list[str]:
        return [self.class_names[i] for i in self.class_ids]

    def to_list(self) -> list[dict[str, Any]]:
        return [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
                 "class_id": int(cid), "label": self.class_names[cid]}
                for box, score, cid in zip(self.boxes, self.scores, self.class_ids)]

    @classmethod
    def empty(cls, class_names: Sequence[str]) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), class_names)
