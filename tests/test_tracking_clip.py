"""The tracking clip (converters.demo_data.tracking_clip) as ground truth for a tracker, and the MOT metrics
harness (tests/mot.py) that scores one against it. No tracker here: these check the yardstick."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from dataclasses import replace

import cv2
import numpy as np
import pytest

pytest.importorskip("tqdm", reason="converters.demo_data draws its progress bars with tqdm")

from mot import mot_scores  # noqa: E402

from converters.demo_data import (  # noqa: E402
    MIN_VISIBLE,
    TrackingTruth,
    line_crossings,
    render_scene,
    scene_background,
    scene_boxes,
    tracking_clip,
    tracking_script,
    write_tracking_clip,
)

FRAMES = 240  # 16 s at 15 FPS


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def clip():
    """(script, truth, sha256 of every frame) of seed 0 at 640x480, drawn through ``tracking_clip``."""
    frames, truth = tracking_clip(0)
    return tracking_script(0), truth, [_digest(frame) for frame in frames]


def _centre(box) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2])


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_clip_is_a_pure_function_of_the_seed(clip):
    script, truth, digests = clip
    assert len(digests) == len(truth.frames) == len(script.scenes) == FRAMES
    again = tracking_script(0)
    assert again.truth() == truth and again.crossings == script.crossings
    background = scene_background(again.scenes[0])
    for k in (0, 77, 150, 239):  # the streamed frames are the scenes, drawn
        image, _ = render_scene(again.scenes[k], background)
        assert image.shape == (480, 640, 3) and _digest(image) == digests[k]
    other_frames, other = tracking_clip(1)
    assert other.frames != truth.frames and _digest(next(other_frames)) != digests[0]


def test_ids_are_one_based_unique_and_numbered_by_first_appearance(clip):
    _, truth, _ = clip
    first: dict[int, int] = {}
    for k, frame in enumerate(truth.frames):
        ids = [i for i, _, _ in frame]
        assert len(ids) == len(set(ids)) and len(ids) <= 6  # at most six objects in view at once
        for i in ids:
            first.setdefault(i, k)
    assert sorted(first) == list(range(1, 13))
    assert sorted(first, key=lambda i: (first[i], i)) == sorted(first)
    classes = {(i, c) for frame in truth.frames for i, c, _ in frame}
    assert len(classes) == 12 and {c for _, c in classes} == set(range(5))  # one class per id, all five classes


def test_every_truth_box_bounds_the_pixels_its_object_draws(clip):
    """Each box is the extent of what its object paints: the frame minus the same frame without that object."""
    script, truth, _ = clip
    background = scene_background(script.scenes[0])
    checked = 0
    for k in range(0, FRAMES, 8):
        scene, ids = script.scenes[k], script.ids[k]
        image, _ = render_scene(scene, background)
        for object_id, _, (x, y, w, h) in truth.frames[k]:
            j = ids.index(object_id)
            without, _ = render_scene(replace(scene, objects=scene.objects[:j] + scene.objects[j + 1:]), background)
            ys, xs = np.nonzero(np.abs(image.astype(int) - without.astype(int)).max(2) > 20)
            drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            # a box takes the pixels more than half covered; anti-aliased edges paint a little beyond them
            assert np.abs(drawn - [x, y, x + w, y + h]).max() <= 2, (k, object_id, drawn, (x, y, w, h))
            checked += 1
    assert checked >= 100


def test_visibility_is_the_part_of_the_outline_in_view(clip):
    """An object wholly in the frame and clear of the pillar and of other objects shows fully; one cut by the
    border does not (what lies outside counts as hidden); the pillar hides some objects completely."""
    script, truth, _ = clip
    clear = cut = 0
    wholly_hidden = set()
    for scene, ids, frame, fractions in zip(script.scenes, script.ids, truth.frames, truth.visibility):
        assert len(frame) == len(fractions) and all(MIN_VISIBLE <= v <= 1 for v in fractions)
        pillar_x, _, _, _, thickness, _ = scene.occluders[0]
        boxes = {i: np.concatenate([o.polygon().min(0), o.polygon().max(0)]) for i, o in zip(ids, scene.objects)}
        inside = {i for i, b in boxes.items() if min(b[:2]) >= 2 and b[2] <= 638 and b[3] <= 478}  # anti-aliasing
        visibility = {i: v for (i, _, _), v in zip(frame, fractions)}
        for i, (x1, y1, x2, y2) in boxes.items():
            apart = all(b[2] < x1 or x2 < b[0] or b[3] < y1 or y2 < b[1] for j, b in boxes.items() if j != i)
            if i in inside and apart and (x2 < pillar_x - thickness / 2 - 1 or x1 > pillar_x + thickness / 2 + 1):
                assert visibility[i] >= 0.999
                clear += 1
            elif i in visibility and (min(x1, y1) < -8 or x2 > 648 or y2 > 488):
                assert visibility[i] < 0.999
                cut += 1
            if i in inside and i not in {j for j, *_ in scene_boxes(scene)}:
                wholly_hidden.add(i)
    assert clear > 300 and cut > 100 and len(wholly_hidden) >= 2


def test_objects_vanish_behind_the_pillar_and_come_back(clip):
    _, truth, _ = clip
    frames_of: dict[int, list[int]] = {}
    for k, frame in enumerate(truth.frames):
        for i, _, _ in frame:
            frames_of.setdefault(i, []).append(k)
    gaps = {i: b - a - 1 for i, ks in frames_of.items() for a, b in zip(ks, ks[1:]) if b - a > 1}
    assert len(gaps) >= 4, gaps  # a track must live through each of these
    assert all(3 <= gap <= 20 for gap in gaps.values()), gaps


def test_same_class_paths_cross_with_overlap(clip):
    """At least two pairs of same-class objects pass each other (their order along x flips) while their
    boxes overlap: where a tracker can swap their ids."""
    _, truth, _ = clip
    tracks: dict[int, dict[int, list[float]]] = {}
    class_of = {}
    for k, frame in enumerate(truth.frames):
        for i, c, box in frame:
            tracks.setdefault(i, {})[k] = box
            class_of[i] = c
    traps = []
    for a, b in itertools.combinations(sorted(tracks), 2):
        common = sorted(tracks[a].keys() & tracks[b].keys())
        if class_of[a] != class_of[b] or not common:
            continue
        order = [np.sign(_centre(tracks[a][k])[0] - _centre(tracks[b][k])[0]) for k in common]
        overlapping = sum(_overlap(tracks[a][k], tracks[b][k]) for k in common)
        if order[0] != order[-1] and overlapping >= 10:
            traps.append((a, b))
    assert len(traps) >= 2, traps


def test_line_crossings_are_clean_and_follow_the_truth_boxes(clip):
    _, truth, _ = clip
    assert truth.count_line == (0.0, 240.0, 640.0, 240.0)
    by_class = Counter((c, d) for _, _, c, d in truth.crossings)
    both_ways = {c for c, d in by_class if d == "in"} & {c for c, d in by_class if d == "out"}
    assert len(both_ways) >= 2, by_class
    boxes = [{i: box for i, _, box in frame} for frame in truth.frames]
    for k, object_id, _, direction in truth.crossings:
        for frame in (k - 1, k):  # in full view and clear of every other object on both sides of the line
            index = [i for i, _, _ in truth.frames[frame]].index(object_id)
            assert truth.visibility[frame][index] >= 0.99
            assert not any(_overlap(boxes[frame][object_id], box) for i, box in boxes[frame].items() if i != object_id)
        above = _centre(boxes[k - 1][object_id])[1] < 240 <= _centre(boxes[k][object_id])[1]
        assert above == (direction == "in")  # "in" is downwards
    # the truth boxes' centres cross the line exactly there, and nowhere else: a tracker counting by its box
    # centres can be held to the frame
    centres = [{i: _centre(box) for i, box in frame.items()} for frame in boxes]
    assert line_crossings(truth.count_line, centres) == [(k, i, d) for k, i, _, d in truth.crossings]


def test_written_clip_holds_the_frames_and_its_truth(tmp_path):
    path = write_tracking_clip(tmp_path / "track.avi", seconds=1.0, progress=False)
    frames, truth = tracking_clip(seconds=1.0)
    assert TrackingTruth.from_json(json.loads(path.with_suffix(".json").read_text())) == truth
    capture = cv2.VideoCapture(str(path))
    read = []
    while (got := capture.read())[0]:
        read.append(got[1])
    capture.release()
    assert len(read) == 15

    def coarse(image: np.ndarray) -> np.ndarray:  # MJPG loses the sensor noise, not the picture
        return cv2.resize(image, (80, 60), interpolation=cv2.INTER_AREA).astype(int)

    for decoded, frame in zip(read, frames):
        assert decoded.shape == frame.shape and np.abs(coarse(decoded) - coarse(frame)).mean() < 3


# ---- the metrics harness ----

def test_truth_against_itself_scores_perfectly(clip):
    pytest.importorskip("motmetrics")
    _, truth, _ = clip
    scores = mot_scores(truth.frames, truth.frames, hypothesis_boxes="xywh")
    assert scores["mota"] == 1.0 and scores["idf1"] == 1.0 and scores["motp"] == pytest.approx(0.0)
    assert scores["num_switches"] == scores["num_false_positives"] == scores["num_misses"] == 0
    assert scores["num_unique_objects"] == scores["num_hypothesis_ids"] == 12
    xyxy = [[(i, c, [x, y, x + w, y + h]) for i, c, (x, y, w, h) in frame] for frame in truth.frames]
    assert mot_scores(truth.frames, xyxy)["mota"] == 1.0  # the default: hypothesis boxes as x1, y1, x2, y2


def _swap_ids(frames, a: int, b: int, start: int) -> list:
    swap = {a: b, b: a}
    return [[(swap.get(i, i) if k >= start else i, c, box) for i, c, box in frame] for k, frame in enumerate(frames)]


def test_swapping_two_ids_counts_two_switches_and_lowers_idf1(clip):
    pytest.importorskip("motmetrics")
    _, truth, _ = clip
    present = [{i for i, _, _ in frame} for frame in truth.frames]
    boxes = [{i: box for i, _, box in frame} for frame in truth.frames]
    # two objects in view on both sides of frame 60, their boxes apart (else CLEAR MOT keeps the old pairs)
    a, b = next((a, b) for a, b in itertools.combinations(sorted(present[60]), 2)
                if {a, b} <= present[59] and not _overlap(boxes[60][a], boxes[60][b]))
    scores = mot_scores(truth.frames, _swap_ids(truth.frames, a, b, 60), hypothesis_boxes="xywh")
    total = sum(len(frame) for frame in truth.frames)
    before = {i: sum(i in p for p in present[:60]) for i in (a, b)}
    after = {i: sum(i in p for p in present[60:]) for i in (a, b)}
    # the best one-to-one id mapping keeps either the halves before the swap or those after it
    id_true_positives = total - sum(before.values()) - sum(after.values()) + max(sum(before.values()),
                                                                                  sum(after.values()))
    assert scores["num_switches"] == 2
    assert scores["mota"] == pytest.approx(1 - 2 / total)
    assert scores["idf1"] == pytest.approx(id_true_positives / total) and id_true_positives < total


def test_a_dropped_box_is_one_miss_and_a_wrong_class_a_miss_and_a_false_positive(clip):
    pytest.importorskip("motmetrics")
    _, truth, _ = clip
    total = sum(len(frame) for frame in truth.frames)
    object_id = truth.frames[100][0][0]
    dropped = [[e for e in frame if not (k == 100 and e[0] == object_id)] for k, frame in enumerate(truth.frames)]
    scores = mot_scores(truth.frames, dropped, hypothesis_boxes="xywh")
    assert scores["num_misses"] == 1 and scores["num_false_positives"] == 0 and scores["num_switches"] == 0
    assert scores["mota"] == pytest.approx(1 - 1 / total)
    assert scores["idf1"] == pytest.approx(2 * (total - 1) / (2 * total - 1))
    relabelled = [[(i, (c + 1) % 5 if (k == 100 and i == object_id) else c, box) for i, c, box in frame]
                  for k, frame in enumerate(truth.frames)]
    scores = mot_scores(truth.frames, relabelled, hypothesis_boxes="xywh")
    assert scores["num_misses"] == 1 and scores["num_false_positives"] == 1
    assert scores["mota"] == pytest.approx(1 - 2 / total)


def test_boxes_below_the_visibility_floor_are_neither_missed_nor_false_positives(clip):
    pytest.importorskip("motmetrics")
    _, truth, _ = clip
    faint = sum(v < 0.7 for fractions in truth.visibility for v in fractions)
    seen = [[e for e, v in zip(frame, fractions) if v >= 0.7]
            for frame, fractions in zip(truth.frames, truth.visibility)]
    assert mot_scores(truth.frames, seen, hypothesis_boxes="xywh")["num_misses"] == faint > 100
    scores = mot_scores(truth.frames, seen, hypothesis_boxes="xywh", truth_visibility=truth.visibility,
                        min_visibility=0.7)
    assert scores["num_misses"] == scores["num_false_positives"] == 0 and scores["mota"] == 1.0
    assert scores["num_truth_boxes"] == sum(map(len, seen))
    # a track on a faint object is not a false positive either
    scores = mot_scores(truth.frames, truth.frames, hypothesis_boxes="xywh", truth_visibility=truth.visibility,
                        min_visibility=0.7)
    assert scores["num_false_positives"] == 0 and scores["mota"] == 1.0 and scores["idf1"] == 1.0
