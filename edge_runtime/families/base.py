"""The model-family interface: preprocess an image, decode raw outputs into Detections."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..detections import Detections
from ..errors import ManifestError
from ..manifest import InputSpec, Manifest
from ..nms import boxes_to_original, multiclass_nms
from ..preprocess import ImageMeta, ImagePreprocessor


def grid_cells(fh: int, fw: int, per_cell: int = 1) -> np.ndarray:
    """(fh * fw * per_cell, 2) cell x, y of an fh x fw feature map, row-major (y then x), each cell
    repeated ``per_cell`` times (one row per anchor): the candidate order of grid-based heads."""
    ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
    return np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0)


@dataclass(frozen=True)
class ImportDefaults:
    """How the official project feeds and post-processes its model (the runtime's closest modes):
    what ``edge-runtime import`` writes into the manifest unless the command line overrides it."""
    color: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str
    decoder: dict[str, Any]
    postprocess: dict[str, Any] = field(default_factory=dict)


class Family(ABC):
    """Built from a manifest alone. ``decode`` turns one image's outputs into Detections.

    Subclasses implement ``candidate_boxes`` (all candidate boxes in model-input pixels plus the
    (N, C) score matrix); score filtering, class-wise NMS and mapping back to the original image
    are shared.
    """

    #: roles of the graph outputs a family reads, in the order the manifest's artifact lists them
    output_roles: tuple[str, ...] = ("scores", "boxes")
    #: preprocessing, decoder and postprocess defaults of a foreign export; None: not importable
    import_defaults: ImportDefaults | None = None
    #: "coco" classes mean the 90 COCO category-id slots (TF models) rather than the 80 names
    coco_id_slots: bool = False

    def __init__(self, manifest: Manifest, input_spec: InputSpec | None = None) -> None:
        self.manifest = manifest
        self.class_names = manifest.class_names
        spec = input_spec or manifest.input
        self.preprocess = ImagePreprocessor(spec)
        self.input_hw = spec.size_hw
        self.postprocess = dict(manifest.postprocess)

    def param(self, key: str):
        try:
            return self.manifest.decoder[key]
        except KeyError:
            raise ManifestError(f"{self.manifest.path}: missing field 'decoder.{key}' "
                                f"(needed by family {self.manifest.family})") from None

    @property
    @abstractmethod
    def num_candidates(self) -> int:
        """N, the number of candidate boxes the graph outputs for this input size and decoder."""

    @abstractmethod
    def candidate_boxes(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs (batch 1, in ``output_roles`` order) -> boxes (N, 4) xyxy, scores (N, C)."""

    def output_shape_problem(self, shape: tuple[int | str, ...]) -> str | None:
        """None when the first output's shape fits the decoder parameters and the class count, else
        why not. This default reads a (1, N, C) scores output; families with another layout override it.
        Dynamic dimensions (not ints) match anything."""
        if len(shape) != 3:
            return None
        for axis, want, what in ((1, self.num_candidates, "candidate boxes, the decoder parameters imply"),
                                 (2, len(self.class_names), "classes, model.class_names lists")):
            if isinstance(shape[axis], int) and shape[axis] != want:
                return f"has {shape[axis]} {what} {want}"
        return None

    def classes_in(self, shape: tuple[int | str, ...]) -> int | None:
        """The class count an output of this ``shape`` implies when it otherwise fits the family (to
        blame a wrong class list rather than a wrong family on import); None when it cannot tell."""
        return None

    def imported_decoder(self, shapes: list[tuple[int | str, ...]]) -> dict[str, Any]:
        """Decoder fields an imported graph fixes itself, read from its outputs' ``shapes`` (in
        ``output_roles`` order); added to the import defaults' decoder."""
        return {}

    def match_outputs(self, outputs: list) -> tuple[str, ...] | None:
        """Names of a foreign graph's outputs in ``output_roles`` order (``outputs``: the backend's
        TensorSpecs), or None when they do not fit. This default takes the first output whose shape
        fits (single-tensor layouts); families with several outputs override it."""
        for spec in outputs:
            if self.output_shape_problem(tuple(spec.shape)) is None:
                return (spec.name,)
        return None

    def decode(self, outputs: list[np.ndarray], meta: ImageMeta) -> Detections:
        boxes, scores = self.candidate_boxes(outputs)
        pp = self.postprocess
        boxes, scores, class_ids = multiclass_nms(boxes, scores, pp["score_threshold"], pp["nms_iou"],
                                                  int(pp["max_detections"]), bool(pp.get("multi_label", True)))
        return Detections(boxes_to_original(boxes, meta), scores, class_ids, self.class_names)
