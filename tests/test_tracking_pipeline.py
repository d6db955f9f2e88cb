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
    source = open_source(str(clip))
    run = iter_pipeline(detector, source, progress=False, track=True)
    for frame, _ in run:
        if frame.index == 9:
            break
    run.close()
    assert run.summary is not None and run.summary.frames == 10
    assert not source.cap.isOpened()
    assert detector.score_threshold != 0.1


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
