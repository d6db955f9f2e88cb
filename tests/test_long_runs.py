"""Runs that last (issue 15): bounded statistics, --json as JSON lines written as frames arrive,
Ctrl-C / SIGTERM ending a real CLI run normally, a lost camera retried with back-off and then a
one-line failure, and a bench worker that crashes. The camera is a real MJPEG stream on 127.0.0.1
(loopback_camera.py) showing the bundled demo clip; nothing here reads ../shared."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from loopback_camera import LoopbackCamera
from test_cli import REPO, assert_one_line_error, read_jsonl

from edge_runtime.bench import WorkerCrashedError, bench_artifact, bench_package, run_isolated
from edge_runtime.errors import SourceError
from edge_runtime.io.sources import LatestFrameReader, open_source
from edge_runtime.timing import RollingStats, StageTimes

CAMERA_FPS = 20  # slower than the demo model on one thread: every test frame is a real result


@pytest.fixture(scope="module")
def camera_jpegs() -> list[bytes]:
    """Three seconds of the demo clip as the JPEG frames a camera sends."""
    pytest.importorskip("torch", reason="the demo package and clip come from the host-side converters")
    from converters.demo_data import clip_frames

    return [cv2.imencode(".jpg", f)[1].tobytes() for f in clip_frames(seconds=3)]


@pytest.fixture
def camera(camera_jpegs):
    with LoopbackCamera(camera_jpegs, fps=CAMERA_FPS) as cam:
        yield cam


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until ``path`` holds ``count`` complete lines: the run writes them while it goes on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    raise AssertionError(f"{path}: fewer than {count} lines after {timeout} s")


def start_run(package: Path, source: str, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "run", str(package), "--source", source,
                             "--show", "no", "--threads", "1", "--backend", "onnx",
                             "--json", str(tmp_path / "dets.jsonl"), "--summary-json", str(tmp_path / "summary.json"),
                             *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_rolling_stats_are_exact_in_total_and_windowed_in_percentiles():
    values = np.random.default_rng(0).gamma(2.0, 5.0, 1000)
    stats = RollingStats(window=100)
    for v in values:
        stats.add(float(v))
    s = stats.summary()
    assert s["count"] == 1000 and s["window"] == 100
    assert s["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert (s["min"], s["max"]) == (values.min(), values.max())
    assert s["p50"] == s["median"] == pytest.approx(np.percentile(values[-100:], 50))
    assert s["p95"] == pytest.approx(np.percentile(values[-100:], 95))
    assert stats.recent(3).tolist() == values[-3:].tolist()
    assert stats.recent(5000).tolist() == values[-100:].tolist()
    empty = RollingStats().summary()
    assert empty["count"] == 0 and empty["p95"] == 0.0


def test_stage_times_memory_does_not_grow_with_the_run():
    times = StageTimes(window=1000)
    stages = ("read", "preprocess", "inference", "postprocess", "draw", "latency")

    def frames(n: int) -> None:
        for i in range(n):
            for stage in stages:
                times.add(stage, float(i % 97))

    frames(2000)  # every ring full
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    frames(50_000)  # what a list per stage would hold: 300,000 floats, about 10 MB
    grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename")
                if "timing.py" in d.traceback[0].filename)
    tracemalloc.stop()
    assert grown < 10_000, grown
    assert times.summary()["inference"]["count"] == 52_000


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_a_camera_run_normally_with_summary_and_json_lines(sig, demo_package, camera, tmp_path):
    proc = start_run(demo_package, camera.url, tmp_path)
    try:
        wait_for_lines(tmp_path / "dets.jsonl", 10, proc)  # lines exist while the run goes on
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and f"{sig.name}: stopped reading" in err
    assert "FPS end to end" in out and f"stopped: {sig.name} received" in out
    report = json.loads((tmp_path / "summary.json").read_text())
    frames = read_jsonl(tmp_path / "dets.jsonl")
    assert report["frames"] == len(frames) >= 10
    assert report["stopped"] == f"{sig.name} received" and report["source"] == camera.url
    assert report["stages_ms"]["inference"]["count"] == len(frames)
    assert [f["index"] for f in frames] == sorted({f["index"] for f in frames})  # newest frame wins: gaps, no repeats
    assert sum(len(f["detections"]) for f in frames) > 0  # the demo clip's shapes are found
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dets.jsonl", "summary.json"]  # no temp file left


def test_lost_camera_is_retried_then_a_one_line_failure_with_results_kept(demo_package, camera, tmp_path):
    proc = start_run(demo_package, camera.url, tmp_path, "--reconnect-tries", "3", "--reconnect-backoff", "0.1:0.2")
    try:
        wait_for_lines(tmp_path / "dets.jsonl", 5, proc)
        camera.stop()  # the camera loses power and stays off
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                          camera.url, "lost and not back after 3 reconnect attempts", status=2)
    assert [line for line in err.splitlines() if "reconnecting in" in line] == [
        f"WARNING: {camera.url}: no frame, reconnecting in {d} s (attempt {i}/3)"
        for i, d in ((1, "0.1"), (2, "0.2"), (3, "0.2"))]
    report = json.loads((tmp_path / "summary.json").read_text())  # a service still gets the results so far
    assert report["frames"] == len(read_jsonl(tmp_path / "dets.jsonl")) >= 5
    assert "FPS end to end" in out


def test_camera_that_comes_back_is_reconnected(camera, caplog):
    reader = LatestFrameReader(lambda: cv2.VideoCapture(camera.url), "cam", reconnect_tries=None, backoff=(0.2, 0.4))
    try:
        assert reader.read(timeout=30) is not None
        camera.stop()
        time.sleep(0.5)  # at least one reopen is refused
        camera.start()  # same port
        seen_after = 0
        deadline = time.monotonic() + 30
        while seen_after < 5 and time.monotonic() < deadline:
            if reader.read(timeout=30) is not None and reader.reconnects:
                seen_after += 1
    finally:
        reader.close()
    assert seen_after == 5 and reader.reconnects == 1 and not reader.lost
    assert any("cam: reconnected" in r.message for r in caplog.records)


def test_close_wakes_a_reader_waiting_in_its_back_off(camera):
    source = open_source(camera.url, reconnect_tries=None, reconnect_backoff=(60.0, 60.0))
    frames = iter(source)
    assert next(frames).image.ndim == 3
    camera.stop()
    threading.Timer(0.5, source.close).start()  # what a stop request does to a live source
    t0 = time.monotonic()
    list(frames)  # ends, without SourceLostError: closing is not losing
    assert time.monotonic() - t0 < 30  # woken, not left in the 60 s back-off
    assert not source.reader.lost and source.reader.end_reason is None


def test_run_pipeline_stop_finishes_the_frames_in_flight(demo_package, tmp_path):
    from converters.demo_data import write_clip
    from edge_runtime import Detector
    from edge_runtime.io.pipeline import run_pipeline

    clip = write_clip(tmp_path / "clip.avi", seconds=4, progress=False)
    detector = Detector(demo_package, backend="onnx", threads=1)
    for mode in ("threaded", "sequential"):
        stop = threading.Event()
        out = tmp_path / f"{mode}.jsonl"

        def on_result(canvas, stats, stop=stop):
            if stats["frames"] == 5:
                stop.set()

        summary = run_pipeline(detector, open_source(str(clip)), json_path=out, progress=False, mode=mode,
                               on_result=on_result, stop=stop)
        frames = read_jsonl(out)
        assert summary.stopped == "stop requested" and summary.frames == len(frames)
        # the reader stops at once; only the frames already read are finished. When frame 5 is written
        # (threaded), at most four more are in flight: a result in the hand-over slot, one in (or just out
        # of) inference, one prepared in its slot and one the reader has prepared and waits to hand over
        assert 5 <= len(frames) <= 9 and [f["index"] for f in frames] == list(range(len(frames)))


# --- bench: a worker that crashes ---------------------------------------------------------------------

def aborting_worker(package: str, fmt: str, precision: str, *rest):
    """``bench_artifact``, except that the FP32 artifact's worker aborts as a native runtime does."""
    if precision == "fp32":
        os.abort()
    return bench_artifact(package, fmt, precision, *rest)


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV, as a crashing native library


def raise_source_error() -> None:
    raise SourceError("cam.mp4: not readable")


def test_run_isolated_reports_crashes_and_passes_results_and_errors():
    assert run_isolated(pow, 2, 10) == 1024
    with pytest.raises(SourceError, match="cam.mp4: not readable"):
        run_isolated(raise_source_error)
    with pytest.raises(WorkerCrashedError, match="killed by SIGSEGV"):
        run_isolated(segfault)
    with pytest.raises(WorkerCrashedError, match="exited with status 3"):
        run_isolated(os._exit, 3)


def test_bench_goes_on_after_a_crashed_worker(demo_package, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(demo_package, package)
    manifest = json.loads((package / "manifest.json").read_text())
    # a second artifact entry (the same file as "fp16") so that one crashes and one is measured
    manifest["artifacts"].append({**manifest["artifacts"][0], "precision": "fp16"})
    (package / "manifest.json").write_text(json.dumps(manifest))
    lines: list[str] = []
    report = bench_package(package, threads=1, warmup=1, iters=3, worker=aborting_worker, progress=lines.append)
    (failed,) = report["failed"]
    assert failed["precision"] == "fp32" and "\n" not in failed["error"]
    assert failed["error"] == f"{package / 'model.onnx'} (onnx fp32): the worker process was killed by SIGABRT " \
                              "without a result"
    (row,) = report["results"]
    assert row["precision"] == "fp16" and row["latency_ms"]["median"] > 0
    assert row["cosine_vs_baseline"] == pytest.approx(1.0, abs=1e-6)  # the only row is its own baseline
    assert any("going on with the other artifacts" in line for line in lines)
    only_fp32 = {**manifest, "artifacts": manifest["artifacts"][:1]}
    (package / "manifest.json").write_text(json.dumps(only_fp32))
    with pytest.raises(WorkerCrashedError, match="killed by SIGABRT"):
        bench_package(package, threads=1, warmup=1, iters=3, worker=aborting_worker)


def test_summary_json_is_written_atomically(tmp_path):
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.io.pipeline import write_json_atomic

    path = tmp_path / "out" / "summary.json"
    write_json_atomic(path, {"frames": 3})
    assert json.loads(path.read_text()) == {"frames": 3}
    (tmp_path / "blocked").write_text("a file where a folder should be")
    with pytest.raises(EdgeRuntimeError, match="blocked/summary.json: cannot write"):
        write_json_atomic(tmp_path / "blocked" / "summary.json", {})
    assert os.listdir(tmp_path / "out") == ["summary.json"]



def test_camera_run_tracks_and_serves_zone_dwell_live(demo_package, camera, tmp_path):
    """`run --source <camera> --zone zones.json --serve` (issue 19): ids on a live source (frame times are
    capture times), occupancy and dwell in the web view's stats while the run goes on, in the JSON lines and in
    the summary after SIGTERM."""
    pytest.importorskip("lap", reason="the tracker's assignment library (pip install 'edge-runtime[track]')")
    from test_serve import get_json, wait_for_stats

    zones = tmp_path / "zones.json"
    zones.write_text(json.dumps({"zones": [{"name": "left", "polygon": [[0, 0], [320, 0], [320, 480], [0, 480]]}],
                                 "lines": [{"name": "mid", "points": [[0, 240], [640, 240]]}]}))
    proc = start_run(demo_package, camera.url, tmp_path, "--zone", str(zones), "--serve", "127.0.0.1:0")
    try:
        first = proc.stderr.readline()
        assert first.startswith("live view: http://127.0.0.1:"), first
        stats_url = first.split()[-1] + "stats.json"
        wait_for_stats(stats_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until a shape has entered the zone and been seen there a while
            live = get_json(stats_url)
            if live["tracking"]["zones"]["left"]["dwell_s"] and max(live["tracking"]["zones"]["left"]["dwell_s"]
                                                                   .values()) > 0.2:
                break
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.2)
        else:
            raise AssertionError(f"no dwell in the web view's stats: {live.get('tracking')}")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert all("track_id" in d for d in live["detections"]) and set(live["tracking"]) >= {"tracks", "ids", "zones"}
    frames = read_jsonl(tmp_path / "dets.jsonl")
    entered = [e for f in frames for e in f["events"] if e.get("zone") == "left" and e["event"] == "enter"]
    assert entered and all("track_id" in d for f in frames for d in f["detections"])
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["tracking"] == frames[-1]["tracking"] and "zone" in out and "inside now" in out
