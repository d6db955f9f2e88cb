"""YOLOv3-style darknet heads (YOLO-Fastest v1.1 / 1.1-XL): anchors per [yolo] layer chosen by a mask.

Graph outputs (exported by converters/darknet.py ``YoloV3Deploy``):
  ``scores``    (1, N, C) sigmoid(objectness) * sigmoid(class logits)
  ``box_terms`` (1, N, 4) sigmoid(tx), sigmoid(ty), sigmoid(tw), sigmoid(th)
                (``decoder.box_in_graph`` "sigmoid(txtytwth)"; older packages: tw, th raw)
N runs over the [yolo] layers in cfg order (``decoder.strides``, e.g. 32 then 16), then rows,
columns, then the layer's anchors (``decoder.masks``) -- the order of OpenCV's decoded rows.
Darknet's decode, in input pixels (net_w x net_h input, grid W x H, anchors in input pixels):
  cx = (sx * scale_x_y - (scale_x_y - 1) / 2 + col) / W * net_w,  cy likewise,
  w = exp(tw) * anchor_w,  h = exp(th) * anchor_h   (exp(tw) = s / (1 - s) from s = sigmoid(tw)).
"""

from __future__ import annotations

import numpy as np

from ..errors import ManifestError
from .base import Family, grid_cells

# exp() argument cap: a garbage tw of 100 would overflow float32 to inf; e^20 px is already absurd
_MAX_LOG_WH = 20.0


class YoloV3Decoder(Family):
    output_roles = ("scores", "box_terms")

    def __init__(self, manifest, input_spec=None) -> None:
        super().__init__(manifest, input_spec)
        h, w = self.input_hw
        anchors = np.asarray(self.param("anchors"), np.float32).reshape(-1, 2)
        masks, strides = self.param("masks"), self.param("strides")
        scales = self.manifest.decoder.get("scale_x_y", [1.0] * len(strides))
        if not (len(masks) == len(strides) == len(scales)) or any(m >= len(anchors) for ms in masks for m in ms):
            raise ManifestError(f"{self.manifest.path}: decoder.masks/strides/scale_x_y do not agree "
                                f"with each other or with decoder.anchors")
        grid, wh, cell, scale = [], [], [], []
        for mask, s, sxy in zip(masks, strides, scales):
            fh, fw = h // s, w // s
            a = len(mask)
            grid.append(grid_cells(fh, fw, a))
            wh.append(np.tile(anchors[list(mask)], (fh * fw, 1)))
            # darknet divides by the grid size and multiplies by the net size: exact even if s does not divide
            cell.append(np.tile([[w / fw, h / fh]], (fh * fw * a, 1)))
            scale.append(np.full((fh * fw * a, 1), sxy))
        # packages exported before tw/th went through a sigmoid in the graph say "sigmoid(txty),raw(twth)"
        self._twth_sigmoid = self.manifest.decoder.get("box_in_graph") == "sigmoid(txtytwth)"
        self._grid = np.concatenate(grid).astype(np.float32)
        self._anchor_wh = np.concatenate(wh).astype(np.float32)
        self._cell = np.concatenate(cell).astype(np.float32)
        self._scale = np.concatenate(scale).astype(np.float32)

    @property
    def num_candidates(self) -> int:
        return len(self._grid)

    def candidate_boxes(self, outputs):
        scores, t = outputs[0][0], outputs[1][0].astype(np.float32, copy=False)
        centre = (t[:, :2] * self._scale - 0.5 * (self._scale - 1.0) + self._grid) * self._cell
        if self._twth_sigmoid:  # exp(tw) = s / (1 - s) for s = sigmoid(tw)
            s = np.clip(t[:, 2:], 0.0, 1.0 - 1e-7)
            half = np.minimum(s / (1.0 - s), np.exp(_MAX_LOG_WH)) * self._anchor_wh * 0.5
        else:
            half = np.exp(np.minimum(t[:, 2:], _MAX_LOG_WH)) * self._anchor_wh * 0.5
        return np.concatenate([centre - half, centre + half], axis=1), scores
