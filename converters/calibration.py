"""INT8 calibration data: images from a folder, every k-th frame of a video, or a COCO json's images.

Tensors are made by the runtime's own ``ImagePreprocessor`` from the package manifest, so the
quantiser sees exactly what the device will feed the model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from edge_runtime.errors import SourceError
from edge_runtime.manifest import InputSpec
from edge_runtime.preprocess import ImagePreprocessor
from edge_runtime.sources import IMAGE_EXTS, read_image


def _spread(items: list, size: int) -> list:
    """``size`` items evenly spread over the list (all of them when it is short)."""
    if len(items) <= size:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, size).round().astype(int)]


def _coco_images(path: Path) -> list[Path]:
    try:
        data = json.loads(path.read_text())
        names = [img["file_name"] for img in data["images"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SourceError(f"{path}: not a COCO json with an 'images' list ({exc})") from None
    roots = [path.parent, path.parent / "images", path.parent.parent / "images"]
    found = []
    for name in names:
        hit = next((root / name for root in roots if (root / name).is_file()), None)
        if hit is not None:
            found.append(hit)
    if not found:
        raise SourceError(f"{path}: none of its {len(names)} images found next to it (or in images/)")
    return found


class CalibrationSet:
    """Up to ``size`` preprocessed (1, 3, H, W) float32 tensors, spread over the source."""

    def __init__(self, source: str | Path, input_spec: InputSpec, size: int = 100, progress: bool = True) -> None:
        self.source = Path(source)
        prep = ImagePreprocessor(replace(input_spec, layout="NCHW", shape=(1, 3, *input_spec.size_hw)))
        if self.source.is_dir():
            self.kind = "folder"
            frames = (read_image(p) for p in _spread(
                sorted(p for p in self.source.iterdir() if p.suffix.lower() in IMAGE_EXTS), size))
        elif self.source.suffix.lower() == ".json":
            self.kind = "coco"
            frames = (read_image(p) for p in _spread(_coco_images(self.source), size))
        elif self.source.is_file():
            self.kind = "video"
            frames = self._video_frames(size)
        else:
            raise SourceError(f"{self.source}: no such calibration folder, video or COCO json")
        self.tensors: list[np.ndarray] = []
        for image in tqdm(frames, total=size, desc="calibration data", unit="img", disable=not progress,
                          leave=False):
            self.tensors.append(prep(image)[0].copy())
        if not self.tensors:
            raise SourceError(f"{self.source}: holds no images to calibrate with")

    def _video_frames(self, size: int):
        cap = cv2.VideoCapture(str(self.source))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or count <= 0:
            raise SourceError(f"{self.source}: not a readable video")
        self.every = max(1, count // size)
        try:
            for index in range(0, count, self.every)[:size]:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, frame = cap.read()
                if ok:
                    yield frame
        finally:
            cap.release()

    def __len__(self) -> int:
        return len(self.tensors)

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = {"source": self.source.name, "kind": self.kind, "images": len(self)}
        if self.kind == "video":
            info["every_kth_frame"] = self.every
        return info
