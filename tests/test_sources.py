"""Sources on real files: latest-frame reading, a capture that disappears, an HTTP stream on loopback."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import SourceError
from edge_runtime.io.sources import LatestFrameReader, LiveSource, open_source


def write_clip(path: Path, frames: int = 30, size: tuple[int, int] = (160, 120)) -> Path:
    """A real MJPG video whose frame i shows the number i as its mean brightness (i * 8)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 8, np.uint8))
    writer.release()
    return path


def frame_number(image: np.ndarray) -> int:
    return int(round(image.mean() / 8))


def test_latest_frame_wins_when_the_consumer_is_slow(tmp_path):
    clip = write_clip(tmp_path / "clip.avi", frames=30)
    reader = LatestFrameReader(lambda: cv2.VideoCapture(str(clip)), "clip", reconnect_tries=0)
    seen = []
    try:
        while (item := reader.read(timeout=5)) is not None:
            seen.append(frame_number(item[0]))
            time.sleep(0.03)  # a model slower than the capture
    finally:
        reader.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # never an old frame again
    assert len(seen) < 30 and reader.dropped > 0  # stale frames were skipped, not queued
    assert reader.end_reason and "lost" in reader.end_reason


def test_capture_that_disappears_ends_cleanly(tmp_path):
    clip = write_clip(tmp_path / "cam.avi", frames=20)
    reader = LatestFrameReader(lambda: cv2.VideoCapture(str(clip)), "camera 9", reconnect_tries=2,
                               backoff=(0.05, 0.05))
    clip.unlink()  # the device is gone: every reconnect fails
    count = 0
    while reader.read(timeout=5) is not None:
        count += 1
    reader.close()
    assert 1 <= count <= 20
    assert reader.reconnects == 0
    assert reader.end_reason == "camera 9: lost and not back after 2 reconnect attempts"


def test_capture_that_comes_back_is_reconnected(tmp_path):
    clip = write_clip(tmp_path / "cam.avi", frames=10)
    reader = LatestFrameReader(lambda: cv2.VideoCapture(str(clip)), "camera 9", reconnect_tries=3,
                               backoff=(0.01, 0.01))
    frames = []
    try:
        while len(frames) < 15 and (item := reader.read(timeout=5)) is not None:
            frames.append(frame_number(item[0]))
            time.sleep(0.002)
    finally:
        reader.close()
    assert len(frames) == 15  # more frames than the clip holds: the reopened capture went on
    assert reader.reconnects >= 1


@pytest.fixture
def http_server(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_stream_source(tmp_path, http_server):
    write_clip(tmp_path / "stream.avi", frames=12)
    source = open_source(f"{http_server}/stream.avi")
    assert isinstance(source, LiveSource) and source.live
    with source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 3:
                break
    assert [f.image.shape for f in frames] == [(120, 160, 3)] * 3
    assert frames[0].timestamp <= frames[1].timestamp <= frames[2].timestamp


def test_open_source_kinds_and_errors(tmp_path):
    clip = write_clip(tmp_path / "v.avi", frames=5)
    video = open_source(str(clip))
    assert video.stream and not video.live and video.length == 5
    assert [frame_number(f.image) for f in video] == [0, 1, 2, 3, 4]
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 10)
    folder = open_source(str(tmp_path))
    assert [f.name for f in folder] == ["a.png"]  # the broken file is skipped with a warning
    with pytest.raises(SourceError, match="broken.jpg: not a readable image"):
        list(open_source(str(tmp_path / "broken.jpg")))
    with pytest.raises(SourceError, match="camera 5: cannot be opened"):
        open_source("5")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(empty))


class _FailingCapture:
    """A capture whose driver raises on its fourth read (a camera unplugged mid-read, say)."""

    def __init__(self) -> None:
        self.reads = 0

    def isOpened(self) -> bool:  # cv2.VideoCapture's name
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        self.reads += 1
        if self.reads > 3:
            raise RuntimeError("driver fault")
        return True, np.zeros((8, 8, 3), np.uint8)

    def release(self) -> None:
        pass


def test_a_capture_that_raises_ends_the_source_with_one_line_instead_of_hanging():
    from edge_runtime.errors import SourceLostError

    source = LiveSource("cam", "camera 7", open_capture=_FailingCapture, reconnect_tries=None)
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            list(source)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=10)
    source.close()
    assert not worker.is_alive(), "the source hung after its capture thread died"
    assert len(outcome) == 1 and isinstance(outcome[0], SourceLostError), outcome
    assert str(outcome[0]) == "camera 7: capture failed: driver fault"


def test_a_video_file_behind_a_url_ends_instead_of_reconnecting(tmp_path):
    """A capture that knows its frame count and has read them all has ended (file_may_end, as
    open_source sets it for URLs); a camera with the same reads would be reopened forever."""
    clip = write_clip(tmp_path / "clip.avi", frames=12)
    reader = LatestFrameReader(lambda: cv2.VideoCapture(str(clip)), "http://host/clip.avi", reconnect_tries=None,
                               backoff=(0.05, 0.05), file_may_end=True)
    count = 0
    while reader.read(timeout=5) is not None:
        count += 1
    reader.close()
    assert count >= 1 and reader.reconnects == 0 and not reader.lost and reader.end_reason is None
