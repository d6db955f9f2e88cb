"""A real MJPEG-over-HTTP camera on 127.0.0.1 for tests and bench/soak.py: the frames of a video,
JPEG-encoded once, streamed as multipart/x-mixed-replace at a fixed rate and looped (what an IP
camera or ``mjpg-streamer`` sends). ``stop()`` ends every open stream and closes the port, as a
camera that loses power does; ``start()`` on the same port brings it back."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2

BOUNDARY = "loopback-frame"


def encode_video(path: str | Path, max_frames: int = 300, quality: int = 80) -> list[bytes]:
    """The first ``max_frames`` frames of a video as JPEG bytes (encoded once: the camera's own CPU
    cost stays out of what a test or the soak measures)."""
    cap = cv2.VideoCapture(str(path))
    jpegs = []
    while len(jpegs) < max_frames:
        ok, image = cap.read()
        if not ok:
            break
        jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    cap.release()
    if not jpegs:
        raise ValueError(f"{path}: no frames read")
    return jpegs


class LoopbackCamera:
    """``http://127.0.0.1:<port>/stream.mjpg``: ``jpegs`` in a loop at ``fps`` to every client."""

    def __init__(self, jpegs: list[bytes], fps: float = 30.0, port: int = 0) -> None:
        self.jpegs, self.period = jpegs, 1.0 / fps
        self.port = port
        self.served = 0  # frames sent, all clients together
        self._stopped = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        self._stopped.clear()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, name="loopback-camera", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()  # streaming handlers return, their sockets close
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> LoopbackCamera:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                due = time.perf_counter()
                i = 0
                try:
                    while not camera._stopped.is_set():
                        jpeg = camera.jpegs[i % len(camera.jpegs)]
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                        camera.served += 1
                        i += 1
                        due += camera.period
                        # paced against the schedule, not the last send: the rate holds over hours
                        camera._stopped.wait(max(0.0, due - time.perf_counter()))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        return Handler
