"""Shared base of the families that read ONE prediction tensor (foreign exports: YOLOX, YOLOv5,
YOLOv8, official NanoDet-Plus ONNX).

Rows run over ``decoder.strides`` (finest first), each level row-major (y then x) over a
ceil(H/stride) x ceil(W/stride) grid -- ceil because a stride-2 conv with padding rounds up --
with ``anchors_per_cell`` rows per cell (YOLOv5: 3, anchor-free families: 1).
"""

from __future__ import annotations

import math

import numpy as np

from .base import Family, grid_cells


class SingleOutputFamily(Family):
    output_roles = ("predictions",)
    #: strides used when the manifest's decoder section does not list them (the official exports')
    default_strides: tuple[int, ...] = (8, 16, 32)
    #: columns the family puts before the C class scores (box terms, objectness)
    leading_columns: int = 4
    #: shape of the prediction tensor in words, for error messages
    layout_text: str = "[1, N, 4 + classes]"

    def __init__(self, manifest, input_spec=None) -> None:
        super().__init__(manifest, input_spec)
        h, w = self.input_hw
        self.strides = tuple(int(s) for s in manifest.decoder.get("strides", self.default_strides))
        a = self.anchors_per_cell
        cells, strides = [], []
        for s in self.strides:
            fh, fw = math.ceil(h / s), math.ceil(w / s)
            cells.append(grid_cells(fh, fw, a))
            strides.append(np.full((fh * fw * a, 1), s))
        self._cells = np.concatenate(cells).astype(np.float32)  # (N, 2) grid x, y
        self._strides = np.concatenate(strides).astype(np.float32)  # (N, 1)
        self._max_xy = np.array([w, h, w, h], np.float32)

    @property
    def anchors_per_cell(self) -> int:
        return 1

    @property
    def num_candidates(self) -> int:
        return len(self._cells)

    @property
    def row_width(self) -> int:
        """Values per candidate: the leading columns plus one score per class."""
        return self.leading_columns + len(self.class_names)

    def expected_shape(self) -> str:
        """What the family expects, in words: '[1, N, 5 + classes] with N = 8400 for 640x640 (strides 8, 16, 32)'."""
        h, w = self.input_hw
        per_cell = f", {self.anchors_per_cell} anchors per cell" if self.anchors_per_cell > 1 else ""
        return (f"{self.layout_text} with N = {self.num_candidates} for {w}x{h} "
                f"(strides {', '.join(map(str, self.strides))}{per_cell})")

    #: (candidate axis, row axis) orders the output may use; the first is the official export's
    axis_orders: tuple[tuple[int, int], ...] = ((1, 2),)

    def accepted_shapes(self) -> list[tuple[int, ...]]:
        shapes = []
        for cand, row in self.axis_orders:
            shape = [1, 0, 0]
            shape[cand], shape[row] = self.num_candidates, self.row_width
            shapes.append(tuple(shape))
        return shapes

    def classes_in(self, shape: tuple[int | str, ...]) -> int | None:
        """The class count an output with the right rank and N implies (to tell a wrong class list
        from a wrong family), else None."""
        lead = self.row_width - len(self.class_names)
        if len(shape) != 3 or (isinstance(shape[0], int) and shape[0] != 1):
            return None
        for cand, row in self.axis_orders:
            if shape[cand] == self.num_candidates and isinstance(shape[row], int) and shape[row] > lead:
                return shape[row] - lead
        return None

    def output_shape_problem(self, shape: tuple[int | str, ...]) -> str | None:
        """None when ``shape`` (dynamic dims as strings/None) fits this family, else why not.

        Dynamic dims match anything: they are checked on the first real output instead."""
        fits = any(len(shape) == len(want) and all(not isinstance(d, int) or d == e for d, e in zip(shape, want))
                   for want in self.accepted_shapes())
        if fits:
            return None
        shown = "[" + ", ".join(str(d) if isinstance(d, int) else "?" for d in shape) + "]"
        return f"has shape {shown}; family {self.manifest.family} expects {self.expected_shape()}"

    def predictions(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The (N, leading + C) float32 prediction rows of one image."""
        return np.asarray(outputs[0][0], np.float32)

    def clip(self, boxes: np.ndarray) -> np.ndarray:
        # as the NanoDet decoder: boxes beyond the input hold no image (stretch) or only padding
        np.clip(boxes, 0, self._max_xy, out=boxes)
        return boxes


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


def xywh_to_xyxy(cxcy: np.ndarray, wh: np.ndarray) -> np.ndarray:
    half = wh * 0.5
    return np.concatenate([cxcy - half, cxcy + half], axis=1)
