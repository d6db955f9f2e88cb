"""On-device accuracy: every artifact of a package against labels (COCO mAP), or, with no labels,
against the FP32 artifact's own detections (label-free agreement) plus raw-output cosine.

Everything runs through ``Detector``, the same code path as ``run``: what is measured here is what
the device will produce. The evaluation protocol (score threshold, NMS IoU, detections per image,
image count) is part of every report.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import compare
from ..detections import Detections
from ..detector import Detector
from ..errors import EdgeRuntimeError, UsageError
from ..io.sources import image_files, read_image
from ..manifest import Artifact, Manifest, load_manifest
from ..timing import format_table, summarize
from .labels import ClassMatch, LabelledSet, match_classes
from .metrics import coco_evaluate, coco_map, detections_to_coco, resample_images, resample_results

#: label-free mode: reference detections at or above this score are the ground truth
PSEUDO_LABEL_THRESHOLD = 0.3
#: raw-output cosine is kept for at most this many images (the reference outputs stay in memory)
COSINE_IMAGES = 200


@dataclass
class Protocol:
    """How detections are produced for evaluation (COCO practice: a very low score threshold, so
    the precision-recall curve reaches high recall)."""

    score_threshold: float = 0.001
    nms_iou: float | None = None  # None: the package's own (manifest postprocess.nms_iou)
    max_detections: int = 100

    def describe(self, images: int, nms_iou: float) -> str:
        return (f"protocol: score >= {self.score_threshold:g}, class-wise NMS IoU {nms_iou:g}, "
                f"top {self.max_detections} detections per image, {images} images, COCO mAP@[.5:.95]")


def _progress(items: Iterable[Any], total: int, desc: str, enabled: bool, unit: str = "img") -> Iterable[Any]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the validate extra; without it, no bar
        return items
    return tqdm(items, total=total, desc=desc, unit=unit, leave=False)


class EvaluationSet:
    """Images plus COCO ground truth in the model's classes (category id = model class index + 1).

    ``from_labels``: a label set matched to the model's class names; boxes of classes the model does
    not have are left out (and reported), never counted as misses. ``from_detections``: label-free,
    the reference artifact's confident detections are the ground truth.
    """

    def __init__(self, paths: list[Path], ground_truth: dict[str, Any], model_names: Sequence[str],
                 note: str, match: ClassMatch | None = None, left_out: dict[str, int] | None = None) -> None:
        self.paths, self.ground_truth, self.model_names = paths, ground_truth, list(model_names)
        self.note, self.match, self.left_out = note, match, left_out or {}
        self.category_ids = [i + 1 for i in range(len(model_names))]
        self.evaluated_classes = sorted(c["id"] - 1 for c in ground_truth["categories"])

    def images(self) -> Iterator[np.ndarray]:
        for path in self.paths:
            yield read_image(path)

    def results(self, detections: Sequence[Detections]) -> list[dict[str, Any]]:
        """COCO result dicts of the evaluated classes, one ``Detections`` per image in order."""
        keep = set(self.evaluated_classes)
        out = []
        for image_id, dets in enumerate(detections, start=1):
            mask = np.isin(dets.class_ids, list(keep))
            kept = Detections(dets.boxes[mask], dets.scores[mask], dets.class_ids[mask], dets.class_names)
            out += detections_to_coco(kept, image_id, self.category_ids)
        return out

    @classmethod
    def from_labels(cls, labelled: LabelledSet, model_names: Sequence[str],
                    class_map: dict[str, str | None] | None = None) -> EvaluationSet:
        if not labelled.images:
            raise EdgeRuntimeError(f"{labelled.source}: no labelled images")
        match = match_classes(labelled.class_names, model_names, class_map)
        if not match.to_model:
            raise EdgeRuntimeError(f"{labelled.source}: none of the label classes {labelled.class_names[:8]} "
                                   f"is a class of the model; pass --class-map map.json")
        images, annotations, left_out = [], [], {}
        for image_id, entry in enumerate(labelled.images, start=1):
            width, height = entry.width, entry.height
            if width is None or height is None:  # txt labels do not carry the size
                height, width = read_image(entry.path).shape[:2]
            images.append({"id": image_id, "file_name": str(entry.path), "width": int(width), "height": int(height)})
            for box in entry.boxes:
                if box.label not in match.to_model:
                    left_out[box.label] = left_out.get(box.label, 0) + 1
                    continue
                w, h = box.x2 - box.x1, box.y2 - box.y1
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": match.to_model[box.label] + 1,
                                    "bbox": [box.x1, box.y1, w, h], "area": w * h, "iscrowd": int(box.ignore)})
        classes = sorted(set(match.to_model.values()))
        truth = {"images": images, "annotations": annotations,
                 "categories": [{"id": c + 1, "name": model_names[c]} for c in classes]}
        note = f"labels: {labelled.source} ({labelled.format}); {match.describe(labelled.box_counts())}"
        return cls([e.path for e in labelled.images], truth, model_names, note, match, left_out)

    @classmethod
    def from_detections(cls, paths: list[Path], detections: Sequence[Detections], sizes: Sequence[tuple[int, int]],
                        model_names: Sequence[str], threshold: float, reference: str) -> EvaluationSet:
        images, annotations = [], []
        for image_id, (path, dets, (height, width)) in enumerate(zip(paths, detections, sizes), start=1):
            images.append({"id": image_id, "file_name": str(path), "width": width, "height": height})
            for (x1, y1, x2, y2), score, cid in zip(dets.boxes, dets.scores, dets.class_ids):
                if score >= threshold:
                    w, h = float(x2 - x1), float(y2 - y1)
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cid) + 1,
                                        "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": 0})
        classes = sorted({a["category_id"] - 1 for a in annotations})
        truth = {"images": images, "annotations": annotations,
                 "categories": [{"id": c + 1, "name": model_names[c]} for c in classes]}
        note = (f"label-free: ground truth = {reference}'s {len(annotations)} detections with score >= {threshold:g} "
                f"({len(classes)} classes)")
        return cls(paths, truth, model_names, note)


@dataclass
class Prediction:
    detections: list[Detections]
    latency_ms: dict[str, float]  # inference only, per image
    outputs: list[list[np.ndarray]]  # raw outputs of the first ``COSINE_IMAGES`` images when asked for
    sizes: list[tuple[int, int]]


def predict(detector: Detector, images: Iterable[np.ndarray], count: int, keep_outputs: bool = False,
            progress: bool = False) -> Prediction:
    dets, times, outputs, sizes = [], [], [], []
    desc = f"{detector.artifact.format} {detector.artifact.precision}"
    for image in _progress(images, count, desc, progress):
        tensor, meta = detector.preprocess(image)
        t0 = time.perf_counter()
        raw = detector.infer(tensor)
        times.append((time.perf_counter() - t0) * 1e3)
        if keep_outputs and len(outputs) < COSINE_IMAGES:
            outputs.append([np.array(o, copy=True) for o in raw])
        dets.append(detector.decode(raw, meta))
        sizes.append(image.shape[:2])
    return Prediction(dets, summarize(times), outputs, sizes)


def artifacts_to_validate(manifest: Manifest, backend: str | None, precision: str | None) -> list[Artifact]:
    """Every artifact of the format ``backend`` (None or "all": any) and ``precision`` (None: any), failed
    ones too (validate reports them); an error naming what the package has when none matches."""
    chosen = [a for a in manifest.artifacts if backend in (None, "all", a.format) and precision in (None, a.precision)]
    if not chosen:
        have = ", ".join(a.key for a in manifest.artifacts)
        raise EdgeRuntimeError(f"{manifest.path}: no artifact matches --backend {backend or 'all'} "
                               f"--precision {precision or 'any'} (has {have})")
    return chosen


def reference_artifact(manifest: Manifest, reference: str = "fp32") -> Artifact:
    """``fp32`` (the FP32 ONNX model every converter checks against, else the first FP32 artifact)
    or ``FORMAT:PRECISION``."""
    if ":" in reference:
        fmt, precision = reference.split(":", 1)
        return manifest.artifact(fmt, precision)
    fp32 = [a for a in manifest.artifacts if a.precision == reference]
    if not fp32:
        raise EdgeRuntimeError(f"{manifest.path}: no {reference} artifact to use as the reference")
    return next((a for a in fp32 if a.format == "onnx"), fp32[0])


def _detector(package: str | Path, art: Artifact, threads: int | None, protocol: Protocol) -> Detector:
    det = Detector(package, backend=art.format, precision=art.precision, threads=threads,
                   score_threshold=protocol.score_threshold, nms_iou=protocol.nms_iou)
    det.family.postprocess["max_detections"] = protocol.max_detections
    return det


def validate_package(package: str | Path, data: EvaluationSet | None = None, images: str | Path | None = None,
                     backend: str | None = None, precision: str | None = None, threads: int | None = None,
                     protocol: Protocol | None = None, reference: str = "fp32",
                     pseudo_threshold: float = PSEUDO_LABEL_THRESHOLD, engine: str | None = None,
                     progress: bool = False, bootstrap: int = 0) -> dict[str, Any]:
    """Evaluate the chosen artifacts of ``package``.

    With ``data`` (labels): each artifact's COCO metrics, its drop against the reference FP32
    artifact (evaluated too, even when the filters leave it out), and its inference latency.
    Without (``images`` only): the reference artifact's detections become the ground truth, and
    every other artifact also gets the cosine of each raw output against the reference's. Returns a
    JSON-ready report. ``bootstrap``: that many paired bootstrap samples of the images give each drop a 90%
    interval (``map_drop_interval``, ``drop_intervals``).
    """
    check_bootstrap(bootstrap)
    manifest = load_manifest(package)
    protocol = protocol or Protocol()
    chosen = artifacts_to_validate(manifest, backend, precision)
    label_free = data is None
    ref_art = reference_artifact(manifest, reference) if label_free or any(
        a.precision == "fp32" for a in manifest.artifacts) else None
    if ref_art is not None and ref_art not in chosen:  # drops need the reference's own figures
        chosen.insert(0, ref_art)
    ref_outputs: list[list[np.ndarray]] = []
    if label_free:
        if images is None:
            raise EdgeRuntimeError("validate needs --data (labels) or --images (label-free, against the FP32 artifact)")
        paths = image_files(Path(images))
        ref_det = _detector(package, ref_art, threads, protocol)
        ref = predict(ref_det, (read_image(p) for p in paths), len(paths), keep_outputs=True, progress=progress)
        data = EvaluationSet.from_detections(paths, ref.detections, ref.sizes, manifest.class_names, pseudo_threshold,
                                             f"{ref_art.format} {ref_art.precision}")
        ref_outputs = ref.outputs
    rows: list[dict[str, Any]] = []
    results: list[list[dict[str, Any]]] = []  # COCO results per row, for the bootstrap
    for art in chosen:
        if label_free and art == ref_art:  # already run over these images to make the ground truth
            det, pred = ref_det, ref
        else:
            det = _detector(package, art, threads, protocol)
            pred = predict(det, data.images(), len(data.paths), keep_outputs=label_free, progress=progress)
        roles = det.family.output_roles
        nms_iou = det.family.postprocess["nms_iou"]
        results.append(data.results(pred.detections))
        evaluation = coco_evaluate(data.ground_truth, results[-1], engine)
        row: dict[str, Any] = {
            "artifact": art.file, "format": art.format, "precision": art.precision,
            **{k: round(v, 5) for k, v in evaluation.stats.items()},
            "latency_ms": round(pred.latency_ms["mean"], 3), "backend": det.backend.describe(),
            "per_class_ap": {data.model_names[c - 1]: round(v, 5) for c, v in evaluation.per_class.items()},
            "per_class_ap50": {data.model_names[c - 1]: round(v, 5) for c, v in evaluation.per_class_ap50.items()},
            "pr_curve_iou50": {"recall": evaluation.recall.round(3).tolist(),
                               "precision": evaluation.precision50.round(4).tolist()},
            "engine": evaluation.engine}
        if label_free and pred.outputs:
            row["cosine"] = _cosine_per_output(ref_outputs, pred.outputs, roles)
        rows.append(row)
    baseline = _baseline(rows, ref_art)
    for row in rows:
        row["map_drop_points"] = None if baseline is None else round(100 * (baseline["map"] - row["map"]), 3)
    others = [i for i, row in enumerate(rows) if row is not baseline]
    bootstrapped = bool(bootstrap and baseline is not None and others)
    if bootstrapped:
        intervals = drop_intervals(data.ground_truth, results[rows.index(baseline)], [results[i] for i in others],
                                   bootstrap, engine, progress=progress)
        for i, interval in zip(others, intervals):
            rows[i]["map_drop_interval"] = list(interval)
    return {"package": str(manifest.root), "model": manifest.name, "mode": "label-free" if label_free else "labels",
            "protocol": {**asdict(protocol), "nms_iou": nms_iou, "images": len(data.paths),
                         "text": protocol.describe(len(data.paths), nms_iou)},
            "data": data.note, "left_out": data.left_out,
            "reference": None if baseline is None else baseline["artifact"],
            "bootstrap_samples": bootstrap if bootstrapped else 0,
            "classes_evaluated": [data.model_names[c] for c in data.evaluated_classes], "artifacts": rows}


def check_bootstrap(resamples: object) -> int:
    """``resamples`` as a number of bootstrap samples (0: none); anything else is a one-line error."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
        raise UsageError(f"bootstrap: must be 0 (off) or a number of samples, got {resamples!r}")
    return resamples


def drop_intervals(ground_truth: dict[str, Any], reference: list[dict[str, Any]],
                   results: list[list[dict[str, Any]]], resamples: int, engine: str | None = None,
                   seed: int = 0, progress: bool = False) -> list[tuple[float, float]]:
    """Each of ``results``' mAP drop against ``reference`` (mAP points), as its 5th to 95th percentile over
    ``resamples`` paired bootstrap samples of the images: every sample draws the images with replacement and
    evaluates the reference and each artifact on the same draw. On a few dozen photos one changed detection
    moves the drop by tenths of a point; this says how far the set's own sampling moves it."""
    rng = np.random.default_rng(seed)
    count = len(ground_truth["images"])
    drops = np.zeros((check_bootstrap(resamples), len(results)))
    for i in _progress(range(resamples), resamples, "bootstrap", progress, unit="sample"):
        # in the set's image order: COCOeval ranks equal scores by image id, as on the whole set
        sample, new_ids = resample_images(ground_truth, np.sort(rng.integers(0, count, count)))
        base = coco_map(sample, resample_results(reference, new_ids), engine)["map"]
        for j, got in enumerate(results):
            drops[i, j] = 100 * (base - coco_map(sample, resample_results(got, new_ids), engine)["map"])
    low, high = np.percentile(drops, [5, 95], axis=0)
    return [(round(float(lo), 3), round(float(hi), 3)) for lo, hi in zip(low, high)]


def _cosine_per_output(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]],
                       roles: Sequence[str]) -> dict[str, dict[str, float]]:
    per_role: dict[str, list[float]] = {role: [] for role in roles}
    for ref, got in zip(reference, outputs):
        for role, r, g in zip(roles, ref, got):
            per_role[role].append(compare([r], [g])["cosine"])
    return {role: {"mean": round(float(np.mean(v)), 6), "worst": round(float(np.min(v)), 6), "images": len(v)}
            for role, v in per_role.items() if v}


def _baseline(rows: list[dict[str, Any]], ref_art: Artifact | None) -> dict[str, Any] | None:
    if ref_art is not None:
        for row in rows:
            if (row["format"], row["precision"]) == (ref_art.format, ref_art.precision):
                return row
    return next((row for row in rows if row["precision"] == "fp32"), None)


def drop_text(points: float | None, interval: Sequence[float] | None = None) -> str:
    """An mAP drop for a table: "+0.31", with its bootstrap interval "+0.31 (-0.52..+1.10)"."""
    if points is None:
        return "-"
    return f"{points:+.2f}" + (f" ({interval[0]:+.2f}..{interval[1]:+.2f})" if interval else "")


def report_table(report: dict[str, Any], per_class: bool = False) -> str:
    """The human report: what was evaluated and how, then one row per artifact."""
    rows = report["artifacts"]
    cosine_roles = list(rows[0].get("cosine", {})) if rows else []
    headers = ["artifact", "format", "precision", "mAP", "AP50", "AP-S", "AP-M", "AP-L", "drop vs FP32 (pts)",
               "latency ms", *(f"cosine {r} mean/worst" for r in cosine_roles)]

    def ap(v: float) -> str:
        return "-" if v < 0 else f"{v:.3f}"  # -1: no ground truth in that area range

    table = [[r["artifact"], r["format"], r["precision"], ap(r["map"]), ap(r["map50"]), ap(r["map_small"]),
              ap(r["map_medium"]), ap(r["map_large"]),
              drop_text(r["map_drop_points"], r.get("map_drop_interval")), r["latency_ms"],
              *(f"{r['cosine'][c]['mean']:.4f} / {r['cosine'][c]['worst']:.4f}" if "cosine" in r else "-"
                for c in cosine_roles)] for r in rows]
    lines = [report["data"], report["protocol"]["text"]]
    if report.get("reference"):
        lines.append(f"drop = reference ({report['reference']}) mAP - artifact mAP, in mAP points")
    if report.get("bootstrap_samples"):
        lines.append(f"(low..high): the drop's 5th..95th percentile over {report['bootstrap_samples']} paired "
                     f"bootstrap samples of the images")
    lines += ["", format_table(headers, table)]
    if per_class and rows:
        names = list(rows[0]["per_class_ap"])
        lines += ["", "per-class AP@[.5:.95]", format_table(
            ["class", *(f"{r['format']} {r['precision']}" for r in rows)],
            [[name, *(ap(r["per_class_ap"][name]) for r in rows)] for name in names])]
    return "\n".join(lines)
