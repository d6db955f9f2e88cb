"""Image -> model input tensor, driven by the manifest's ``input`` block.

One warp/resize into a preallocated buffer, one fused multiply-add for mean/std, one copy into the
model layout. The inverse affine transform travels with the tensor so that boxes can be mapped
back to original-image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .manifest import InputSpec


@dataclass(frozen=True)
class ImageMeta:
    height: int
    width: int
    to_original: np.ndarray  # (2, 3) affine: model-input pixel coords -> original pixel coords


LETTERBOX_PAD = 114  # the grey Ultralytics and YOLOX pad with


def to_layout(tensor: np.ndarray, layout: str) -> np.ndarray:
    """An NCHW batch as an artifact's input ``layout`` takes it (``NHWC``: TFLite graphs)."""
    return np.ascontiguousarray(tensor.transpose(0, 2, 3, 1)) if layout == "NHWC" else tensor


def letterbox_placement(src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: str) -> tuple[int, int, int, int]:
    """(height, width, top, left) of the resized image inside the padded input, rounded as
    Ultralytics' ``LetterBox`` (``letterbox``: centred) and YOLOX's ``preproc``
    (``letterbox_top_left``: truncated size, padded bottom-right)."""
    (h, w), (dh, dw) = src_hw, dst_hw
    r = min(dh / h, dw / w)
    if mode == "letterbox_top_left":
        return int(h * r), int(w * r), 0, 0
    nh, nw = int(round(h * r)), int(round(w * r))
    return nh, nw, int(round((dh - nh) / 2 - 0.1)), int(round((dw - nw) / 2 - 0.1))


def resize_matrix(src_hw: tuple[int, int], dst_hw: tuple[int, int], mode: str) -> np.ndarray:
    """2x3 affine taking original pixel coords to model-input coords.

    ``warp_affine`` stretches to the input size; ``warp_affine_keep_ratio`` scales to fit and
    centres (both as NanoDet's ``get_resize_matrix``); ``resize`` is cv2.resize's plain stretch;
    the ``letterbox`` modes resize to fit with cv2.resize and pad with grey 114 (Ultralytics, YOLOX).
    """
    (h, w), (dh, dw) = src_hw, dst_hw
    if mode == "warp_affine_keep_ratio":
        r = dh / h if w / h < dw / dh else dw / w
        return np.array([[r, 0, 0.5 * dw - r * w / 2], [0, r, 0.5 * dh - r * h / 2]], np.float64)
    if mode in ("letterbox", "letterbox_top_left"):
        nh, nw, top, left = letterbox_placement(src_hw, dst_hw, mode)
        return np.array([[nw / w, 0, left], [0, nh / h, top]], np.float64)
    return np.array([[dw / w, 0, 0], [0, dh / h, 0]], np.float64)


class ImagePreprocessor:
    """Reusable: buffers are allocated once per input size and reused for every frame."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.h, self.w = spec.size_hw
        mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
        # model channel c reads image (BGR) channel src[c]
        self._src = (2, 1, 0) if spec.color == "RGB" else (0, 1, 2)
        self._scale = (1.0 / std).astype(np.float32)
        self._bias = (-mean / std).astype(np.float32)
        self._resized = np.empty((self.h, self.w, 3), np.uint8)
        self.nchw = spec.layout == "NCHW"
        shape = (1, 3, self.h, self.w) if self.nchw else (1, self.h, self.w, 3)
        self.shape = shape
        self._tensor = self.new_tensor()

    def new_tensor(self) -> np.ndarray:
        """An empty model-input buffer, for callers that keep several frames in flight."""
        return np.empty(self.shape, np.float32)

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, ImageMeta]:
        """``image``: HxWx3 uint8 BGR (as OpenCV reads it). Writes into ``out`` (from ``new_tensor``)
        or else into an internal tensor that the next call reuses (copy it to keep it); returns the
        tensor and the metadata to map boxes back. Not thread-safe: one caller per preprocessor."""
        ih, iw = image.shape[:2]
        m = resize_matrix((ih, iw), (self.h, self.w), self.spec.resize)
        if self.spec.resize == "resize":
            cv2.resize(image, (self.w, self.h), dst=self._resized, interpolation=cv2.INTER_LINEAR)
        elif self.spec.resize.startswith("letterbox"):
            nh, nw, top, left = letterbox_placement((ih, iw), (self.h, self.w), self.spec.resize)
            self._resized.fill(LETTERBOX_PAD)
            self._resized[top:top + nh, left:left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        else:
            cv2.warpAffine(image, m, (self.w, self.h), dst=self._resized, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        # per-plane multiply-add on contiguous planes: ~5x faster than broadcasting over HxWx3
        tensor = self._tensor if out is None else out
        planes = cv2.split(self._resized)
        for c, src in enumerate(self._src):
            dst = tensor[0, c] if self.nchw else tensor[0, :, :, c]
            np.multiply(planes[src], self._scale[c], out=dst)
            dst += self._bias[c]
        return tensor, ImageMeta(ih, iw, cv2.invertAffineTransform(m))
