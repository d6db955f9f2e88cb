"""The cross-run detection rule of tests/agreement.py on hand-made detections: what it lets through
(near-threshold boxes, NMS near-ties) and what it must still fail (score, box, class, a lost box)."""

from __future__ import annotations

import numpy as np
from agreement import INT8, REFERENCE, disagreements

from edge_runtime import Detections

NAMES = ("person", "dog")
THRESHOLD, NMS_IOU = 0.35, 0.6


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    """rows of (x1, y1, x2, y2, score, class_id)."""
    a = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int32), NAMES)


def check(a: Detections, b: Detections, tol=REFERENCE) -> list[str]:
    return disagreements(a, b, THRESHOLD, NMS_IOU, tol)


DOG = (100, 100, 200, 300, 0.80, 1)


def test_identical_and_within_tolerance_agree():
    assert check(dets(DOG), dets(DOG)) == []
    assert check(dets(DOG), dets((100.3, 100, 200, 299.8, 0.805, 1))) == []


def test_score_box_and_class_errors_fail():
    assert check(dets(DOG), dets((100, 100, 200, 300, 0.78, 1)))  # score 0.02 off
    # a box 2 px off is not excused as an NMS tie with itself
    assert check(dets(DOG), dets((102, 100, 200, 300, 0.80, 1)))
    assert check(dets(DOG), dets((100, 100, 200, 300, 0.80, 0)))  # another class
    assert check(dets(DOG), dets())  # lost
    assert check(dets(), dets(DOG))  # extra


def test_near_threshold_box_may_be_missing():
    assert check(dets((0, 0, 50, 50, THRESHOLD + 0.005, 0)), dets()) == []
    assert check(dets((0, 0, 50, 50, THRESHOLD + 0.05, 0)), dets())


def test_nms_near_ties_are_explained():
    # IoU tie: two dogs overlapping at IoU 0.58 (NMS 0.6) both survive in one run, one in the other
    twin = (100, 100, 200, 300 - 200 * (1 - 0.58), 0.70, 1)
    assert check(dets(DOG, twin), dets(DOG)) == []
    # far from the NMS threshold (IoU 0.3) the missing box is an error
    apart = (100, 100, 200, 160, 0.70, 1)
    assert check(dets(DOG, apart), dets(DOG))
    # score tie: two boxes overlapping beyond the NMS IoU (0.67), each run keeps the other one
    assert check(dets(DOG), dets((100, 140, 200, 340, 0.795, 1))) == []
    assert check(dets(DOG), dets((100, 140, 200, 340, 0.70, 1)))  # not a tie at 0.1 apart


def test_int8_rule_allows_its_measured_spread_only():
    a = dets(DOG)
    assert disagreements(a, dets((104, 100, 204, 300, 0.62, 1)), THRESHOLD, NMS_IOU, INT8, floor=0.4) == []
    assert disagreements(a, dets((104, 100, 204, 300, 0.50, 1)), THRESHOLD, NMS_IOU, INT8, floor=0.4)
    # 60 px off (IoU 0.25): neither the same box nor an NMS tie
    assert disagreements(a, dets((160, 100, 260, 300, 0.80, 1)), THRESHOLD, NMS_IOU, INT8, floor=0.4)
