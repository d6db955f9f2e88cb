"""YOLO-FastestV2 (anchor-based, two levels, three anchors per level).

Graph outputs:
  ``scores``      (1, N, C) sigmoid(objectness) * softmax(class logits)
  ``box_sigmoid`` (1, N, 4) sigmoid of (tx, ty, tw, th)
N runs over levels (stride 16 then 32), rows, columns, then anchors. As in the official decoder:
cx = (2*sx - 0.5 + col) * stride, cy likewise, w = (2*sw)^2 * anchor_w, h = (2*sh)^2 * anchor_h.
"""

from __future__ import annotations

import numpy as np

from ..errors import ManifestError
from .base import Family, grid_cells


class YoloFastestV2Decoder(Family):
    output_roles = ("scores", "box_sigmoid")

    def __init__(self, manifest, input_spec=None) -> None:
        super().__init__(manifest, input_spec)
        h, w = self.input_hw
        a = int(self.param("anchor_num"))
        anchors = np.asarray(self.param("anchors"), np.float32)
        if anchors.size % (2 * a) or anchors.size // (2 * a) < len(self.param("strides")):
            raise ManifestError(f"{manifest.path}: decoder.anchors holds {anchors.size} numbers, not {a} (w, h) "
                                f"pairs for each of the {len(self.param('strides'))} strides")
        anchors = anchors.reshape(-1, a, 2)
        grid, wh, strides = [], [], []
        for level, s in enumerate(self.param("strides")):
            fh, fw = h // s, w // s
            grid.append(grid_cells(fh, fw, a))
            wh.append(np.tile(anchors[level], (fh * fw, 1)))
            strides.append(np.full((fh * fw * a, 1), s))
        self._grid = np.concatenate(grid).astype(np.float32)
        self._anchor_wh = np.concatenate(wh).astype(np.float32)
        self._strides = np.concatenate(strides).astype(np.float32)

    @property
    def num_candidates(self) -> int:
        return len(self._grid)

    def candidate_boxes(self, outputs):
        scores, s = outputs[0][0], outputs[1][0]
        centre = (s[:, :2] * 2.0 - 0.5 + self._grid) * self._strides
        half = (s[:, 2:] * 2.0) ** 2 * self._anchor_wh * 0.5
        return np.concatenate([centre - half, centre + half], axis=1), scores
