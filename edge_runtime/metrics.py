"""COCO detection metrics (mAP@.5:.95, AP50, ...) of runtime detections against COCO ground truth.

pycocotools is imported on use (``pip install pycocotools``, in the ``dev`` and ``convert`` extras), so
the device install does not need it unless it evaluates.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

from .detections import Detections
from .errors import EdgeRuntimeError

# names of COCOeval.stats, in its order
STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def detections_to_coco(dets: Detections, image_id: int, category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """One image's detections as COCO results; ``category_ids[class_id]`` is the COCO category of a class."""
    return [{"image_id": int(image_id), "category_id": int(category_ids[cid]),
             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(score)}
            for (x1, y1, x2, y2), score, cid in zip(dets.boxes, dets.scores, dets.class_ids)]


def category_ids_for(ground_truth: dict[str, Any], class_names: Sequence[str]) -> list[int]:
    """The COCO category id of each class name, matched by name; an unknown name is an error."""
    by_name = {c["name"]: c["id"] for c in ground_truth.get("categories", [])}
    missing = [n for n in class_names if n not in by_name]
    if missing:
        raise EdgeRuntimeError(f"ground truth has no categories named {missing[:5]} (it has {sorted(by_name)[:10]})")
    return [by_name[n] for n in class_names]


def coco_map(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    """COCOeval bbox statistics of ``results`` (COCO result dicts) against a COCO ground-truth dict.

    Returns ``STAT_NAMES`` -> value; images of the ground truth with no results count as misses.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise EdgeRuntimeError("COCO metrics need pycocotools: pip install pycocotools") from None
    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        gt = COCO()
        gt.dataset = copy.deepcopy(ground_truth)
        gt.dataset.setdefault("info", {})
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluation.stats)}
