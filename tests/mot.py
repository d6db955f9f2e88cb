"""MOT metrics for the tests: a tracker's output scored against ``converters.demo_data.TrackingTruth`` with
py-motmetrics (CLEAR MOT: MOTA, switches; identity: IDF1).

motmetrics 1.4.0's own ``distances.iou_matrix`` calls ``np.asfarray`` (gone in numpy 2), so the distance
matrix is computed here and handed to ``MOTAccumulator.update``. Test-side only: the runtime does not
depend on motmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# (id, class id, box) of one object or track in one frame
Entry = tuple[int, int, Sequence[float]]
METRICS = ("mota", "motp", "idf1", "num_switches", "num_false_positives", "num_misses", "num_unique_objects",
           "mostly_tracked", "num_fragmentations")


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)


def iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), both x1, y1, x2, y2."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def distance_matrix(truth: Sequence[Entry], hypotheses: Sequence[Entry], hypothesis_boxes: str = "xyxy",
                    min_iou: float = 0.5) -> np.ndarray:
    """(len(truth), len(hypotheses)) 1 - IoU where the classes agree and IoU >= ``min_iou``, NaN (no match
    allowed) elsewhere. Truth boxes are [x, y, w, h]; hypothesis boxes as ``hypothesis_boxes`` says."""
    t = xywh_to_xyxy([box for *_, box in truth])
    h = np.asarray([box for *_, box in hypotheses], np.float64).reshape(-1, 4)
    if hypothesis_boxes == "xywh":
        h = xywh_to_xyxy(h)
    elif hypothesis_boxes != "xyxy":
        raise ValueError(f"hypothesis_boxes must be 'xyxy' or 'xywh', not {hypothesis_boxes!r}")
    iou = iou_xyxy(t, h)
    same_class = np.array([c for _, c, _ in truth])[:, None] == np.array([c for _, c, _ in hypotheses])[None, :]
    return np.where(same_class.reshape(iou.shape) & (iou >= min_iou), 1.0 - iou, np.nan)


def _without_ignored(truth: Sequence[Entry], hypotheses: Sequence[Entry], ignored: Sequence[bool],
                     hypothesis_boxes: str, min_iou: float) -> tuple[list[Entry], list[Entry]]:
    """The truth boxes not ignored, and the hypotheses not matched to an ignored one (the MOTChallenge rule:
    match against every truth box first, then drop the ignored boxes and whatever they matched)."""
    import motmetrics as mm

    rows, columns = mm.lap.linear_sum_assignment(distance_matrix(truth, hypotheses, hypothesis_boxes, min_iou))
    dropped = {c for r, c in zip(rows, columns) if ignored[r]}
    return ([e for e, skip in zip(truth, ignored) if not skip],
            [e for c, e in enumerate(hypotheses) if c not in dropped])


def mot_scores(truth_frames: Sequence[Sequence[Entry]], hypothesis_frames: Sequence[Sequence[Entry]],
               hypothesis_boxes: str = "xyxy", min_iou: float = 0.5,
               truth_visibility: Sequence[Sequence[float]] | None = None, min_visibility: float = 0.0
               ) -> dict[str, float]:
    """MOT metrics of a tracker's output over a clip.

    ``truth_frames[k]``: (object id, class id, [x, y, w, h]) of frame k, as ``TrackingTruth.frames``.
    ``hypothesis_frames[k]``: (track id, class id, box) of frame k; boxes are [x1, y1, x2, y2] (as
    ``Detections.boxes``) unless ``hypothesis_boxes="xywh"``. Both lists cover the same frames.

    A truth object and a track match only when their classes are the same and their boxes overlap by IoU
    >= ``min_iou`` (distance 1 - IoU): a track of the right box but the wrong class is a miss plus a false
    positive, as a per-class tracker's output would be.

    ``truth_visibility`` (as ``TrackingTruth.visibility``) and ``min_visibility``: truth boxes less visible
    than that are ignored, and so is a track matched to one: neither a miss nor a false positive (what
    MOTChallenge does with its visibility flag). The detector, not the tracker, loses most of those.

    Returns the floats of ``METRICS`` (motmetrics' names: mota, motp, idf1, num_switches, num_false_positives,
    num_misses, num_unique_objects, mostly_tracked, num_fragmentations) plus num_hypothesis_ids (distinct
    track ids), num_truth_boxes (those scored) and num_frames.
    """
    import motmetrics as mm

    if len(truth_frames) != len(hypothesis_frames):
        raise ValueError(f"{len(truth_frames)} truth frames but {len(hypothesis_frames)} hypothesis frames")
    accumulator = mm.MOTAccumulator(auto_id=True)
    scored = 0
    for k, (truth, hypotheses) in enumerate(zip(truth_frames, hypothesis_frames)):
        if truth_visibility is not None and min_visibility > 0:
            ignored = [v < min_visibility for v in truth_visibility[k]]
            truth, hypotheses = _without_ignored(truth, hypotheses, ignored, hypothesis_boxes, min_iou)
        scored += len(truth)
        accumulator.update([i for i, _, _ in truth], [i for i, _, _ in hypotheses],
                           distance_matrix(truth, hypotheses, hypothesis_boxes, min_iou))
    summary = mm.metrics.create().compute(accumulator, metrics=list(METRICS), name="clip")
    scores = {name: float(summary[name].iloc[0]) for name in METRICS}
    scores["num_hypothesis_ids"] = float(len({i for hypotheses in hypothesis_frames for i, _, _ in hypotheses}))
    scores["num_truth_boxes"] = float(scored)
    scores["num_frames"] = float(len(truth_frames))
    return scores
