"""INT8 calibration data: images from a folder, every k-th frame of a video, or a COCO json's images.

Tensors are made by the runtime's own ``ImagePreprocessor`` from the package manifest, so the
quantiser sees exactly what the device will feed the model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from edge_runtime.errors import SourceError
from edge_runtime.io.sources import IMAGE_EXTS, read_image
from edge_runtime.manifest import InputSpec
from edge_runtime.preprocess import ImagePreprocessor


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
    """Up to ``size`` preprocessed (1, 3, H, W) float32 tensors, spread over the source.

    ``exclude`` (another set's ``used``) leaves those items out: held-out images for checking an
    INT8 model come from the same source as its calibration images but are never among them.
    """

    def __init__(self, source: str | Path, input_spec: InputSpec, size: int = 100, progress: bool = True,
                 exclude: Sequence[str] = (), desc: str = "calibration data") -> None:
        self.source = Path(source)
        prep = ImagePreprocessor(replace(input_spec, layout="NCHW", shape=(1, 3, *input_spec.size_hw)))
        skip = set(exclude)
        if self.source.is_dir():
            self.kind = "folder"
            paths = _spread([p for p in sorted(self.source.iterdir())
                             if p.suffix.lower() in IMAGE_EXTS and str(p) not in skip], size)
            self.used = [str(p) for p in paths]
            frames = (read_image(p) for p in paths)
        elif self.source.suffix.lower() == ".json":
            self.kind = "coco"
            paths = _spread([p for p in _coco_images(self.source) if str(p) not in skip], size)
            self.used = [str(p) for p in paths]
            frames = (read_image(p) for p in paths)
        elif self.source.is_file():
            self.kind = "video"
            frames = self._video_frames(size, skip)
        else:
            raise SourceError(f"{self.source}: no such calibration folder, video or COCO json")
        self.tensors: list[np.ndarray] = []
        for image in tqdm(frames, total=size, desc=desc, unit="img", disable=not progress, leave=False):
            self.tensors.append(prep(image)[0].copy())
        if not self.tensors:
            raise SourceError(f"{self.source}: holds no {'more ' if skip else ''}images to "
                              f"{'hold out' if skip else 'calibrate with'}")

    def _video_frames(self, size: int, skip: set[str]):
        cap = cv2.VideoCapture(str(self.source))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or count <= 0:
            raise SourceError(f"{self.source}: not a readable video")
        self.every = max(1, count // size)
        # held-out frames sit half-way between the calibration ones
        start = self.every // 2 if skip else 0
        self.used = [f"frame {i}" for i in range(start, count, self.every)[:size] if f"frame {i}" not in skip]
        try:
            for name in self.used:
                cap.set(cv2.CAP_PROP_POS_FRAMES, int(name.split()[1]))
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
