"""Live web view for a headless device: the annotated stream as MJPEG plus live statistics.

Standard library only (``http.server``). Routes: ``/`` (a page showing both), ``/stream.mjpg``
(multipart/x-mixed-replace JPEG frames: always the newest frame, never a backlog) and
``/stats.json``. Binds to 127.0.0.1 unless another address is given explicitly.

Hardening, because a browser on the same machine or network can reach it:

- Host header: IP literals, ``localhost`` names and the bound host name are accepted, plus the names given
  with ``--allow-host``; any other name is refused (403). A DNS-rebinding page reaches the server under its
  own domain name, so it is refused even though the browser connects to 127.0.0.1.
- ``--token``: when set, every request needs ``?token=...`` or ``Authorization: Bearer ...`` (else 401); the
  page passes its own ``?token=`` on to the stream and the statistics.
- At most ``max_streams`` MJPEG viewers at once (503 beyond), and each connection has a socket timeout, so
  idle or stalled clients cannot hold threads and sockets forever.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ..errors import EdgeRuntimeError
from .thermal import thermal_state

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
BOUNDARY = "edge-runtime-frame"
JPEG_QUALITY = 80
MAX_STREAMS = 4  # concurrent MJPEG viewers; each one holds a thread and a socket
CLIENT_TIMEOUT_S = 30.0  # a client silent (or not reading) this long is dropped
_LOCAL_NAMES = ("localhost", "localhost.localdomain")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-runtime</title>
<style>body{font-family:sans-serif;margin:1em;background:#111;color:#eee}img{max-width:100%}
pre{font-size:14px}</style></head>
<body><img id="stream" alt="live stream"><pre id="stats">waiting for the first frame...</pre>
<script>
// the page's own ?token=... goes on to the stream and the statistics
document.getElementById("stream").src = "/stream.mjpg" + location.search;
async function poll() {
  try {
    const s = await (await fetch("/stats.json" + location.search, {cache: "no-store"})).json();
    const stages = Object.entries(s.stages_ms || {}).map(([k, v]) => k + " " + v.toFixed(1) + " ms").join(", ");
    const dets = (s.detections || []).map(d => d.label + (d.track_id !== undefined ? " #" + d.track_id : "") +
      " " + d.score.toFixed(2)).join(", ");
    const totals = s.class_totals || {};
    const classes = Object.keys(totals).sort().map(k => k + " " + ((s.class_counts || {})[k] || 0) +
      " (run " + totals[k] + ")").join(", ");
    const tr = s.tracking;
    const byClass = c => Object.entries(c || {}).map(([k, v]) => k + " " + v).join(", ") || "0";
    const counts = !tr ? "" : "tracking: " + tr.tracks + " tracked now, " + tr.ids + " ids\\n" +
      Object.entries(tr.lines || {}).map(([n, c]) => "line " + n + ": in " + byClass(c.in) + " | out " +
        byClass(c.out) + "\\n").join("") +
      Object.entries(tr.zones || {}).map(([n, z]) => "zone " + n + ": inside " + byClass(z.occupancy) +
        " | visits " + byClass(z.visits) + " | dwell now " + Object.entries(z.dwell_s || {}).map(
          ([id, d]) => "#" + id + " " + d.toFixed(1) + " s").join(", ") + "\\n").join("");
    document.getElementById("stats").textContent = (s.model || "") + " on " + (s.source || "") + "\\n" +
      (s.fps || 0).toFixed(1) + " FPS, latency " + (s.latency_ms || 0).toFixed(1) + " ms, dropped " +
      (s.dropped_frames || 0) + (s.cpu_temp_c !== undefined ? ", CPU " + s.cpu_temp_c + " C" : "") + "\\n" +
      stages + "\\n" + counts + "per class: " + classes + "\\n" + dets;
  } catch (e) { document.getElementById("stats").textContent = "run ended"; }
}
setInterval(poll, 1000); poll();
</script></body></html>
"""


def parse_address(spec: str) -> tuple[str, int]:
    """``--serve`` value -> (host, port): ``8080`` means 127.0.0.1:8080; any other interface
    (``0.0.0.0:8080``) has to be named explicitly."""
    host, _, port = spec.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise EdgeRuntimeError(f"--serve {spec}: expected PORT or HOST:PORT (e.g. 8080 or 0.0.0.0:8080)")
    return host, int(port)


def host_allowed(header: str | None, bound: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a request's Host header names this server: an IP literal, a localhost name, the bound host
    or one of ``allowed`` (``--allow-host``). Names are what DNS rebinding forges, literals it cannot."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return host in _LOCAL_NAMES or host.endswith(".localhost") or host == bound.lower() or \
        host in {a.lower().rstrip(".") for a in allowed}


class FrameServer:
    """Holds the newest annotated frame and statistics; serves them over HTTP in its own threads.

    >>> with FrameServer(("127.0.0.1", 8080), token="s3cret") as server:
    ...     run_pipeline(detector, source, on_result=server.publish)

    ``allow_hosts``: extra Host names to accept (a device's DNS name when bound to 0.0.0.0); ``token``:
    required on every request when set; ``max_streams``: concurrent MJPEG viewers; ``client_timeout``:
    seconds a connection may stay silent or stop reading.
    """

    def __init__(self, address: tuple[str, int] = (DEFAULT_HOST, 8080), allow_hosts: tuple[str, ...] = (),
                 token: str | None = None, max_streams: int = MAX_STREAMS,
                 client_timeout: float = CLIENT_TIMEOUT_S) -> None:
        self.allow_hosts, self.token, self.client_timeout = tuple(allow_hosts), token or None, client_timeout
        self._streams = threading.BoundedSemaphore(max_streams)
        self._bound_host = address[0]  # as given: the server keeps only the resolved IP of a host name
        if address[0] in ("0.0.0.0", "::", "") and not self.token:
            log.warning("web view on every interface without --token: anyone on the network can watch")
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._stats: dict[str, Any] = {}
        self._closed = False
        try:
            self.httpd = ThreadingHTTPServer(address, self._handler_class())
        except OSError as exc:
            what = "address already in use (another program listens there; pick another port)" \
                if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise EdgeRuntimeError(f"--serve {address[0]}:{address[1]}: {what}") from None
        self.httpd.daemon_threads = True  # a viewer left open must not keep the process alive
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web-view", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def publish(self, frame: np.ndarray, stats: dict[str, Any]) -> None:
        """The pipeline's ``on_result``: keep the newest frame (encoded only when a viewer asks)."""
        with self._cond:
            self._frame, self._stats = frame, stats
            self._seq += 1
            self._cond.notify_all()

    def next_jpeg(self, after: int, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """The newest frame newer than sequence number ``after`` as JPEG; None on timeout or close.
        Each frame is encoded once, whatever the number of viewers."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after or self._closed, timeout) or self._closed:
                return None
            seq, frame = self._seq, self._frame
            if self._jpeg[0] == seq:
                return self._jpeg
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return None
        with self._cond:
            if seq >= self._jpeg[0]:
                self._jpeg = (seq, buf.tobytes())
        return seq, buf.tobytes()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            stats = dict(self._stats)
        return {**stats, **thermal_state()}

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop serving: open streams end, the listening socket closes."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = server.client_timeout  # StreamRequestHandler sets it on the socket: reads and writes

            def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
                log.debug("web view: " + format, *args)

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _refuse(self, status: HTTPStatus, why: str, headers: dict[str, str] | None = None) -> None:
                body = f"{why}\n".encode()
                self.send_response(status)
                for key, value in {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                                   "Connection": "close", **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def _authorised(self, query: str) -> bool:
                given = parse_qs(query).get("token", [""])[0]
                scheme, _, bearer = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() == "bearer":
                    given = given or bearer.strip()
                return hmac.compare_digest(given.encode(), server.token.encode())

            def do_GET(self) -> None:  # http.server's name
                parts = urlsplit(self.path)
                path = parts.path
                if not host_allowed(self.headers.get("Host"), server._bound_host, server.allow_hosts):
                    self._refuse(HTTPStatus.FORBIDDEN, "unknown Host header (DNS rebinding?); "
                                                       "start the run with --allow-host NAME to accept it")
                elif server.token and not self._authorised(parts.query):
                    self._refuse(HTTPStatus.UNAUTHORIZED, "token required (?token=... or Authorization: Bearer)",
                                 {"WWW-Authenticate": "Bearer"})
                elif path == "/":
                    self._send(PAGE.encode(), "text/html; charset=utf-8")
                elif path == "/stats.json":
                    self._send(json.dumps(server.stats()).encode(), "application/json")
                elif path == "/stream.mjpg":
                    if not server._streams.acquire(blocking=False):
                        self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "too many viewers, try again later",
                                     {"Retry-After": "5"})
                        return
                    try:
                        self._stream()
                    finally:
                        server._streams.release()
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

            def _stream(self) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seq = 0
                try:
                    while not server.closed:
                        item = server.next_jpeg(seq)
                        if item is None:
                            continue
                        seq, jpeg = item
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):  # closed the page, or stopped reading
                    self.close_connection = True

        return Handler
