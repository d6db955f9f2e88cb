"""Detections: the one result type used by the pipeline, drawing, JSON output and validation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import EdgeRuntimeError


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in original-image pixels
    scores: np.ndarray  # (N,) float32, descending
    class_ids: np.ndarray  # (N,) int32
    class_names: Sequence[str]
    track_ids: np.ndarray | None = None  # (N,) int64 ids kept across frames, when a tracker made these

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def labels(self) -> list[str]:
        return [self.class_names[i] for i in self.class_ids]

    def to_list(self) -> list[dict[str, Any]]:
        records = [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 5),
                    "class_id": int(cid), "label": self.class_names[cid]}
                   for box, score, cid in zip(self.boxes, self.scores, self.class_ids)]
        if self.track_ids is not None:
            for record, track_id in zip(records, self.track_ids):
                record["track_id"] = int(track_id)
        return records

    def to_json(self) -> dict[str, Any]:
        """``{"detections": [{"box", "score", "class_id", "label"}, ...]}`` (and ``"track_id"`` when tracked): what
        each ``run --json`` line holds beside the frame's index and name."""
        return {"detections": self.to_list()}

    @classmethod
    def from_json(cls, data: dict[str, Any], class_names: Sequence[str]) -> "Detections":
        """The inverse of :meth:`to_json` (boxes to 0.01 px, scores to 1e-5, as written) for a model with
        ``class_names``; a record whose label disagrees with its class_id is a ValueError."""
        records = data["detections"]
        for r in records:
            if not 0 <= r["class_id"] < len(class_names) or class_names[r["class_id"]] != r["label"]:
                raise ValueError(f"detection {r}: class_id does not name label {r['label']!r} in this model's "
                                 f"{len(class_names)} classes")
        tracked = bool(records) and all("track_id" in r for r in records)
        if not records:
            return cls.empty(class_names)
        return cls(np.array([r["box"] for r in records], np.float32), np.array([r["score"] for r in records],
                   np.float32), np.array([r["class_id"] for r in records], np.int32), class_names,
                   np.array([r["track_id"] for r in records], np.int64) if tracked else None)

    def plot(self, image: np.ndarray | str | Path) -> np.ndarray:
        """A copy of ``image`` (array or image file) with the boxes and 'label score' tags drawn."""
        from .io.draw import draw_detections
        from .io.sources import load_image

        return draw_detections(load_image(image).copy(), self)

    def save(self, path: str | Path, image: np.ndarray | str | Path | None = None) -> Path:
        """Write ``path`` whole or not at all: JSON (:meth:`to_json`) when it ends in .json, else ``image``
        with the detections drawn, in the format its suffix names (.jpg, .png, ...)."""
        from .fsutil import atomic_write_image, atomic_write_text

        path = Path(path)
        if not path.parent.is_dir():
            raise EdgeRuntimeError(f"{path}: folder {path.parent} does not exist")
        if path.suffix.lower() == ".json":
            return atomic_write_text(path, json.dumps(self.to_json(), indent=2))
        if image is None:
            raise EdgeRuntimeError(f"{path}: saving an annotated image needs the image (save(path, image)); "
                                   f"name a .json file for the detections alone")
        return atomic_write_image(path, self.plot(image))

    @classmethod
    def empty(cls, class_names: Sequence[str]) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), class_names)
