"""NanoDet and NanoDet-Plus (GFL heads).

Graph outputs (sigmoid and the softmax-integral of the distribution are in the graph):
  ``scores``    (1, N, C) class scores in 0..1
  ``distances`` (1, N, 4) left, top, right, bottom distances in stride units (0..reg_max)
N runs over the levels in ``decoder.strides`` (finest first), each row-major over a
ceil(H/stride) x ceil(W/stride) grid. Box = centre -/+ distance * stride, where the centre of cell
(i, j) is ((j + center_offset) * stride, (i + center_offset) * stride), clipped to the input.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Family


class NanoDetDecoder(Family):
    output_roles = ("scores", "distances")

    def __init__(self, manifest, input_spec=None) -> None:
        super().__init__(manifest, input_spec)
        h, w = self.input_hw
        offset = float(self.param("center_offset"))
        centers, strides = [], []
        for s in self.param("strides"):
            fh, fw = math.ceil(h / s), math.ceil(w / s)
            ys, xs = np.meshgrid((np.arange(fh) + offset) * s, (np.arange(fw) + offset) * s, indexing="ij")
            centers.append(np.stack([xs.ravel(), ys.ravel()], 1))
            strides.append(np.full((fh * fw, 1), s))
        self._centers = np.concatenate(centers).astype(np.float32)
        self._strides = np.concatenate(strides).astype(np.float32)
        self._max_xy = np.array([w, h, w, h], np.float32)

    @property
    def num_candidates(self) -> int:
        return len(self._centers)

    def candidate_boxes(self, outputs):
        scores, dist = outputs[0][0], outputs[1][0]
        d = dist * self._strides
        boxes = np.concatenate([self._centers - d[:, :2], self._centers + d[:, 2:]], axis=1)
        np.clip(boxes, 0, self._max_xy, out=boxes)
        return boxes, scores
