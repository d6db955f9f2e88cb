"""Frame sources: image file, folder of images, video file, camera index, RTSP/HTTP stream,
Raspberry Pi camera (picamera2).

Live sources (camera, stream) read in their own thread and keep only the newest frame, so a slow
model never works on a backlog of stale frames. A live source that stops delivering is reopened with
an exponential back-off (by default for as long as it takes: a camera that reboots comes back); one
that is given up on raises ``SourceLostError``, so a service manager sees a failure and restarts the run.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import SourceError, SourceLostError, first_line
from ..urls import redact_url

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".h264"}
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
#: seconds before the first reconnect attempt, and the most between two (the wait doubles each time)
RECONNECT_BACKOFF = (0.5, 30.0)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HxWx3 uint8 BGR
    index: int
    name: str  # file name for images, "<source>#<index>" for video and live frames
    timestamp: float  # time.perf_counter() when the frame was captured / read


class Source(ABC):
    live: bool = False  # frames arrive in real time; the newest frame wins
    stream: bool = False  # a sequence of frames (video or live) rather than separate images
    name: str = "source"
    nominal_fps: float | None = None
    length: int | None = None  # frames, when known

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    @property
    def dropped(self) -> int:
        """Frames that arrived while the consumer was busy and were skipped (live sources only)."""
        return 0

    def close(self) -> None:
        """Release devices and threads."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_files(folder: Path) -> list[Path]:
    """The images of a folder, sorted by name; an error when it is not a folder or holds none."""
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise SourceError(f"{folder}: folder holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def read_image(path: Path) -> np.ndarray:
    """The image file ``path`` as an HxWx3 uint8 BGR array; a one-line SourceError when it cannot be read."""
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image")
    return image


def load_image(image: np.ndarray | str | Path) -> np.ndarray:
    """``image`` itself when it is an array, else the image file it names (``read_image``)."""
    return read_image(Path(image)) if isinstance(image, (str, Path)) else image


class ImageFiles(Source):
    """One image or every image in a folder (sorted by name)."""

    def __init__(self, paths: list[Path], name: str, strict: bool) -> None:
        self.paths, self.name, self.strict = paths, name, strict
        self.length = len(paths)

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            t = time.perf_counter()
            try:
                image = read_image(path)
            except SourceError:
                if self.strict:
                    raise
                log.warning("%s: not a readable image, skipped", path)
                continue
            yield Frame(image, i, path.name, t)


class VideoFile(Source):
    """Every frame of a video file, in order (nothing dropped: the output video keeps all frames)."""

    stream = True

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.name
        self.cap = cv2.VideoCapture(str(path))
        ok, first = self.cap.read() if self.cap.isOpened() else (False, None)
        if not ok:
            self.cap.release()
            raise SourceError(f"{path}: not a readable image or video")
        self._first = first
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.nominal_fps = fps if fps and fps > 0 else None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if count > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        index, image = 0, self._first
        while image is not None:
            yield Frame(image, index, f"{self.name}#{index}", time.perf_counter())
            ok, image = self.cap.read()
            index += 1
            if not ok:
                break

    def close(self) -> None:
        self.cap.release()


class LatestFrameReader:
    """Reads a capture in a background thread and keeps only the newest frame.

    ``open_capture`` returns an opened ``cv2.VideoCapture``-like object (``read``/``release``/
    ``isOpened``). When reads fail it reopens it, waiting ``backoff[0]`` seconds, then twice as long
    each time up to ``backoff[1]``; after ``reconnect_tries`` failed reopens in a row (None: never
    gives up) the source is ``lost``. A frame read resets the count: every outage gets all the tries.
    ``file_may_end``: a capture that knows its frame count (a video file behind a URL) and has read
    them all has ended, it is not lost.
    """

    def __init__(self, open_capture: Callable[[], cv2.VideoCapture], name: str,
                 reconnect_tries: int | None = None, backoff: tuple[float, float] = RECONNECT_BACKOFF,
                 file_may_end: bool = False) -> None:
        self.name = name
        self._open = open_capture
        self._tries, self._backoff = reconnect_tries, backoff
        self._file_may_end = file_may_end
        self._cond = threading.Condition()
        self._release_lock = threading.Lock()  # the capture is released once, by whichever thread ends first
        self._closing = threading.Event()  # wakes a back-off wait at once on close
        self._frame: np.ndarray | None = None
        self._stamp = 0.0
        self._seq = 0
        self._seq_consumed = 0
        self._stopped = False
        self.dropped = 0
        self.reconnects = 0
        self.lost = False  # gave up reconnecting (not set when closed)
        self.end_reason: str | None = None
        self._cap = open_capture()
        if self._cap is None or not self._cap.isOpened():
            raise SourceError(f"{name}: cannot be opened")
        self._thread = threading.Thread(target=self._loop, name=f"capture-{name}", daemon=True)
        self._thread.start()

    def _release(self) -> None:
        # the release happens under the lock, so a second closer returns only once the capture is released:
        # a caller that goes on to exit the interpreter must not leave another thread inside OpenCV
        with self._release_lock:
            cap, self._cap = self._cap, None
            if cap is not None:
                cap.release()

    def _ended_file(self) -> bool:
        """A capture with a known frame count that has read them all (a video file, not a camera)."""
        get = getattr(self._cap, "get", None)
        if not self._file_may_end or get is None:
            return False
        count, position = get(cv2.CAP_PROP_FRAME_COUNT), get(cv2.CAP_PROP_POS_FRAMES)
        return count > 0 and position >= count - 1

    def _reopen(self) -> bool:
        self._release()
        delay, attempt = self._backoff[0], 0
        of = f"/{self._tries}" if self._tries is not None else ""
        while self._tries is None or attempt < self._tries:
            attempt += 1
            log.warning("%s: no frame, reconnecting in %.1f s (attempt %d%s)", self.name, delay, attempt, of)
            if self._closing.wait(delay):
                return False
            try:
                cap = self._open()
            except Exception as exc:  # noqa: BLE001 (e.g. picamera2 raising while the camera is unplugged: keep trying)
                log.debug("%s: reopen failed: %s", self.name, first_line(exc))
                cap = None
            if cap is not None and cap.isOpened():
                with self._release_lock:
                    if self._closing.is_set():  # closed while opening: nobody else would release it
                        cap.release()
                        return False
                    self._cap = cap
                self.reconnects += 1
                log.warning("%s: reconnected", self.name)
                return True
            if cap is not None:
                cap.release()
            delay = min(2 * delay, self._backoff[1])
        return False

    def _loop(self) -> None:
        try:
            while not self._stopped:
                cap = self._cap
                if cap is None:
                    break
                ok, image = cap.read()
                if not ok or image is None:
                    if self._stopped or self._ended_file():  # closed, or a video file behind a URL ended
                        break
                    if self._reopen():
                        continue
                    if not self._closing.is_set():
                        self.lost = True
                        self.end_reason = f"{self.name}: lost and not back after {self._tries} reconnect attempts"
                    break
                with self._cond:
                    if self._frame is not None and self._seq_consumed < self._seq:
                        self.dropped += 1
                    self._frame, self._stamp = image, time.perf_counter()
                    self._seq += 1
                    self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - a dying capture thread must end the run, never hang it
            if not self._closing.is_set():
                self.lost = True
                self.end_reason = f"{self.name}: capture failed: {first_line(exc)}"
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def read(self, timeout: float | None = None) -> tuple[np.ndarray, float] | None:
        """Wait for a frame newer than the last one returned; None when the source has ended (or, with
        ``timeout``, no frame came in that many seconds). Without a timeout it waits as long as the
        capture thread keeps reconnecting: giving up is the reconnect policy's decision."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._seq == self._seq_consumed and not self._stopped:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.end_reason = f"{self.name}: no frame for {timeout:.0f} s"
                    return None
                self._cond.wait(remaining)
            if self._seq == self._seq_consumed:
                return None
            self._seq_consumed = self._seq
            return self._frame, self._stamp

    def close(self) -> None:
        self._closing.set()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        self._release()


class LiveSource(Source):
    """Camera index or network stream (or any capture-like opener) through ``LatestFrameReader``."""

    live = True
    stream = True

    def __init__(self, target: int | str, name: str, open_capture: Callable[[], cv2.VideoCapture] | None = None,
                 **reader_options: Any) -> None:
        self.name = name
        self.reader = LatestFrameReader(open_capture or (lambda: cv2.VideoCapture(target)), name, **reader_options)

    @property
    def dropped(self) -> int:
        return self.reader.dropped

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while (item := self.reader.read()) is not None:
            image, stamp = item
            yield Frame(image, index, f"{self.name}#{index}", stamp)
            index += 1
        if self.reader.lost:
            raise SourceLostError(self.reader.end_reason)

    def close(self) -> None:
        self.reader.close()


class PicameraCapture:
    """The Raspberry Pi camera through picamera2, shaped like ``cv2.VideoCapture`` for the reader."""

    def __init__(self, size: tuple[int, int] = (640, 480)) -> None:
        # Raspberry Pi OS only: imported when --source picam is asked for
        from picamera2 import Picamera2

        self.camera = Picamera2()
        # libcamera's "RGB888" is B, G, R in memory: the order OpenCV uses
        self.camera.configure(self.camera.create_video_configuration(main={"size": size, "format": "RGB888"}))
        self.camera.start()
        self._open = True

    def isOpened(self) -> bool:  # cv2.VideoCapture's name
        return self._open

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            return True, self.camera.capture_array("main")
        except RuntimeError:
            return False, None

    def release(self) -> None:
        if self._open:
            self._open = False
            self.camera.stop()
            self.camera.close()


def open_picamera(**reader_options: Any) -> LiveSource:
    """``--source picam``: the Pi camera module, or one clear line saying what to install."""
    try:
        import picamera2  # noqa: F401
    except ImportError:
        raise SourceError("picam: picamera2 is not installed (on Raspberry Pi OS: sudo apt install python3-picamera2, "
                          "and create the venv with --system-site-packages)") from None
    try:
        return LiveSource("picam", "picam", open_capture=PicameraCapture, **reader_options)
    except (RuntimeError, IndexError) as exc:  # picamera2 raises these when no camera is attached
        raise SourceError(f"picam: cannot be opened ({first_line(exc)})") from None


def open_source(spec: str, reconnect_tries: int | None = None,
                reconnect_backoff: tuple[float, float] = RECONNECT_BACKOFF) -> Source:
    """Open what a user typed after ``--source``: a path, a folder, a camera index, a URL or picam.
    Live sources reconnect as ``LatestFrameReader`` describes (``reconnect_tries`` None: no limit)."""
    live = {"reconnect_tries": reconnect_tries, "backoff": reconnect_backoff}
    if spec == "picam":
        return open_picamera(**live)
    if spec.isdigit():
        try:
            return LiveSource(int(spec), f"camera {spec}", **live)
        except SourceError:
            raise SourceError(f"camera {spec}: cannot be opened (no such device, or it is busy)") from None
    if spec.lower().startswith(STREAM_SCHEMES):
        return LiveSource(spec, redact_url(spec), file_may_end=True, **live)  # the name shows in logs, stats and JSON: no password
    path = Path(spec)
    if path.is_dir():
        return ImageFiles(image_files(path), path.name, strict=False)
    if not path.exists():
        raise SourceError(f"{path}: no such file, folder or camera")
    if path.suffix.lower() in IMAGE_EXTS:
        if not cv2.haveImageReader(str(path)):  # fail now, with the file's name, not mid-run
            raise SourceError(f"{path}: not a readable image")
        return ImageFiles([path], path.name, strict=True)
    return VideoFile(path)
