"""Tracking and counting (issue 19) on scripted detections: the Kalman filter's time model, ByteTrack's
association stages, ids through crossings, occlusions and dropped frames, line counts and zone dwell,
bounded memory, and the regions file's errors. The same code on rendered video with ground-truth
trajectories is in test_tracking_clip.py."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edge_runtime.detections import Detections
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.tracking import (
    ByteTracker,
    CountLine,
    LineCounter,
    TrackerSettings,
    Tracking,
    Zone,
    ZoneCounter,
    load_regions,
    parse_line,
)
from edge_runtime.tracking.kalman import BoxKalmanFilter

pytest.importorskip("lap", reason="the tracker's assignment library (pip install 'edge-runtime[track]')")

NAMES = ("person", "car")


def frame(*objects: tuple[float, float, float, float, float, int]) -> Detections:
    """Detections from (cx, cy, w, h, score, class_id) tuples, sorted by score as a detector returns them."""
    if not objects:
        return Detections.empty(NAMES)
    rows = sorted(objects, key=lambda o: -o[4])
    a = np.array(rows, np.float64)
    boxes = np.stack([a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2, a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2], 1)
    return Detections(boxes.astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int32), NAMES)


def id_at(tracked: Detections, x: float, y: float) -> int | None:
    """The track id of the returned box whose centre is nearest (x, y), within 20 px."""
    if not len(tracked):
        return None
    centres = (tracked.boxes[:, :2] + tracked.boxes[:, 2:]) / 2
    d = np.hypot(centres[:, 0] - x, centres[:, 1] - y)
    return int(tracked.track_ids[d.argmin()]) if d.min() < 20 else None


def test_kalman_velocity_is_in_pixels_per_second_whatever_the_frame_rate():
    """The same motion (120 px/s) observed at 30 FPS and at 7.5 FPS gives the same velocity estimate, and a
    prediction over a 0.4 s gap lands where the object is."""
    kf = BoxKalmanFilter()
    for fps in (30.0, 7.5):
        mean, cov = kf.initiate(np.array([[100.0, 200.0, 40.0, 80.0]]))
        for i in range(1, int(2 * fps)):
            mean, cov = kf.predict(mean, cov, 1 / fps)
            mean, cov = kf.update(mean, cov, np.array([[100.0 + 120.0 * i / fps, 200.0, 40.0, 80.0]]))
        assert mean[0, 4] == pytest.approx(120.0, abs=3.0), fps
        x_now = mean[0, 0]
        ahead, ahead_cov = kf.predict(mean, cov, 0.4)
        assert ahead[0, 0] == pytest.approx(x_now + 48.0, abs=1.5)
        assert ahead_cov[0, 0, 0] > cov[0, 0, 0]  # less certain of cx after a gap


def test_kalman_filter_equals_the_full_8x8_filter():
    """The four decoupled (position, velocity) filters give what the textbook 8x8 filter gives with the same
    noise (x' = Fx, P' = FPF^T + Q; K = PH^T(HPH^T + R)^-1), step for step, on an irregular frame clock."""
    kf, rng = BoxKalmanFilter(), np.random.default_rng(0)
    truth = np.array([[300.0, 200.0, 40.0, 90.0], [50.0, 400.0, 120.0, 60.0]])
    mean, cov = kf.initiate(truth)
    full_mean, full_cov = mean.copy(), np.zeros((2, 8, 8))
    for n in range(2):
        full_cov[n][np.diag_indices(8)] = np.concatenate([cov[n, 0], cov[n, 2]])
    for dt in rng.uniform(0.01, 0.3, 25):
        truth += dt * np.array([80.0, -30.0, 2.0, -1.0])
        mean, cov = kf.predict(mean, cov, dt)
        motion = np.eye(8)
        motion[:4, 4:] = dt * np.eye(4)
        for n in range(2):
            size = np.abs(full_mean[n, [2, 3, 2, 3]])
            q = np.concatenate([(size / 20) ** 2, (size / 160 * 30) ** 2]) * dt * 30
            full_mean[n] = motion @ full_mean[n]
            full_cov[n] = motion @ full_cov[n] @ motion.T + np.diag(q)
        z = truth + rng.normal(0, 2, truth.shape)
        mean, cov = kf.update(mean, cov, z)
        for n in range(2):
            size = np.abs(full_mean[n, [2, 3, 2, 3]])
            h = np.eye(4, 8)
            gain = full_cov[n] @ h.T @ np.linalg.inv(h @ full_cov[n] @ h.T + np.diag((size / 20) ** 2))
            full_mean[n] = full_mean[n] + gain @ (z[n] - h @ full_mean[n])
            full_cov[n] = (np.eye(8) - gain @ h) @ full_cov[n]
        np.testing.assert_allclose(mean, full_mean, rtol=1e-9, atol=1e-9)
        for n in range(2):
            blocks = [np.diag(cov[n, 0]), np.diag(cov[n, 1]), np.diag(cov[n, 2])]
            np.testing.assert_allclose(full_cov[n], np.block([[blocks[0], blocks[1]], [blocks[1], blocks[2]]]),
                                       rtol=1e-9, atol=1e-9)


def test_two_objects_of_a_class_crossing_keep_their_ids():
    """Two people walk through each other (boxes overlapping for several frames): the velocities carry
    each id through, no switch."""
    tracker = ByteTracker(TrackerSettings(high_score=0.5))
    first = second = None
    for i in range(60):
        t = i / 30
        a, b = (100 + 200 * t, 200), (500 - 200 * t, 210)
        tracked = tracker.update(frame((*a, 60, 120, 0.9, 0), (*b, 60, 120, 0.8, 0)), t)
        ids = id_at(tracked, *a), id_at(tracked, *b)
        if i == 1:
            first, second = ids
        elif i > 1:
            assert ids == (first, second), f"frame {i}: ids {ids}, expected {(first, second)}"
    assert first != second and tracker.ids_issued == 2


@pytest.mark.parametrize(("gap_s", "same_id"), [(0.5, True), (1.5, False)])
def test_an_occluded_object_keeps_its_id_within_max_lost_s(gap_s, same_id):
    tracker = ByteTracker(TrackerSettings(high_score=0.5, max_lost_s=1.0))
    ids = []
    for i in range(90):
        t = i / 30
        x = 100 + 150 * t
        hidden = 1.0 <= t < 1.0 + gap_s
        tracked = tracker.update(frame() if hidden else frame((x, 200, 50, 100, 0.9, 0)), t)
        if not hidden and t > 0.1:
            ids.append(id_at(tracked, x, 200))
    # a track that expired is not revived: the object starts a new one, tentative (not shown) until its third hit
    assert ids.count(None) == (0 if same_id else tracker.settings.min_hits - 1)
    assert len(set(ids) - {None}) == (1 if same_id else 2), ids


def test_low_score_detections_continue_tracks_but_start_none():
    """ByteTrack's second stage: a tracked object whose score falls to 0.2 (occluded, blurred) stays tracked
    and shown; a 0.2 detection with no track behind it never becomes one."""
    tracker = ByteTracker(TrackerSettings(high_score=0.5, low_score=0.1))
    for i in range(40):
        t = i / 30
        score = 0.9 if i < 10 else 0.2
        tracked = tracker.update(frame((100 + 3 * i, 200, 50, 100, score, 0), (400, 100, 50, 50, 0.2, 1)), t)
        if i >= 1:
            assert id_at(tracked, 100 + 3 * i, 200) == 1, i
            assert id_at(tracked, 400, 100) is None, i
    assert tracker.ids_issued == 1


def test_a_one_frame_false_positive_never_gets_an_id():
    tracker = ByteTracker(TrackerSettings(high_score=0.5))
    tracker.update(frame((100, 100, 50, 50, 0.9, 0)), 0.0)
    for i in range(1, 30):
        extra = [(300, 300, 40, 40, 0.95, 0)] if i == 10 else []
        tracked = tracker.update(frame((100, 100, 50, 50, 0.9, 0), *extra), i / 30)
        assert tracked.track_ids.tolist() == [1]
    assert tracker.ids_issued == 1 and len(tracker) == 1  # the tentative track was dropped, not kept


def test_tracks_are_per_class():
    """A car detection where a person track is does not continue it: the car gets its own id."""
    tracker = ByteTracker(TrackerSettings(high_score=0.5))
    tracker.update(frame((100, 100, 60, 120, 0.9, 0)), 0.0)
    tracker.update(frame((102, 100, 60, 120, 0.9, 0)), 1 / 30)
    for i in range(2, 5):
        tracked = tracker.update(frame((100 + 2 * i, 100, 60, 120, 0.9, 1)), i / 30)
    assert tracked.labels == ["car"] and tracked.track_ids.tolist() == [2]


def test_dropped_frames_are_tracked_by_time_not_frame_count():
    """A live source drops frames unevenly while the pipeline is busy: here a 30 FPS camera delivers frames
    1 and 10 frames apart in turn (after a second of every frame), of an object moving 300 px/s (10 px per
    camera frame, boxes 60 px wide). With the frames' capture times the filter predicts each jump and the
    object stays tracked under its first id; counting delivered frames instead (a frame-count tracker's
    clock) the jumps alternate 10 and 100 px, the prediction misses every other frame and the object is
    shown on few of them."""
    def frames_shown_as_first_id(clock: str) -> int:
        tracker = ByteTracker(TrackerSettings(high_score=0.5, recover_gate=0.0))  # the motion model alone
        shown, camera_frame = 0, 0
        for delivered, gap in enumerate([1] * 10 + [10, 1] * 15):  # every frame at first, then the drops
            camera_frame += gap
            x = 50 + 10 * camera_frame
            t = camera_frame / 30 if clock == "capture time" else delivered / 30
            tracked = tracker.update(frame((x, 200, 60, 120, 0.9, 0)), t)
            shown += tracked.track_ids.tolist() == [1]
        return shown

    assert frames_shown_as_first_id("capture time") == 40
    assert frames_shown_as_first_id("delivered frames") < 25


def test_tracks_and_counter_state_are_forgotten_after_max_lost_s():
    """A long stream of objects passing through: what the tracker and the counters hold stays bounded by
    the objects of the last max_lost_s, however many came before."""
    tracking = Tracking(TrackerSettings(high_score=0.5, max_lost_s=0.5), lines=[CountLine("l", (0, 240), (640, 240))],
                        zones=[Zone("z", ((0, 0), (640, 0), (640, 200), (0, 200)))])
    most = 0
    for i in range(3000):
        t = i / 30
        objects = []
        for k in range(4):  # a new object every 0.5 s, each crossing the frame downwards in 2 s
            age = (t - k * 0.5) % 2.0
            objects.append((80 + 150 * k, -60 + age * 300, 50, 50, 0.9, k % 2))
        tracking.update(frame(*objects), t)
        most = max(most, len(tracking.tracker), len(tracking.lines[0]._side), len(tracking.zones[0]._inside))
    snap = tracking.snapshot()
    assert tracking.ids_issued > 150  # every pass is a new object...
    assert most <= 8  # ...yet at most the four on screen plus those lost in the last 0.5 s are held
    passes = 4 * 50 - 4  # every object that completed its pass crossed the line once, downwards
    assert sum(snap["lines"]["l"]["in"].values()) >= passes and not snap["lines"]["l"]["out"]
    assert sum(snap["zones"]["z"]["visits"].values()) >= passes


def tracked_frame(*objects: tuple[int, float, float, int]) -> Detections:
    """Tracked detections from (track_id, cx, cy, class_id), 40 px boxes."""
    dets = frame(*((x, y, 40, 40, 0.9, c) for _, x, y, c in objects))
    by_centre = {(x, y): tid for tid, x, y, _ in objects}
    centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
    ids = [by_centre[min(by_centre, key=lambda k: np.hypot(k[0] - cx, k[1] - cy))] for cx, cy in centres]
    return Detections(dets.boxes, dets.scores, dets.class_ids, NAMES, np.array(ids, np.int64))


def test_line_counts_direction_segment_and_jitter():
    counter = LineCounter(parse_line("door=100,300,500,300"))
    path_down = [(300, y) for y in range(240, 361, 20)]  # crosses downwards inside the segment: "in"
    path_up = [(200, y) for y in range(360, 239, -20)]  # upwards: "out"
    outside = [(600, y) for y in range(240, 361, 20)]  # beside the segment's end: not a crossing
    jitter = [(400, 300 + d) for d in (-6, 1, -1, 2, -2, 1, -1, 6)]  # sits on the line: at most one crossing
    events = []
    for step in range(8):
        objects = []
        for tid, path, cls in ((1, path_down, 0), (2, path_up, 1), (3, outside, 0), (4, jitter, 0)):
            if step < len(path):
                objects.append((tid, *path[step], cls))
        events += counter.update(tracked_frame(*objects), [])
    assert counter.snapshot() == {"in": {"person": 2}, "out": {"car": 1}}
    assert sorted((e["track_id"], e["direction"]) for e in events) == [(1, "in"), (2, "out"), (4, "in")]
    reverse = LineCounter(parse_line("500,300,100,300"))  # the same segment drawn the other way: in and out swap
    for step in range(7):
        reverse.update(tracked_frame((1, *path_down[step], 0)), [])
    assert reverse.snapshot() == {"in": {}, "out": {"person": 1}}


def test_zone_dwell_occupancy_and_visits():
    zone = ZoneCounter(Zone("desk", ((100, 100), (300, 100), (300, 300), (100, 300))))
    events = []
    # track 1 walks in at t=1, stays (lost from view between 3 and 4 s), leaves at t=6; track 2 enters at t=2
    for step in range(80):
        t = step / 10
        objects = []
        if t < 3 or 4 <= t:
            objects.append((1, 50 + (150 if 1 <= t < 6 else (0 if t < 1 else 350)), 200, 0))
        if t >= 2:
            objects.append((2, 200, 150, 1))
        events += zone.update(tracked_frame(*objects), [], t)
        if step == 35:
            snap = zone.snapshot(t)
            assert snap["occupancy"] == {"car": 1, "person": 1}  # track 1 is lost from view but still inside
            assert snap["dwell_s"] == {"1": 2.5, "2": 1.5}
    events += zone.update(tracked_frame(), [2], 8.0)  # the tracker dropped track 2: its visit ends when last seen
    exits = {e["track_id"]: e["dwell_s"] for e in events if e["event"] == "exit"}
    assert exits == pytest.approx({1: 5.0, 2: 5.9})
    snap = zone.snapshot(8.0)
    assert snap["visits"] == {"car": 1, "person": 1} and snap["occupancy"] == {}
    assert snap["max_dwell_s"] == pytest.approx({"car": 5.9, "person": 5.0})


def test_zone_contains_matches_opencv_on_a_concave_polygon():
    import cv2

    polygon = ((10, 10), (200, 10), (200, 200), (120, 200), (120, 60), (60, 60), (60, 200), (10, 200))
    points = np.random.default_rng(0).uniform(0, 220, (500, 2))
    expected = [cv2.pointPolygonTest(np.array(polygon, np.float32), (float(x), float(y)), False) > 0
                for x, y in points]
    assert Zone("u", polygon).contains(points).tolist() == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("{", "not a readable JSON regions file"),
    ('{"zones": [{"name": "a", "polygon": [[0, 0], [1, 1]]}]}', "at least 3 points"),
    ('{"zones": [{"name": "a", "polygon": [[0, 0], [1, "x"], [2, 2]]}]}', "expected a point"),
    ('{"zones": [{"name": "a", "points": [[0, 0], [1, 1], [2, 2]]}]}', "expected exactly the keys"),
    ('{"lines": [{"name": "a", "points": [[0, 0], [0, 0]]}]}', "its two points are the same"),
    ('{"lines": [{"name": "a", "points": [[0, 0], [5, 0]]}], "zones": [{"name": "a", "polygon": '
     '[[0, 0], [1, 0], [1, 1]]}]}', "'a' is used twice"),
    ('{"areas": []}', '"zones" and/or "lines"'),
    # untrusted JSON that used to end in a traceback, or load and then fail the run at its first drawn frame
    ('{"lines": [{"name": "a", "points": [[0, 0], [1%s, 1]]}]}' % ("0" * 400), "within +-1e+06"),
    ('{"lines": [{"name": "a", "points": [[0, 0], [1%s, 1]]}]}' % ("0" * 5000), "not a readable JSON regions file"),
    ('{"lines": ' + "[" * 100_000 + "]" * 100_000 + "}", "not a readable JSON regions file"),
    ('{"lines": [{"name": "a", "points": [[0, 0], [1e10, 0]]}]}', "within +-1e+06"),
    ('{"lines": [{"name": {"x": 1}, "points": [[0, 0], [1, 0]]}]}', "lines[0].name: expected a non-empty string"),
    ('{"zones": [{"name": true, "polygon": [[0, 0], [1, 0], [1, 1]]}]}', "zones[0].name: expected a non-empty"),
])
def test_regions_file_errors_name_the_file(tmp_path, text, problem):
    path = tmp_path / "zones.json"
    path.write_text(text)
    with pytest.raises(EdgeRuntimeError) as err:
        load_regions(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value) and "\n" not in str(err.value)


def test_deeply_nested_regions_file_is_refused_before_parsing_even_with_a_raised_recursion_limit(tmp_path):
    """Some libraries raise Python's recursion limit (the full test suite runs with one that does): json's C
    decoder then overflows the C stack on deep nesting and the process crashes instead of raising. The file's
    nesting is checked before it is parsed."""
    path = tmp_path / "zones.json"
    path.write_text('{"lines": ' + "[" * 200_000 + "]" * 200_000 + "}")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000_000)
    try:
        with pytest.raises(EdgeRuntimeError, match="nested 200001 levels deep"):
            load_regions(path)
    finally:
        sys.setrecursionlimit(limit)
    path.write_text('{"zones": [{"name": "[[[{{\\"[", "polygon": [[0, 0], [9, 0], [9, 9]]}]}')  # brackets in a string
    assert load_regions(path)[1][0].name == '[[[{{"['


def test_regions_file_loads_lines_and_zones(tmp_path):
    path = tmp_path / "zones.json"
    path.write_text(json.dumps({"zones": [{"name": "door", "polygon": [[100, 80], [300, 80], [300, 400]]}],
                                "lines": [{"name": "entry", "points": [[0, 300], [640, 300]]}]}))
    lines, zones = load_regions(path)
    assert lines == [CountLine("entry", (0.0, 300.0), (640.0, 300.0))]
    assert zones == [Zone("door", ((100.0, 80.0), (300.0, 80.0), (300.0, 400.0)))]


def test_missing_assignment_library_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "lap", None)
    with pytest.raises(EdgeRuntimeError, match=r"pip install 'edge-runtime\[track\]'"):
        ByteTracker()
    with pytest.raises(EdgeRuntimeError, match=r"pip install 'edge-runtime\[track\]'"):
        Tracking()  # at once, not at the first frame of a run


def test_track_ids_round_trip_through_json():
    dets = tracked_frame((7, 100, 100, 0), (3, 300, 200, 1))
    back = Detections.from_json(json.loads(json.dumps(dets.to_json())), NAMES)
    assert back.track_ids.tolist() == dets.track_ids.tolist() == [7, 3]
    assert Detections.from_json(frame((100, 100, 40, 40, 0.9, 0)).to_json(), NAMES).track_ids is None


def test_a_lost_track_at_rest_is_not_recovered_by_a_box_across_the_frame():
    """Stage 4 gates by distance along the track's motion: a track with no velocity (first-frame tracks, an
    object whose boxes never moved) may only take a box within half its size, never one anywhere in the frame."""
    tracker = ByteTracker(TrackerSettings(high_score=0.5))
    for i in range(5):  # identical boxes: the filter's velocity stays exactly 0
        tracker.update(frame((100, 100, 40, 40, 0.9, 0)), i / 30)
    tracker.update(frame(), 5 / 30)  # lost
    far = tracker.update(frame((500, 400, 40, 40, 0.9, 0)), 6 / 30)
    assert far.track_ids.tolist() == [] and tracker.ids_issued == 1  # a new, tentative track
    near = tracker.update(frame((500, 400, 40, 40, 0.9, 0), (108, 100, 40, 40, 0.9, 0)), 7 / 30)
    assert id_at(near, 108, 100) == 1  # within half a box of where it was: the same object


@pytest.mark.parametrize("spec", ["0,240,640", "0,240,1e10,240", "0,nan,640,240", "a=0,240,inf,240"])
def test_count_line_spec_errors(spec):
    with pytest.raises(ValueError, match=r"expected \[NAME=\]X1,Y1,X2,Y2"):
        parse_line(spec)


def test_a_newer_track_on_a_lost_one_hands_its_box_to_the_older_id():
    """Object 1 stops being seen; a new track (2) is confirmed nearby and walks onto the spot where 1 is
    predicted. The two are one object: the older id is kept, and the box stays shown in the frame where
    that is decided (it used to vanish for that frame, 2 dropped before 1 had taken the box)."""
    tracker = ByteTracker(TrackerSettings(high_score=0.5, recover_gate=0.0))
    for i in range(30):
        tracker.update(frame((125, 125, 50, 50, 0.9, 0)), i / 30)
    tracker.update(frame(), 30 / 30)
    shown = []
    for k, dy in enumerate(range(80, -1, -4)):
        tracked = tracker.update(frame((125, 125 + dy, 50, 50, 0.9, 0)), (31 + k) / 30)
        shown.append(tracked.track_ids.tolist())
    assert shown[2:19] == [[2]] * 17  # the new track, confirmed at its third hit
    assert shown[19:] == [[1]] * 2  # the old id from the frame the boxes coincide, without a gap
    assert tracker.ids_issued == 2 and len(tracker) == 1


def test_the_end_of_run_table_keeps_names_that_contain_nan():
    """Blank dwell cells (no visit ended yet) are blank strings: COCO's "banana" and a zone "nanny gate" print whole."""
    fruit = ("apple", "banana")
    tracking = Tracking(TrackerSettings(high_score=0.5), zones=[Zone("nanny gate", ((0, 0), (100, 0), (100, 100)))])
    box = Detections(np.array([[60, 20, 80, 40]], np.float32), np.array([0.9], np.float32), np.array([1], np.int32),
                     fruit)
    for i in range(3):
        tracking.update(box, i / 30)
    row = tracking.table().splitlines()[-1].split()
    assert row == ["nanny", "gate", "banana", "1", "0"]


def test_boxes_without_area_or_not_finite_start_no_track(recwarn):
    """A box clipped to the frame's edge (zero width) or a NaN box from a broken model is ignored: it used to
    become a track (a first-frame id) whose recovery gate divided 0 by 0 on every later frame."""
    tracker = ByteTracker(TrackerSettings(high_score=0.5))
    edge = Detections(np.array([[640, 100, 640, 160], [np.nan, 0, 10, 10], [100, 100, 140, 140]], np.float32),
                      np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 0], np.int32), NAMES)
    assert tracker.update(edge, 0.0).track_ids.tolist() == [1]  # the real box alone
    for i in range(1, 5):
        tracker.update(frame() if i < 3 else edge, i / 30)
    assert tracker.ids_issued == 1 and len(tracker) == 1
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_settings_are_checked_and_min_hits_1_confirms_at_once():
    for bad in ({"first_iou": 0.0}, {"duplicate_iou": 1.5}, {"min_hits": 0}, {"min_hits": 2.5}, {"recover_gate": -1},
                {"low_score": 0.6, "high_score": 0.5}, {"max_lost_s": float("nan")}):
        with pytest.raises(ValueError):
            TrackerSettings(**bad)
    tracker = ByteTracker(TrackerSettings(high_score=0.5, min_hits=1))
    tracker.update(frame((100, 100, 50, 50, 0.9, 0)), 0.0)
    tracked = tracker.update(frame((100, 100, 50, 50, 0.9, 0), (400, 300, 50, 50, 0.9, 1)), 0.1)
    assert tracked.track_ids.tolist() == [1, 2]


def test_a_clock_that_goes_back_is_taken_as_restarted():
    """A Tracking reused for a second pass over a file sees t start again at 0: tracks go on moving and
    expiring instead of freezing until the clock catches up."""
    tracker = ByteTracker(TrackerSettings(high_score=0.5, max_lost_s=1.0))
    for i in range(60):  # first pass: 2 s
        tracker.update(frame((100 + 3 * i, 200, 50, 100, 0.9, 0)), i / 30)
    assert len(tracker) == 1
    held = []
    for i in range(45):  # second pass from t = 0, the object gone: its track expires after 1 s as usual
        tracker.update(frame(), i / 30)
        held.append(len(tracker))
    assert held[:30] == [1] * 30 and held[-10:] == [0] * 10 and tracker.ids_issued == 1
