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
from edge_runtime.io.pipeline import run_pipeline
from edge_runtime.io.serve import BOUNDARY, FrameServer, host_allowed, parse_address
from edge_runtime.io.sources import open_source

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


# ---------------------------------------------------------------- hardening: Host header, token, viewer cap, timeouts

def _request(server: FrameServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``path`` with exactly these headers (Host included when given); (status, body) of a short reply."""
    import http.client

    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read() if path != "/stream.mjpg" or response.status != 200 else b""
        return response.status, body
    finally:
        conn.close()


def _open_stream(server: FrameServer) -> socket.socket:
    """A raw MJPEG viewer that has read the status line: the server counts it as a stream until it closes."""
    sock = socket.create_connection(server.httpd.server_address[:2], timeout=10)
    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert sock.recv(64).startswith(b"HTTP/1.0 200"), "the stream was not accepted"
    return sock


def test_host_header_must_name_this_server():
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends Host: evil.example, and is refused."""
    with FrameServer(("127.0.0.1", 0), allow_hosts=("pi.lan",)) as server:
        port = server.httpd.server_address[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", f"10.1.2.3:{port}", "pi.lan", "PI.LAN:80"):
            assert _request(server, "/stats.json", {"Host": host})[0] == 200, host
        for host in (f"evil.example:{port}", "127.0.0.1.evil.example", "pi.lan.evil.example"):
            status, body = _request(server, "/stats.json", {"Host": host})
            assert status == 403 and b"--allow-host" in body, host
        assert _request(server, "/", {"Host": "evil.example"})[0] == 403
        assert _request(server, "/stream.mjpg", {"Host": "evil.example"})[0] == 403


def test_host_rules_when_bound_to_every_interface_or_by_name():
    """The rule itself (no server on 0.0.0.0 in tests): IP literals always, names only when allowed or bound."""
    assert host_allowed("192.168.1.20:8080", "0.0.0.0") and host_allowed("[fe80::1]:8080", "::")
    assert not host_allowed("mypi.local:8080", "0.0.0.0")
    assert host_allowed("mypi.local:8080", "0.0.0.0", ("mypi.local",))
    assert host_allowed("mypi.local:8080", "mypi.local") and not host_allowed("evil.example", "mypi.local")
    assert not host_allowed(None, "127.0.0.1") and not host_allowed("", "127.0.0.1")


def test_token_is_required_when_set():
    with FrameServer(("127.0.0.1", 0), token="s3cret") as server:
        host = {"Host": "127.0.0.1"}
        assert _request(server, "/stats.json", host)[0] == 401
        assert _request(server, "/stats.json?token=wrong", host)[0] == 401
        assert _request(server, "/", host)[0] == 401
        assert _request(server, "/stream.mjpg", host)[0] == 401
        assert _request(server, "/stats.json", {**host, "Authorization": "Bearer wrong"})[0] == 401
        assert _request(server, "/stats.json?token=s3cret", host)[0] == 200
        assert _request(server, "/stats.json", {**host, "Authorization": "Bearer s3cret"})[0] == 200
        status, page = _request(server, "/?token=s3cret", host)
        # the page hands its own ?token= on to the stream and the statistics
        assert status == 200 and b'"/stream.mjpg" + location.search' in page and \
            b'"/stats.json" + location.search' in page
        server.publish(np.zeros((48, 64, 3), np.uint8), {"frames": 1})
        assert read_mjpeg_frame(server.url + "stream.mjpg?token=s3cret").shape == (48, 64, 3)


def test_concurrent_streams_are_capped():
    with FrameServer(("127.0.0.1", 0), max_streams=2) as server:
        viewers = [_open_stream(server), _open_stream(server)]
        status, body = _request(server, "/stream.mjpg", {"Host": "127.0.0.1"})
        assert status == 503 and b"too many viewers" in body
        assert _request(server, "/stats.json", {"Host": "127.0.0.1"})[0] == 200  # the rest still answers
        viewers.pop().close()
        deadline = time.monotonic() + 10  # the server notices the closed viewer at its next write or wait
        while time.monotonic() < deadline:
            server.publish(np.zeros((48, 64, 3), np.uint8), {})
            if _request(server, "/stream.mjpg", {"Host": "127.0.0.1"})[0] == 200:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("a closed viewer's slot was never freed")
        for sock in viewers:
            sock.close()


def test_idle_clients_time_out():
    with FrameServer(("127.0.0.1", 0), client_timeout=0.5) as server:
        with socket.create_connection(server.httpd.server_address[:2], timeout=10) as silent:
            started = time.monotonic()
            assert silent.recv(1024) == b""  # the server hung up on a client that never sent a request
            assert time.monotonic() - started < 5


def test_a_viewer_that_stops_reading_is_dropped():
    """A stalled viewer cannot hold a stream slot: the blocked write times out and frees it."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1080, 1920, 3), np.uint8)  # ~2 MB JPEGs fill the socket buffers quickly
    with FrameServer(("127.0.0.1", 0), max_streams=1, client_timeout=0.5) as server:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(server.httpd.server_address[:2])
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                server.publish(np.roll(noise, int(time.monotonic() * 1000) % 1920, axis=1), {})
                time.sleep(0.2)
                if _request(server, "/stream.mjpg", {"Host": "127.0.0.1"})[0] == 200:
                    break
            else:
                raise AssertionError("the stalled viewer still holds the only stream slot")
        finally:
            stalled.close()


def test_cli_serve_token_and_allow_host(demo_package, tmp_path):
    """run --serve with --token and --allow-host: a real run answers only with the token and known names."""
    from converters.demo_data import write_clip

    clip = write_clip(tmp_path / "shapes.avi", seconds=4, progress=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "run", str(demo_package), "--source", str(clip), "--serve",
         "127.0.0.1:0", "--token", "t0k", "--allow-host", "cam.lan", "--max-fps", "8"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        first = proc.stderr.readline()
        assert first.startswith("live view: http://127.0.0.1:") and "t0k" not in first, first
        base = first.split()[-1]
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(base + "stats.json", timeout=10)
        assert "fps" in wait_for_stats(base + "stats.json?token=t0k")
        request = urllib.request.Request(base + "stats.json?token=t0k", headers={"Host": "cam.lan"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        request = urllib.request.Request(base + "stats.json?token=t0k", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(request, timeout=10)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
