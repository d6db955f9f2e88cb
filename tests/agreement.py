"""Detection agreement between two artifacts of one package (FP32 reference vs a converted one)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime import Detections


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter + 1e-9)


def unmatched(a: Detections, b: Detections, score: float = 0.4, iou_min: float = 0.8, slack: float = 0.3
              ) -> list[str]:
    """Detections of ``a`` scoring above ``score`` with no same-class box in ``b`` (scoring above
    ``slack``, so a box just under the threshold on the other side still counts) at IoU > ``iou_min``."""
    misses = []
    for box, s, c in zip(a.boxes, a.scores, a.class_ids):
        if s <= score:
            continue
        keep = (b.class_ids == c) & (b.scores > slack)
        if not keep.any() or iou(box, b.boxes[keep]).max() <= iou_min:
            misses.append(f"{a.class_names[c]} {s:.2f} {np.round(box).astype(int).tolist()}")
    return misses


def assert_agree(reference: Detections, other: Detections, what: str) -> None:
    """The issue's rule: same classes, IoU > 0.8, for boxes scoring > 0.4 on either side."""
    lost, extra = unmatched(reference, other), unmatched(other, reference)
    assert not lost and not extra, f"{what}: missing {lost}, extra {extra}"


# ---------------------------------------------------------------- tolerant comparison of two runs

@dataclass(frozen=True)
class Tolerance:
    """How far two runs of one model may differ (each figure a multiple of a measured spread, see
    docs/tolerances.md). ``score``: |score difference| of a matched pair, also the margin for a
    detection near the score threshold and for a score tie in NMS. A pair matches when the boxes are
    within ``box_px`` pixels (max coordinate difference) or, with ``box_px`` None, at IoU > ``iou``.
    ``tie_iou``: a same-class neighbour overlapping at IoU >= NMS threshold - ``tie_iou`` can
    suppress a detection in one run and not in the other."""

    score: float
    box_px: float | None = None
    iou: float = 0.8
    tie_iou: float = 0.05


# The tolerances (docs/tolerances.md has the measurements: AMD EPYC Zen4, OpenCV 5.0.0 and 5.1.0, and
# the Intel Xeon figure of issue 15). The runtime vs the independent torch reference: the same FP32
# maths, but the reference warps with cv2.warpPerspective and the runtime with cv2.warpAffine; kernels
# (ORT, OpenVINO f32, TFLite, torch, threads, graph optimisations) agree to 4e-6 in score, the bilinear
# kernels' uint8 rounding (1 level on 0.1-0.2 % of values) moves a score by up to 3.5e-3 and a box by
# 0.11 px (1.06 px at threshold 0.05, where weak boxes are wider distributions). About 3x of those:
REFERENCE = Tolerance(score=0.01, box_px=0.5, tie_iou=0.05)
REFERENCE_AT_EVAL_THRESHOLD = Tolerance(score=0.01, box_px=3.0, tie_iou=0.05)
# FP32 vs INT8 (issue 3's IoU > 0.8 for a match): matched scores differ by up to 0.173 (TFLite INT8,
# NanoDet-Plus-m, person.jpg; ONNX 0.059, OpenVINO 0.048, YOLO-FastestV2 ONNX 0.102) and the IoU of two
# same-class boxes, which decides NMS, changes by up to 0.117. 1.5x of those:
INT8 = Tolerance(score=0.25, iou=0.8, tie_iou=0.18)


def _pairs(a: Detections, b: Detections, tol: Tolerance) -> list[tuple[int, int]]:
    """One-to-one (a index, b index) pairs: same class, boxes close, best-scoring ``a`` first."""
    used: set[int] = set()
    pairs = []
    for i in np.argsort(-a.scores, kind="stable"):
        free = np.array([j for j in np.flatnonzero(b.class_ids == a.class_ids[i]) if j not in used], int)
        if not len(free):
            continue
        if tol.box_px is not None:
            dist = np.abs(b.boxes[free].astype(np.float64) - a.boxes[i]).max(1)
            k = int(dist.argmin())
            ok = dist[k] < tol.box_px
        else:
            overlap = iou(a.boxes[i], b.boxes[free])
            k = int(overlap.argmax())
            ok = overlap[k] > tol.iou
        if ok:
            used.add(int(free[k]))
            pairs.append((int(i), int(free[k])))
    return pairs


def _explained(d: int, own: Detections, other: Detections, threshold: float, nms_iou: float,
               tol: Tolerance) -> bool:
    """A detection of ``own`` that ``other`` lacks is acceptable when it scores within ``tol.score``
    of the threshold (the other run's twin may sit just under it) or a same-class neighbour scoring
    at least about as high overlaps it at IoU >= nms_iou - tol.tie_iou in either run (NMS suppressed
    it there: an IoU or score tie, decided by the third decimal), but not beyond ``tol.iou``."""
    score, cls = float(own.scores[d]), own.class_ids[d]
    if score <= threshold + tol.score:
        return True
    for dets, skip in ((own, d), (other, -1)):
        same = [j for j in np.flatnonzero(dets.class_ids == cls) if j != skip and dets.scores[j] >= score - tol.score]
        overlap = iou(own.boxes[d], dets.boxes[same]) if same else np.zeros(0)
        # over tol.iou the other run's box is this one, moved beyond the tolerance: an error, not a tie
        if ((overlap >= nms_iou - tol.tie_iou) & (overlap <= tol.iou)).any():
            return True
    return False


def disagreements(a: Detections, b: Detections, threshold: float, nms_iou: float, tol: Tolerance,
                  floor: float | None = None) -> list[str]:
    """Every detection of ``a`` and ``b`` scoring above ``floor`` (default: ``threshold``, the
    runs' score threshold) matched in the other run (same class, box and score within ``tol``) or
    explained as near-threshold or an NMS near-tie (``_explained``). Returns what is not, in words."""
    floor = threshold if floor is None else floor
    pairs = _pairs(a, b, tol)
    problems = [f"{a.class_names[a.class_ids[i]]} score {a.scores[i]:.4f} vs {b.scores[j]:.4f}"
                for i, j in pairs if abs(float(a.scores[i]) - float(b.scores[j])) > tol.score]
    for name, own, other, matched in (("only in first", a, b, {i for i, _ in pairs}),
                                      ("only in second", b, a, {j for _, j in pairs})):
        problems += [f"{name}: {own.class_names[own.class_ids[d]]} {own.scores[d]:.3f} "
                     f"{np.round(own.boxes[d]).astype(int).tolist()}"
                     for d in range(len(own)) if d not in matched and own.scores[d] > floor
                     and not _explained(d, own, other, threshold, nms_iou, tol)]
    return problems


def spread(a: Detections, b: Detections, tol: Tolerance) -> dict:
    """What the tolerances are measured from: over the pairs matched under ``tol``, the largest score
    and box (px) differences and the largest change of the IoU between two same-class detections
    (what decides NMS), plus the scores left unpaired on each side."""
    pairs = _pairs(a, b, tol)
    score = [abs(float(a.scores[i]) - float(b.scores[j])) for i, j in pairs]
    box = [float(np.abs(a.boxes[i].astype(np.float64) - b.boxes[j]).max()) for i, j in pairs]
    overlap = [float(iou(a.boxes[i], b.boxes[[j]])[0]) for i, j in pairs]
    iou_change = [abs(float(iou(a.boxes[i], a.boxes[[k]])[0] - iou(b.boxes[j], b.boxes[[m]])[0]))
                  for n, (i, j) in enumerate(pairs) for k, m in pairs[n + 1:] if a.class_ids[i] == a.class_ids[k]]
    return {"n": len(pairs), "score": max(score, default=0.0), "box_px": max(box, default=0.0),
            "iou_min": min(overlap, default=1.0), "iou_change": max(iou_change, default=0.0),
            "only_first": [round(float(a.scores[i]), 3) for i in sorted(set(range(len(a))) - {i for i, _ in pairs})],
            "only_second": [round(float(b.scores[j]), 3) for j in sorted(set(range(len(b))) - {j for _, j in pairs})]}


def from_reference(reference: list[tuple[np.ndarray, float, int]], class_names) -> Detections:
    """tests/reference_decode.py's [(box, score, class_id), ...] as Detections."""
    return Detections(np.array([b for b, _, _ in reference], np.float64).reshape(-1, 4),
                      np.array([s for _, s, _ in reference], np.float32),
                      np.array([c for _, _, c in reference], np.int32), tuple(class_names))


def assert_same_as_reference(reference: list[tuple[np.ndarray, float, int]], dets: Detections, postprocess: dict,
                             what: str, tol: Tolerance | None = None) -> None:
    """The runtime's detections == the independent torch reference's, within ``tol`` (REFERENCE)."""
    ref = from_reference(reference, dets.class_names)
    problems = disagreements(ref, dets, postprocess["score_threshold"], postprocess["nms_iou"], tol or REFERENCE)
    assert not problems, (f"{what}: torch reference ({len(ref)} detections) vs runtime ({len(dets)}): "
                          + "; ".join(problems))


def int8_disagreements(fp32, int8, image: np.ndarray, tol: Tolerance | None = None) -> list[str]:
    """FP32 vs INT8 Detectors of one package on ``image`` under issue 3's rule (boxes scoring > 0.4 on
    either side, same class, IoU > 0.8) with INT8's measured score spread and NMS near-ties allowed."""
    pp = fp32.family.postprocess
    return disagreements(fp32(image), int8(image), pp["score_threshold"], pp["nms_iou"], tol or INT8, floor=0.4)
