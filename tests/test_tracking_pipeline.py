"""Tracking inside the real-time pipeline (issue 19): the Python loop over results, the CLI's flags, JSON lines
and summary, flat memory over a long tracked run. Bundled demo model and generated clip: no ../shared."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator

import cv2
import pytest
from test_cli import assert_one_line_error, read_jsonl, run_cli

from edge_runtime import Detector
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.io.pipeline import iter_pipeline, run_pipeline
from edge_runtime.io.sources import Frame, Source, open_source
from edge_runtime.tracking import CountLine, Tracking

pytest.importorskip("lap", reason="the tracker's assignment library (pip install 'edge-runtime[track]')")
pytest.importorskip("torch", reason="the demo package and clip come from the host-side converters")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from converters.demo_data import write_clip

    return write_clip(tmp_path_factory.mktemp("clip") / "shapes.avi", seconds=4, progress=False)


@pytest.fixture(scope="module")
def detector(demo_package) -> Detector:
    return Detector(demo_package, backend="onnx", threads=1)


@pytest.mark.parametrize("mode", ["threaded", "sequential"])
def test_python_loop_gets_tracked_results_and_a_summary(detector, clip, mode):
    shown = detector.score_threshold
    seen, ids = [], set()
    with iter_pipeline(detector, open_source(str(clip)), progress=False, mode=mode,
                       track=Tracking(lines=[CountLine("mid", (0, 240), (640, 240))])) as run:
        for frame, dets in run:
            assert detector.score_threshold == 0.1  # lowered for the run: low-score detections reach the tracker
            assert dets.track_ids is not None and len(dets.track_ids) == len(dets)
            assert len(set(dets.track_ids.tolist())) == len(dets)  # one box per id in a frame
            assert all(s > 0.1 for s in dets.scores)
            seen.append(frame.index)
            ids.update(dets.track_ids.tolist())
    assert detector.score_threshold == shown  # restored
    assert seen == list(range(60))
    summary = run.summary
    assert summary.frames == 60 and summary.stages["track"]["count"] == 60
    assert summary.tracking["ids"] == max(ids) and summary.tracking["lines"]["mid"].keys() == {"in", "out"}
    assert "tracking:" in summary.table() and "line" in summary.table()


def test_threaded_and_sequential_track_alike(detector, clip, tmp_path):
    runs = {}
    for mode in ("threaded", "sequential"):
        run_pipeline(detector, open_source(str(clip)), json_path=tmp_path / f"{mode}.jsonl", progress=False, mode=mode,
                     track=True)
        runs[mode] = read_jsonl(tmp_path / f"{mode}.jsonl")
    assert runs["threaded"] == runs["sequential"]  # same ids, boxes and counts, frame by frame
    assert all("track_id" in d for f in runs["threaded"] for d in f["detections"])


def test_leaving_the_loop_early_ends_the_run_and_releases_the_source(detector, clip):
    shown = detector.score_threshold
    source = open_source(str(clip))
    run = iter_pipeline(detector, source, progress=False, track=True)
    for frame, _ in run:
        if frame.index == 9:
            break
    run.close()
    assert run.summary is not None and run.summary.frames == 10
    assert not source.cap.isOpened()
    assert detector.score_threshold == shown


def test_a_run_that_fails_to_start_restores_the_threshold_and_closes_the_source(detector, clip, tmp_path):
    """An output that cannot be opened fails the run before its first frame: the detector keeps its own
    threshold (it was left at the tracker's 0.1) and the source is closed (it was left open)."""
    shown = detector.score_threshold
    source = open_source(str(clip))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EdgeRuntimeError, match="cannot write"):
        run_pipeline(detector, source, json_path=blocker / "dets.jsonl", progress=False, track=True)
    assert detector.score_threshold == shown
    assert not source.cap.isOpened()


def test_cli_track_count_line_json_and_summary(demo_package, clip, tmp_path):
    out, summary = tmp_path / "tracks.jsonl", tmp_path / "summary.json"
    proc = run_cli("run", str(demo_package), "--source", str(clip), "--track", "--count-line", "mid=0,240,640,240",
                   "--json", str(out), "--summary-json", str(summary), "--backend", "onnx", "--show", "no")
    assert proc.returncode == 0, proc.stderr
    frames = read_jsonl(out)
    assert len(frames) == 60 and all("track_id" in d for f in frames for d in f["detections"])
    crossings = [e for f in frames for e in f["events"]]
    totals = frames[-1]["tracking"]["lines"]["mid"]
    for direction in ("in", "out"):  # the counts are the sum of the crossing events written frame by frame
        counted = {}
        for e in crossings:
            if e["direction"] == direction:
                counted[e["label"]] = counted.get(e["label"], 0) + 1
        assert totals[direction] == counted
    assert json.loads(summary.read_text())["tracking"] == frames[-1]["tracking"]
    assert "line" in proc.stdout and "in  out" in proc.stdout.replace("   ", "  ")


def test_cli_tracking_flag_errors_are_one_line(demo_package, clip, tmp_path):
    bad = tmp_path / "zones.json"
    bad.write_text('{"zones": [{"name": "a", "polygon": [[0, 0], [1, 1]]}]}')
    base = ("run", str(demo_package), "--source", str(clip))
    assert_one_line_error(run_cli(*base, "--zone", str(bad)), str(bad), "at least 3 points")
    assert_one_line_error(run_cli(*base, "--count-line", "0,240,640"), "--count-line 0,240,640", status=2)
    assert_one_line_error(run_cli(*base, "--track-low", "0.2"), "--track-low applies to tracking", status=2)
    assert_one_line_error(run_cli(*base, "--count-line", "a=0,1,2,3", "--count-line", "a=4,5,6,7"),
                          "'a' is used twice", status=2)


class LoopedClip(Source):
    """A long 'camera' from a short clip held in memory, at 15 FPS of scene time: no decoding cost."""

    stream = True
    nominal_fps = 15.0
    name = "looped"

    def __init__(self, frames: list, count: int) -> None:
        self.frames, self.count = frames, count

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.count):
            yield Frame(self.frames[i % len(self.frames)], i, f"looped#{i}", 0.0)


def test_memory_stays_flat_over_a_long_tracked_run(detector, clip):
    """1,500 tracked frames (the clip looped: objects jump back at each loop, so tracks keep ending and new
    ones starting): what the run holds after the first 500 frames does not grow with the next 1,000."""
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    tracking = Tracking(lines=[CountLine("mid", (0, 240), (640, 240))])
    tracemalloc.start()
    sizes = {}
    try:
        with iter_pipeline(detector, LoopedClip(frames, 1500), progress=False, track=tracking) as run:
            for frame, _ in run:
                if frame.index in (500, 1499):
                    sizes[frame.index] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert tracking.ids_issued > 60  # many tracks came and went
    assert len(tracking.tracker) < 20 and len(tracking.lines[0]._side) < 20
    # measured: +5 kB; keeping each ended track (ByteTrack's removed list: ~1 kB per track here) would add ~250 kB,
    # a record per frame ~1 MB
    assert sizes[1499] - sizes[500] < 50_000, sizes


@pytest.fixture(scope="module")
def tracking_clip_file(tmp_path_factory):
    """The scripted tracking clip (seed 0: 12 shapes with known ids, a pillar they pass behind, same-class
    paths crossing, 6 clean crossings of y = 240) as a video file, and its ground truth."""
    from converters.demo_data import TrackingTruth, write_tracking_clip

    path = write_tracking_clip(tmp_path_factory.mktemp("tracking") / "tracking.avi", seed=0, progress=False)
    return path, TrackingTruth.from_json(json.loads(path.with_suffix(".json").read_text()))


def truth_counts(truth) -> dict[str, dict[str, int]]:
    from converters.demo_data import CLASS_NAMES

    counts: dict[str, dict[str, int]] = {"in": {}, "out": {}}
    for _, _, class_id, direction in truth.crossings:
        name = CLASS_NAMES[class_id]
        counts[direction][name] = counts[direction].get(name, 0) + 1
    return {d: dict(sorted(c.items())) for d, c in counts.items()}


def test_tracking_clip_ids_and_line_counts_against_ground_truth(demo_package, tracking_clip_file, tmp_path):
    """The user's command on the clip: MOTA and IDF1 (py-motmetrics) above floors set under what was measured
    (seed 0, AMD EPYC Zen 4: IDF1 0.903, MOTA 0.870 on objects at least 70 % visible; 0.836 / 0.754 on every
    object at least 30 % visible, most of which the detector does not find), and the line counts exactly the
    ground truth's, per class and direction."""
    from mot import mot_scores

    clip, truth = tracking_clip_file
    out = tmp_path / "tracks.jsonl"
    proc = run_cli("run", str(demo_package), "--source", str(clip), "--track", "--count-line", "door=0,240,640,240",
                   "--json", str(out), "--backend", "onnx", "--show", "no")
    assert proc.returncode == 0, proc.stderr
    frames = read_jsonl(out)
    tracks = [[(d["track_id"], d["class_id"], d["box"]) for d in f["detections"]] for f in frames]
    assert frames[-1]["tracking"]["lines"]["door"] == truth_counts(truth)
    visible = mot_scores(truth.frames, tracks, truth_visibility=truth.visibility, min_visibility=0.7)
    assert visible["idf1"] >= 0.85 and visible["mota"] >= 0.80 and visible["num_switches"] <= 4, visible
    every = mot_scores(truth.frames, tracks)
    assert every["idf1"] >= 0.78 and every["mota"] >= 0.70, every
    assert every["num_hypothesis_ids"] <= 2 * every["num_unique_objects"], every  # 12 objects


class DroppingCamera(Source):
    """The clip as a live camera that drops frames while the pipeline is busy: frames 1, 2 or 3 camera frames
    apart in turn, each stamped with its capture time (what LatestFrameReader does)."""

    live = stream = True
    name = "dropping"

    def __init__(self, clip) -> None:
        self.clip = clip

    def __iter__(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.clip))
        index, want, kept = 0, 0, 0
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if index == want:
                yield Frame(image, index, f"dropping#{index}", index / 15.0)
                kept += 1
                want += (1, 2, 3)[kept % 3]
            index += 1
        cap.release()


def test_a_camera_dropping_frames_keeps_ids_and_counts(detector, tracking_clip_file):
    """Half the frames gone, unevenly: the tracker works in capture time, so ids and counts hold (measured:
    IDF1 0.904, MOTA 0.869 on objects at least 70 % visible, 16 ids for 12 objects)."""
    from mot import mot_scores

    clip, truth = tracking_clip_file
    seen: dict[int, list] = {}
    tracking = Tracking(lines=[CountLine("door", (0, 240), (640, 240))])
    # sequential: the pipeline itself drops no further frames, so the run is the same on every machine
    with iter_pipeline(detector, DroppingCamera(clip), progress=False, mode="sequential", track=tracking) as run:
        for frame, dets in run:
            seen[frame.index] = [(int(t), int(c), b.tolist()) for t, c, b in zip(dets.track_ids, dets.class_ids,
                                                                                   dets.boxes)]
    kept = sorted(seen)
    assert 90 < len(kept) < 130  # about one frame in two
    scores = mot_scores([truth.frames[i] for i in kept], [seen[i] for i in kept],
                        truth_visibility=[truth.visibility[i] for i in kept], min_visibility=0.7)
    assert scores["idf1"] >= 0.85 and scores["mota"] >= 0.80, scores
    assert tracking.snapshot()["lines"]["door"] == truth_counts(truth)


def test_count_crossings_demo_prints_the_ground_truth_crossings(demo_package, tracking_clip_file):
    """demos/count_crossings.py: the Python loop prints each crossing as its frame is done."""
    import re
    import subprocess
    import sys

    from test_cli import REPO

    clip, truth = tracking_clip_file
    proc = subprocess.run([sys.executable, str(REPO / "demos" / "count_crossings.py"), str(demo_package), str(clip),
                           "0,240,640,240"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    printed = re.findall(r"#(\d+): (\w+) #\d+ (in|out)$", proc.stdout, re.M)
    counted: dict[str, dict[str, int]] = {"in": {}, "out": {}}
    for _, label, direction in printed:
        counted[direction][label] = counted[direction].get(label, 0) + 1
    assert {d: dict(sorted(c.items())) for d, c in counted.items()} == truth_counts(truth)
    frames = [int(f) for f, _, _ in printed]
    truth_frames = sorted(f for f, *_ in truth.crossings)
    assert all(abs(a - b) <= 3 for a, b in zip(sorted(frames), truth_frames))  # as the objects cross, not later


def test_cli_without_the_assignment_library_fails_before_opening_the_model(demo_package, clip, monkeypatch, capsys):
    """--track without lap: the one-line error comes before the model is loaded (its description is the first
    thing run prints on stderr), as the other tracking flag errors do."""
    import sys

    from edge_runtime.cli import main

    monkeypatch.setitem(sys.modules, "lap", None)
    assert main(["run", str(demo_package), "--source", str(clip), "--track", "--backend", "onnx", "--show", "no"]) == 1
    assert capsys.readouterr().err.splitlines() == ["error: tracking needs the 'lap' package (linear assignment, "
                                                    "1.7 MB): pip install 'edge-runtime[track]'"]
