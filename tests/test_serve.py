"""The live web view on loopback: a real run publishes real frames; MJPEG, stats, page, busy port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from test_cli import REPO, assert_one_line_error, run_cli

from edge_runtime import Detector
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.pipeline import run_pipeline
from edge_runtime.serve import BOUNDARY, FrameServer, parse_address
from edge_runtime.sources import open_source

VIDEO = "video/vtest.avi"


def read_mjpeg_frame(url: str, timeout: float = 30.0) -> np.ndarray:
    """The first JPEG part of a multipart/x-mixed-replace stream, decoded."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        assert response.readline() == f"--{BOUNDARY}\r\n".encode()
        headers = {}
        while (line := response.readline()) != b"\r\n":
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        jpeg = response.read(int(headers["content-length"]))
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"  # a whole JPEG, start and end markers
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for_stats(url: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = get_json(url)
        if stats.get("frames"):
            return stats
        time.sleep(0.05)
    raise AssertionError("no frame was published")


def test_parse_address_binds_loopback_unless_told_otherwise():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address(":8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    for bad in ("http", "127.0.0.1:", "70000"):
        with pytest.raises(EdgeRuntimeError, match="expected PORT or HOST:PORT"):
            parse_address(bad)


def test_server_streams_jpeg_and_stats_during_a_run(yolo_fastestv2_package, fixtures):
    detector = Detector(yolo_fastestv2_package, backend="onnx")
    server = FrameServer(("127.0.0.1", 0))
    base = server.url
    result = {}
    run = threading.Thread(target=lambda: result.setdefault("summary", run_pipeline(
        detector, open_source(str(fixtures(VIDEO))), max_frames=60, max_fps=20, progress=False,
        on_result=server.publish)))
    try:
        run.start()
        stats = wait_for_stats(base + "stats.json")
        assert stats["model"] == "yolo-fastestv2" and stats["source"] == "vtest.avi"
        assert stats["fps"] > 0 and stats["latency_ms"] > 0 and stats["stages_ms"]["inference"] > 0
        assert {"box", "score", "label"} <= set(stats["detections"][0])
        assert sum(stats["class_counts"].values()) == len(stats["detections"])  # counts of the latest frame
        assert stats["class_totals"]["person"] >= stats["class_counts"].get("person", 0)
        frame = read_mjpeg_frame(base + "stream.mjpg")
        assert frame.shape == (576, 768, 3)
        assert run.is_alive()  # all of this happened while the run was in progress
        with urllib.request.urlopen(base, timeout=10) as page:
            html = page.read().decode()
        assert "/stream.mjpg" in html and "/stats.json" in html
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "nope", timeout=10)
    finally:
        run.join()
        server.close()
    assert result["summary"].frames == 60
    with pytest.raises(OSError):  # closed: nothing listens there any more
        socket.create_connection(server.httpd.server_address[:2], timeout=2).close()


def test_busy_port_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EdgeRuntimeError, match=f"--serve 127.0.0.1:{port}: address already in use"):
            FrameServer(("127.0.0.1", port))
        assert_one_line_error(run_cli("run", "no-such-package", "--source", "0", "--serve", str(port)),
                              f"127.0.0.1:{port}", "address already in use")


def test_cli_run_serve_end_to_end(yolo_fastestv2_package, fixtures, tmp_path):
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "run", str(yolo_fastestv2_package), "--source",
         str(fixtures(VIDEO)), "--serve", "127.0.0.1:0", "--max-fps", "15", "--max-frames", "60",
         "--summary-json", str(summary)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        first = proc.stderr.readline()
        assert first.startswith("live view: http://127.0.0.1:"), first
        base = first.split()[-1]
        stats = wait_for_stats(base + "stats.json")
        assert stats["frames"] < 60  # answered mid-run
        assert read_mjpeg_frame(base + "stream.mjpg").shape == (576, 768, 3)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "FPS end to end (threaded)" in out and "glass-to-result latency: p50" in out
    report = json.loads(summary.read_text())
    assert report["frames"] == 60 and report["fps"] <= 15 * 1.1
    assert report["latency_ms"]["p95"] >= report["latency_ms"]["p50"] > 0
    with pytest.raises(OSError):  # the server stopped with the run
        urllib.request.urlopen(base + "stats.json", timeout=2)
