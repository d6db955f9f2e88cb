"""Source -> Detector -> [tracker, counters] -> sinks (annotated images/video, JSON, window, web view), with
per-stage timing.

Two schedules over the same per-frame stages (``_Stages``): ``sequential`` runs them one after the
other; ``threaded`` (the default) overlaps them in three threads joined by one-slot queues:

    reader: [rate limit] read + preprocess -> [1] -> inference: infer -> [1] -> main: decode, track, draw, write, show

so the next frame is read and preprocessed while the current one is inferred, and the previous one is
decoded, tracked, drawn and written: the inference thread does nothing but run the model, so with a core
left for the other two threads the model alone sets the frame rate (decoding in the inference thread cost
5-8 % of the frame rate of a fast model). The one-slot queues bound what is in flight (three input buffers,
two results), so a live source's glass-to-result latency stays bounded: live sources drop stale frames in
their capture thread. Drawing stays in the calling thread because OpenCV windows must be driven from it.
``iter_pipeline`` hands each result to the caller's loop as it is done; ``run_pipeline`` runs to the end.
"""

from __future__ import annotations

import inspect
import json
import logging
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from ..detections import Detections
from ..detector import Detector
from ..errors import EdgeRuntimeError, SourceLostError
from ..fsutil import atomic_write_text
from ..preprocess import ImageMeta
from ..timing import RollingStats, StageTimes, format_table
from ..tracking import Tracking
from .draw import draw_detections, draw_fps, draw_regions
from .sources import Frame, Source
from .thermal import describe as describe_thermal
from .thermal import thermal_state

log = logging.getLogger(__name__)
WINDOW = "edge-runtime"
MODES = ("threaded", "sequential")
#: ``on_result(annotated_frame, live_stats)``: called for every drawn frame (the web view uses it)
ResultCallback = Callable[[np.ndarray, dict[str, Any]], None]


def display_available() -> bool:
    """True when OpenCV can open a window here (a GUI build and a display)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        cv2.destroyWindow(WINDOW)
        return True
    except cv2.error:
        return False


@dataclass
class RunSummary:
    frames: int
    wall_s: float
    stages: dict[str, dict[str, float]]
    detections: int
    outputs: dict[str, str] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)  # glass-to-result ms: capture -> drawn result
    dropped: int = 0  # stale live frames skipped while the pipeline was busy
    thermal: dict[str, Any] = field(default_factory=dict)  # cpu_temp_c / throttled, where the host reports them
    mode: str = "sequential"
    stopped: str = ""  # why the run ended early: "stop requested" (the CLI names the signal)
    run: dict[str, str] = field(default_factory=dict)  # package, artifact, source
    tracking: dict[str, Any] = field(default_factory=dict)  # Tracking.snapshot() at the end, when tracking
    tracking_table: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def table(self) -> str:
        rows = [[stage, s["mean"], s["p50"], s["p95"]] for stage, s in self.stages.items()]
        total = sum(s["mean"] for s in self.stages.values())
        rows.append(["total", total, float("nan"), float("nan")])
        text = format_table(["stage", "mean ms", "p50 ms", "p95 ms"], rows).replace("nan", "   ")
        line = f"{self.frames} frames in {self.wall_s:.2f} s: {self.fps:.1f} FPS end to end ({self.mode})"
        extras = [f"{self.dropped} stale frames dropped"] if self.dropped else []
        extras += [f"stopped: {self.stopped}"] if self.stopped else []
        extras += [describe_thermal(self.thermal)] if self.thermal else []
        lines = [text, "; ".join([line, *extras])]
        if self.latency.get("count"):
            lines.append(f"glass-to-result latency: p50 {self.latency['p50']:.1f} ms, p95 {self.latency['p95']:.1f} ms")
        if self.tracking_table:
            lines.append(self.tracking_table)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**self.run, "frames": self.frames, "wall_s": self.wall_s, "fps": self.fps, "mode": self.mode,
                "detections": self.detections, "dropped_frames": self.dropped, "stages_ms": self.stages,
                "latency_ms": self.latency, **self.thermal, "stopped": self.stopped, "outputs": self.outputs,
                **({"tracking": self.tracking} if self.tracking else {})}


def write_json_atomic(path: str | Path, data: Any, **dumps: Any) -> None:
    """``data`` as JSON at ``path``, all or nothing (``fsutil.atomic_write_text``: a run killed mid-write
    leaves the previous file or none, never half a file); a failure is one line. ``dumps``: json.dumps
    options (indent 2 unless given)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, **{"indent": 2, **dumps}))
    except EdgeRuntimeError:
        raise
    except OSError as exc:
        raise EdgeRuntimeError(f"{path}: cannot write ({exc.strerror or exc})") from None


class JsonLines:
    """``--json``: one JSON object per frame and line, flushed as frames arrive, so memory stays flat
    and a run that is killed keeps every complete line it wrote."""

    def __init__(self, path: str | Path | TextIO) -> None:
        self._owned = not hasattr(path, "write")  # a stream (the CLI's stdout for '--json -') stays open
        self.path: Path | None = None
        if not self._owned:
            self._file = path
            return
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise EdgeRuntimeError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._owned:
            self._file.close()


class _VideoSink:
    """Annotated video next to the other outputs; mp4v first, MJPG/avi where mp4v is unavailable."""

    def __init__(self, stem: Path, fps: float) -> None:
        self.stem, self.fps = stem, fps
        self.writer: cv2.VideoWriter | None = None
        self.path: Path | None = None

    def write(self, image) -> None:
        if self.writer is None:
            h, w = image.shape[:2]
            for suffix, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
                path = self.stem.with_suffix(suffix)
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
                if writer.isOpened():
                    self.writer, self.path = writer, path
                    break
            else:
                raise OSError(f"{self.stem}: OpenCV cannot write video here")
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class _Pacer:
    """``max_fps``: spaces out reads; a pipeline that falls behind does not burst to catch up."""

    def __init__(self, max_fps: float | None) -> None:
        self.period = 1.0 / max_fps if max_fps else 0.0
        self.next = 0.0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.perf_counter()
        if now < self.next:
            time.sleep(self.next - now)
            now = self.next
        self.next = now + self.period


@dataclass
class _Job:
    frame: Frame
    tensor: np.ndarray
    meta: ImageMeta


@dataclass
class _Result:
    frame: Frame
    dets: Detections
    events: list[dict[str, Any]]  # line crossings and zone entries / exits of this frame (tracking only)


class _Stages:
    """The per-frame work, shared by both schedules. ``read``/``prepare`` run in the reader thread,
    ``infer`` in the inference thread, ``decode``/``finish`` in the caller's thread (sequentially: all in one)."""

    def __init__(self, detector: Detector, source: Source, save_dir: Path | None,
                 json_path: str | Path | TextIO | None, show: bool, progress: bool, max_fps: float | None,
                 on_result: ResultCallback | None, tracking: Tracking | None = None) -> None:
        self.detector, self.source, self.tracking = detector, source, tracking
        self.save_dir, self.show, self.progress = save_dir, show, progress
        self.on_result = on_result
        self.pacer = _Pacer(max_fps)
        self.times = StageTimes()
        self.latency = RollingStats()
        self.jsonl = JsonLines(json_path) if json_path else None
        self.video = _VideoSink(save_dir / f"{Path(source.name).stem}_det", source.nominal_fps or 30.0) \
            if save_dir and source.stream else None
        self.frames = self.total_dets = 0
        self.class_totals: Counter[str] = Counter()  # detections per class over the whole run
        self.skipped = 0  # live frames preprocessed but replaced by a newer one before inference
        self.fps_ema = self.interval_ema = 0.0
        self.last = time.perf_counter()

    def _timed(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        self.times.add(stage, (now - t0) * 1e3)
        return now

    def read(self, frames: Iterator[Frame]) -> Frame | None:
        self.pacer.wait()
        t0 = time.perf_counter()
        frame = next(frames, None)
        if frame is not None:
            self._timed("read", t0)
        return frame

    def prepare(self, frame: Frame, out: np.ndarray | None) -> _Job:
        t0 = time.perf_counter()
        tensor, meta = self.detector.preprocess(frame.image, out)
        self._timed("preprocess", t0)
        return _Job(frame, tensor, meta)

    def infer(self, job: _Job) -> tuple[_Job, dict[str, np.ndarray]]:
        t0 = time.perf_counter()
        outputs = self.detector.infer(job.tensor)  # fresh arrays: the next inference does not overwrite them
        self._timed("inference", t0)
        return job, outputs

    def frame_time(self, frame: Frame) -> float:
        """Seconds at which ``frame`` was taken: its capture time on a live source, else its place in the
        file (``index / fps``), so tracking sees the scene's time however fast the file is processed."""
        if self.source.live:
            return frame.timestamp
        return frame.index / (self.source.nominal_fps or 30.0)

    def decode(self, job: _Job, outputs: dict[str, np.ndarray]) -> _Result:
        t0 = time.perf_counter()
        dets = self.detector.decode(outputs, job.meta)
        t0 = self._timed("postprocess", t0)
        events: list[dict[str, Any]] = []
        if self.tracking is not None:
            dets, events = self.tracking.update(dets, self.frame_time(job.frame))
            self._timed("track", t0)
        return _Result(job.frame, dets, events)

    def finish(self, result: _Result) -> bool:
        """Draw, show, publish and write one result; False when the user asked to quit (q / Esc)."""
        frame, dets = result.frame, result.dets
        self.total_dets += len(dets)
        self.class_totals.update(dets.labels)
        # the counts so far, for the sinks that show them (built per frame only when one is there)
        wants_counts = self.tracking is not None and (self.jsonl is not None or self.on_result is not None)
        counts = self.tracking.snapshot() if wants_counts else None
        if self.jsonl is not None:
            record = {"index": frame.index, "name": frame.name, **dets.to_json()}
            if counts is not None:
                record.update(events=result.events, tracking=counts)
            self.jsonl.write(record)
        now = time.perf_counter()
        # the frame interval is averaged, not its inverse: a mean of 1/dt overstates the rate when frames
        # arrive unevenly (a paced 10 FPS run showed 20-40 FPS)
        interval = max(now - self.last, 1e-6)
        self.interval_ema = interval if self.frames == 0 else 0.9 * self.interval_ema + 0.1 * interval
        self.fps_ema = 1.0 / self.interval_ema
        self.last = now
        keep_going, canvas = True, None
        if self.save_dir or self.show or self.on_result:
            t0 = time.perf_counter()
            canvas = draw_detections(frame.image.copy(), dets)
            if self.tracking is not None:
                draw_regions(canvas, self.tracking)
            if self.source.stream:
                draw_fps(canvas, self.fps_ema, (now - frame.timestamp) * 1e3)
            self._timed("draw", t0)
            if self.show:
                cv2.imshow(WINDOW, canvas)
                keep_going = cv2.waitKey(1) & 0xFF not in (27, ord("q"))
        # glass to result: capture time to the moment the annotated frame (or, undrawn, the detections) exists
        latency_ms = (time.perf_counter() - frame.timestamp) * 1e3
        self.latency.add(latency_ms)
        if self.on_result is not None and canvas is not None:
            self.on_result(canvas, self.live_stats(frame, dets, latency_ms, counts))
        if self.save_dir and canvas is not None:
            t0 = time.perf_counter()
            if self.video is not None:
                self.video.write(canvas)
            else:
                cv2.imwrite(str(self.save_dir / f"{Path(frame.name).stem}.jpg"), canvas)
            self._timed("write", t0)
        self.frames += 1
        if self.progress:
            of = f"/{self.source.length}" if self.source.length else ""
            print(f"\r{self.frames}{of} frames  {self.fps_ema:5.1f} FPS", end="", file=sys.stderr, flush=True)
        return keep_going

    @property
    def dropped(self) -> int:
        return self.source.dropped + self.skipped

    def live_stats(self, frame: Frame, dets: Detections, latency_ms: float,
                   counts: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the web view shows while the run goes on: recent medians, not the whole history."""
        stats = {"frame": frame.index, "frames": self.frames + 1, "fps": self.fps_ema,
                 "latency_ms": float(np.median(self.latency.recent(30))) if self.latency.count else latency_ms,
                 "stages_ms": self.times.recent_median(30), "dropped_frames": self.dropped,
                 "source": self.source.name, "model": self.detector.manifest.name, "detections": dets.to_list(),
                 "class_counts": dict(Counter(dets.labels)), "class_totals": dict(self.class_totals)}
        if counts is not None:
            stats["tracking"] = counts
        return stats


def _run_sequential(stages: _Stages, frames: Iterator[Frame], max_frames: int | None, stop: threading.Event
                    ) -> Iterator[_Result]:
    while (max_frames is None or stages.frames < max_frames) and not stop.is_set():
        frame = stages.read(frames)
        if frame is None:
            break
        result = stages.decode(*stages.infer(stages.prepare(frame, None)))
        keep_going = stages.finish(result)
        yield result
        if not keep_going:
            break


_END = object()  # end of stream, passed down the slots
_EMPTY = object()


class _Slot:
    """A one-item hand-over between two threads; ``close`` wakes everyone (the run is stopping)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object = _EMPTY
        self._closed = False

    def put(self, item: object) -> bool:
        """Wait until the slot is free, then fill it; False when the run is stopping."""
        with self._cond:
            while self._item is not _EMPTY and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._item = item
            self._cond.notify_all()
            return True

    def replace(self, item: object) -> object:
        """Fill the slot at once, returning the item nobody took yet (``_EMPTY`` if none): the
        newest frame wins, so a slow model never works on a stale one."""
        with self._cond:
            old, self._item = self._item, item
            self._cond.notify_all()
            return old

    def get(self) -> object:
        with self._cond:
            while self._item is _EMPTY and not self._closed:
                self._cond.wait()
            if self._closed:
                return _END
            item, self._item = self._item, _EMPTY
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _run_threaded(stages: _Stages, frames: Iterator[Frame], max_frames: int | None, stop: threading.Event
                  ) -> Iterator[_Result]:
    errors: list[BaseException] = []
    prepared, detected = _Slot(), _Slot()
    # in flight at most: one being preprocessed, one waiting, one in inference -> three input buffers,
    # handed back after inference (a buffer is never rewritten while the backend reads it)
    free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
    for _ in range(3):
        free.put(stages.detector.new_input())
    live = stages.source.live

    def reader() -> None:
        try:
            count = 0
            # a stop request ends reading only: the frames already in flight are finished and written
            while (max_frames is None or count < max_frames) and not stop.is_set():
                frame = stages.read(frames)
                if frame is None:
                    break
                job = stages.prepare(frame, free.get())
                count += 1
                if not live:
                    if not prepared.put(job):
                        return
                elif (stale := prepared.replace(job)) is not _EMPTY:
                    free.put(stale.tensor)
                    stages.skipped += 1
                    count -= 1  # --max-frames counts frames processed, not frames skipped
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread, which raises it)
            errors.append(exc)
        prepared.put(_END)

    def inference() -> None:
        try:
            while (job := prepared.get()) is not _END:
                try:
                    result = stages.infer(job)
                finally:
                    free.put(job.tensor)  # decoding reads only the meta, never the input buffer
                if not detected.put(result):
                    return
        except BaseException as exc:  # noqa: BLE001 (as above)
            errors.append(exc)
        detected.put(_END)

    threads = [threading.Thread(target=reader, name="pipeline-read", daemon=True),
               threading.Thread(target=inference, name="pipeline-infer", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while (item := detected.get()) is not _END:
            result = stages.decode(*item)
            keep_going = stages.finish(result)
            yield result  # a consumer that stops iterating closes the generator: the finally below runs
            if not keep_going:
                break
    finally:
        prepared.close()
        detected.close()
        if stages.source.live:  # wakes a reader waiting for the next camera frame
            stages.source.close()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def _close_on_stop(stop: threading.Event, done: threading.Event, source: Source) -> None:
    """A live source's reader can wait seconds for the next frame (a stalled camera, a reconnect
    back-off): closing it on a stop request wakes it at once. Polls, so a signal handler only sets ``stop``."""
    while not done.wait(0.1):
        if stop.is_set():
            source.close()
            return


class PipelineRun:
    """``run_pipeline`` as a loop (``iter_pipeline`` is this class): ``with iter_pipeline(...) as run: for
    frame, dets in run: ...`` gets every result as it is done (drawn, written and published first), one per
    processed frame in order; ``run.summary`` (a ``RunSummary``) once the run has ended. A loop that leaves
    early (``break``, an exception) does not end the run by itself: the reader threads, the source and the
    detector's lowered score threshold are held until ``close()``, which ``with`` calls (or until the object
    is garbage-collected); ``summary`` is set then.

    ``track``: True (or a ``Tracking`` with lines / zones) tracks objects across frames: each ``dets`` then
    holds only tracked objects, with ``dets.track_ids``; the detector's score threshold is lowered to the
    tracker's ``low_score`` during the run (restored after) and its own threshold becomes the tracker's
    ``high_score`` unless the ``Tracking`` was given settings. The other arguments are ``run_pipeline``'s.
    """

    def __init__(self, detector: Detector, source: Source, save_dir: str | Path | None = None,
                 json_path: str | Path | TextIO | None = None, show: bool = False, max_frames: int | None = None,
                 progress: bool | None = None, *, mode: str = "threaded", max_fps: float | None = None,
                 on_result: ResultCallback | None = None, stop: threading.Event | None = None,
                 track: Tracking | bool | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.detector, self.source, self.mode = detector, source, mode
        self.save_dir = Path(save_dir) if save_dir else None
        self.stop = stop or threading.Event()
        self.max_frames, self.show = max_frames, show
        self.tracking = Tracking() if track is True else (track or None)
        self.summary: RunSummary | None = None
        self._args = (json_path, sys.stderr.isatty() if progress is None else progress, max_fps, on_result)
        self._results = self._run()

    def __iter__(self) -> PipelineRun:
        return self

    def __next__(self) -> tuple[Frame, Detections]:
        result = next(self._results)
        return result.frame, result.dets

    def close(self) -> None:
        """End the run now (what was written so far stays); ``summary`` is then set, unless the run never
        started (closed before the first result was asked for: only the source is closed)."""
        if inspect.getgeneratorstate(self._results) == inspect.GEN_CREATED:  # its cleanup would not run
            self.source.close()
        self._results.close()

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> Iterator[_Result]:
        detector, source, stop = self.detector, self.source, self.stop
        json_path, progress, max_fps, on_result = self._args
        saved_threshold = detector.score_threshold
        try:  # a failure here (an output that cannot be opened, lap missing) still releases the source
            if self.save_dir:
                self.save_dir.mkdir(parents=True, exist_ok=True)
            low = self.tracking.bind(saved_threshold).low_score if self.tracking is not None else saved_threshold
            stages = _Stages(detector, source, self.save_dir, json_path, self.show, progress, max_fps, on_result,
                             self.tracking)
        except BaseException:
            source.close()
            raise
        # the tracker continues tracks with detections below the shown threshold (ByteTrack's second stage);
        # restored in the finally below, which every way out of the run goes through
        detector.score_threshold = min(saved_threshold, low)
        done = threading.Event()
        watcher = None
        if source.live:
            watcher = threading.Thread(target=_close_on_stop, args=(stop, done, source), name="pipeline-stop",
                                       daemon=True)
            watcher.start()
        lost: SourceLostError | None = None
        start = time.perf_counter()
        schedule = _run_threaded if self.mode == "threaded" else _run_sequential
        try:
            yield from schedule(stages, iter(source), self.max_frames, stop)
        except SourceLostError as exc:  # the results so far are still written and summarised
            lost = exc
        finally:
            wall = time.perf_counter() - start
            done.set()
            detector.score_threshold = saved_threshold
            if stages.progress:
                print(file=sys.stderr)
            if stages.video is not None:
                stages.video.close()
            if stages.jsonl is not None:
                stages.jsonl.close()
            source.close()
            if watcher is not None:
                # it may be closing the source itself (a stop request): a daemon thread still inside OpenCV
                # when the interpreter exits is killed there, and that aborts the process ("terminate called
                # without an active exception", seen once in 20 SIGINT runs)
                watcher.join()
            if self.show:
                cv2.destroyAllWindows()
            self.summary = self._summarize(stages, wall)
        if lost is not None:
            lost.summary = self.summary
            raise lost

    def _summarize(self, stages: _Stages, wall: float) -> RunSummary:
        outputs: dict[str, str] = {}
        if self.save_dir:
            outputs["save_dir"] = str(self.save_dir)
        if stages.video is not None and stages.video.path is not None:
            outputs["video"] = str(stages.video.path)
        if stages.jsonl is not None and stages.jsonl.path is not None:
            outputs["json"] = str(stages.jsonl.path)
        tracking = self.tracking
        return RunSummary(stages.frames, wall, stages.times.summary(), stages.total_dets, outputs,
                          latency=stages.latency.summary(), dropped=stages.dropped, thermal=thermal_state(),
                          mode=self.mode, stopped="stop requested" if self.stop.is_set() else "",
                          run={"package": str(self.detector.manifest.root), "artifact": self.detector.artifact.file,
                               "source": self.source.name},
                          tracking=tracking.snapshot() if tracking else {},
                          tracking_table=tracking.table() if tracking else "")


iter_pipeline = PipelineRun  # the public name of the loop form


def run_pipeline(detector: Detector, source: Source, save_dir: str | Path | None = None,
                 json_path: str | Path | TextIO | None = None, show: bool = False, max_frames: int | None = None,
                 progress: bool | None = None, *, mode: str = "threaded", max_fps: float | None = None,
                 on_result: ResultCallback | None = None, stop: threading.Event | None = None,
                 track: Tracking | bool | None = None) -> RunSummary:
    """Run ``detector`` on every frame of ``source`` (live sources: the newest frame each time);
    returns timing and what was written.

    Stages timed per frame: read, preprocess, inference, postprocess, track (when tracking), draw and
    write (when drawing / saving); glass-to-result latency from each frame's capture time. ``mode`` is
    "threaded" or "sequential" (same detections, frame by frame); ``max_fps`` limits the rate; ``on_result``
    receives every annotated frame with live statistics. ``json_path`` (a file or an open text stream)
    gets one JSON line per frame as it is done. Setting ``stop`` (e.g. from a signal handler) ends the
    run normally: reading stops, the frames in flight are finished and the summary is returned. Memory
    stays flat however long the run: statistics are bounded (``RollingStats``), nothing is kept per frame,
    and a tracker forgets a track ``max_lost_s`` after it was last seen. ``track``: see ``PipelineRun``.

    A live source that is lost for good raises ``SourceLostError`` after everything is written; its
    ``summary`` holds the run until then.
    """
    with iter_pipeline(detector, source, save_dir, json_path, show, max_frames, progress, mode=mode,
                       max_fps=max_fps, on_result=on_result, stop=stop, track=track) as run:
        for _ in run:
            pass
    return run.summary
