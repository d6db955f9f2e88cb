"""Accuracy-aware INT8: keep the quantised layers that cost the most in float until a budget is met.

The budget is a metric measured on held-out images (never the calibration ones) that the INT8
model may lose at most ``max_drop`` of, against the FP32 model:

- ``CosineAgreement``: per image, the lowest cosine over the model's outputs against the FP32 ONNX
  outputs, averaged over the images. FP32 scores 1.0, so ``--int8-min-cosine 0.99`` is a drop of 0.01.
- ``MapMetric``: COCO mAP@[.5:.95] of the decoded detections on labelled images, the same protocol
  as ``edge-runtime validate``; ``--max-map-drop 0.5`` is a drop of 0.005 (half a point).

ONNX and OpenVINO hand the search to NNCF's ``quantize_with_accuracy_control``: it quantises
everything, ranks each quantiser group by how much reverting it restores the model on a subset of
the images, reverts the worst groups to float and re-ranks until the drop fits (or nothing is left
to revert). ``run_nncf_search`` adapts a metric to it. TFLite has no such search:
``float_prefix_search`` keeps the fewest leading levels of the network in float instead. The
converters record the layers put back in float and the metric before and after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.compare import compare
from edge_runtime.evaluation.metrics import coco_evaluate
from edge_runtime.evaluation.validate import EvaluationSet
from edge_runtime.families import Family

log = logging.getLogger(__name__)
Runner = Callable[[np.ndarray], list[np.ndarray]]  # NCHW tensor -> outputs in the FP32 artifact's order


class CosineAgreement:
    """Agreement with the FP32 model: higher is better, 1.0 is identical outputs."""

    name = "cosine"
    fp32_value = 1.0

    def __init__(self, reference: Runner, images: Sequence[np.ndarray]) -> None:
        self.images = list(images)
        self._run_reference = reference
        self._reference: list[list[np.ndarray]] | None = None  # FP32 outputs, on first use only

    def per_image(self, run: Runner, indices: Sequence[int] | None = None) -> list[float]:
        if self._reference is None:
            self._reference = [self._run_reference(t) for t in self.images]
        indices = range(len(self.images)) if indices is None else indices
        return [compare(self._reference[i], run(self.images[i]))["cosine"] for i in indices]

    def evaluate(self, run: Runner, indices: Sequence[int] | None = None) -> tuple[float, list[float]]:
        """(metric, per-image values): NNCF ranks quantiser groups by the metric on its worst images."""
        values = self.per_image(run, indices)
        return float(np.mean(values)), values

    def __call__(self, run: Runner) -> float:
        return self.evaluate(run)[0]


class MapMetric:
    """COCO mAP@[.5:.95] (0..1) of decoded detections on labelled images, as ``edge-runtime validate``
    computes it (score >= 0.001, the package's NMS, top 100)."""

    name = "map"

    def __init__(self, reference: Runner, data: EvaluationSet, family: Family) -> None:
        self.data, self.family = data, family
        family.postprocess.update(score_threshold=0.001, max_detections=100)
        self.images, self.metas = [], []
        for image in data.images():
            tensor, meta = family.preprocess(image)
            self.images.append(tensor.copy())  # the preprocessor reuses its buffer
            self.metas.append(meta)
        self._run_reference = reference
        self._reference: list[list[np.ndarray]] | None = None  # FP32 outputs, on first use
        self._fp32: float | None = None

    @property
    def fp32_value(self) -> float:
        if self._fp32 is None:  # from the outputs the cosines compare against: FP32 runs once
            self._fp32 = self._map(self._reference_outputs())
        return self._fp32

    def _reference_outputs(self) -> list[list[np.ndarray]]:
        if self._reference is None:
            self._reference = [self._run_reference(t) for t in self.images]
        return self._reference

    def _map(self, outputs: list[list[np.ndarray]]) -> float:
        """mAP of every image's outputs (in image order)."""
        dets = [self.family.decode(out, meta) for out, meta in zip(outputs, self.metas)]
        return coco_evaluate(self.data.ground_truth, self.data.results(dets)).stats["map"]

    def evaluate(self, run: Runner, indices: Sequence[int] | None = None) -> tuple[float, list[float]]:
        """(metric, per-image output cosine with FP32). On all images the metric is their mAP. NNCF
        also calls this on a few of its worst images to rank each quantiser group by how much
        reverting it helps; there the metric is the mean cosine, because the mAP of a handful of
        images moves in steps too coarse to rank dozens of groups by (its NMSE ranking, the
        library's smooth alternative, exists only for OpenVINO models)."""
        indices = list(range(len(self.images)) if indices is None else indices)
        reference = self._reference_outputs()
        outputs = [run(self.images[i]) for i in indices]
        cosines = [compare(reference[i], out)["cosine"] for i, out in zip(indices, outputs)]
        if len(indices) < len(self.images):
            return float(np.mean(cosines)), cosines
        return self._map(outputs), cosines

    def __call__(self, run: Runner) -> float:
        return self.evaluate(run)[0]


@dataclass
class AccuracyBudget:
    metric: CosineAgreement | MapMetric
    max_drop: float  # absolute drop of the metric allowed against FP32 (cosine: 1.0 - C; mAP: points / 100)

    @property
    def fp32_value(self) -> float:
        return self.metric.fp32_value

    @property
    def target(self) -> float:
        return self.fp32_value - self.max_drop

    def describe(self, before: float, after: float, float_layers: list[str]) -> dict[str, Any]:
        """``float_layers``: the layers the search put back in float (beyond the converter's defaults)."""
        met = after >= self.target - 1e-9
        if not met:
            log.warning("INT8 accuracy budget not met: %s %.4f after keeping %d layers in float, target %.4f "
                        "(FP32 %.4f)", self.metric.name, after, len(float_layers), self.target, self.fp32_value)
        return {"metric": self.metric.name, "target": round(self.target, 6), "fp32": round(self.fp32_value, 6),
                "before": round(before, 6), "after": round(after, 6), "drop": round(self.fp32_value - after, 6),
                "max_drop": self.max_drop, "met": met, "validation_images": len(self.metric.images),
                "float_layers": float_layers}


def run_nncf_search(model: Any, budget: AccuracyBudget, input_name: str, calibration: Sequence[np.ndarray],
                    runner_of: Callable[[Any], Runner], ranking_images: int = 8, **kwargs: Any) -> Any:
    """Call NNCF's accuracy-aware quantiser with ``budget.metric`` as its validation function; ``kwargs``
    as ``nncf.quantize`` takes them (its ``advanced_parameters`` are this call's
    ``advanced_quantization_parameters``), so one settings dict serves both.

    ``runner_of`` turns the model object NNCF validates (an ``onnx.ModelProto`` or an OpenVINO
    ``CompiledModel``) into a ``Runner``. Ranking on a few images keeps the search to minutes on
    two cores; the final check uses all of them.
    """
    import nncf

    metric = budget.metric
    if "advanced_parameters" in kwargs:
        kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")

    def validate(model_for_inference: Any, items: Any) -> tuple[float, list[Any]]:
        return metric.evaluate(runner_of(model_for_inference), [index for index, _ in items])

    to_input = lambda item: {input_name: item[1]}  # items carry their index for the metric
    return nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(list(enumerate(calibration)), to_input),
        nncf.Dataset(list(enumerate(metric.images)), to_input), validate,
        max_drop=budget.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
            ranking_subset_size=min(ranking_images, len(metric.images))),
        **kwargs)


def float_prefix_search(build: Callable[[list[str]], Runner], levels: Sequence[Sequence[str]], budget: AccuracyBudget,
                        progress: Callable[[str], None] = lambda msg: None) -> tuple[list[str], float]:
    """For converters without a library search (TFLite): ``build(float_layers)`` quantises the model
    with those layers left in float and returns its runner; ``levels`` groups the layers by depth
    from the input.

    Finds the fewest leading levels to keep in float for the budget (doubling, then bisection).
    Whole regions, because a float layer between integer ones still reads and writes quantised
    activations (measured on NanoDet-Plus-m TFLite: no single convolution in float gains more than
    0.002 cosine, all 77 plain convolutions together 0.004, all ops of the first 13 of 77 levels 0.010),
    and from the input, where the activations are widest and every later layer inherits the error.
    Returns (float layers, metric after); all levels float when even that misses the budget.
    """
    metric = budget.metric

    def value(k: int) -> float:
        got = metric(build([name for level in levels[:k] for name in level]))
        progress(f"first {k} of {len(levels)} levels in float: {metric.name} {got:.4f} (target {budget.target:.4f})")
        return got

    low, high, high_value = 0, 1, value(1)
    while high_value < budget.target and high < len(levels):
        low, high = high, min(2 * high, len(levels))
        high_value = value(high)
    while high - low > 1 and high_value >= budget.target:
        middle = (low + high) // 2
        middle_value = value(middle)
        if middle_value >= budget.target:
            high, high_value = middle, middle_value
        else:
            low = middle
    return [name for level in levels[:high] for name in level], high_value
