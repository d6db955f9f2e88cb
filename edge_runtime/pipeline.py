"""Source -> Detector -> sinks (annotated images/video, JSON, window), with per-stage timing."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from .detector import Detector
from .draw import draw_detections, draw_fps
from .sources import Source
from .timing import StageTimes, format_table

log = logging.getLogger(__name__)
WINDOW = "edge-runtime"


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

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def table(self) -> str:
        rows = [[stage, s["mean"], s["median"], s["p90"]] for stage, s in self.stages.items()]
        total = sum(s["mean"] for s in self.stages.values())
        rows.append(["total", total, float("nan"), float("nan")])
        text = format_table(["stage", "mean ms", "median ms", "p90 ms"], rows).replace("nan", "   ")
        return f"{text}\n{self.frames} frames in {self.wall_s:.2f} s: {self.fps:.1f} FPS end to end"

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "wall_s": self.wall_s, "fps": self.fps, "detections": self.detections,
                "stages_ms": self.stages, "outputs": self.outputs}


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


def run_pipeline(detector: Detector, source: Source, save_dir: str | Path | None = None,
                 json_path: str | Path | None = None, show: bool = False, max_frames: int | None = None,
                 progress: bool | None = None) -> RunSummary:
    """Run ``detector`` on every frame of ``source``; returns timing and what was written.

    Stages timed per frame: read, preprocess, inference, postprocess, draw, and write when saving.
    """
    times = StageTimes()
    save_dir = Path(save_dir) if save_dir else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    video = _VideoSink(save_dir / f"{Path(source.name).stem}_det", source.nominal_fps or 30.0) \
        if save_dir and source.stream else None
    records: list[dict[str, Any]] = []
    progress = sys.stderr.isatty() if progress is None else progress
    n = total_dets = 0
    fps_ema = 0.0
    start = last = time.perf_counter()
    frames = iter(source)
    try:
        while max_frames is None or n < max_frames:
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            times.add("read", (time.perf_counter() - t0) * 1e3)
            dets = detector(frame.image)
            times.update(detector.last_timings)
            total_dets += len(dets)
            if json_path:
                records.append({"index": frame.index, "name": frame.name, "detections": dets.to_list()})
            now = time.perf_counter()
            fps_ema = 1.0 / max(now - last, 1e-6) if n == 0 else 0.9 * fps_ema + 0.1 / max(now - last, 1e-6)
            last = now
            if save_dir or show:
                t0 = time.perf_counter()
                canvas = draw_detections(frame.image.copy(), dets)
                if source.stream:
                    draw_fps(canvas, fps_ema, (now - frame.timestamp) * 1e3)
                times.add("draw", (time.perf_counter() - t0) * 1e3)
                if save_dir:
                    t0 = time.perf_counter()
                    if video is not None:
                        video.write(canvas)
                    else:
                        cv2.imwrite(str(save_dir / f"{Path(frame.name).stem}.jpg"), canvas)
                    times.add("write", (time.perf_counter() - t0) * 1e3)
                if show:
                    cv2.imshow(WINDOW, canvas)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        break
            n += 1
            if progress:
                of = f"/{source.length}" if source.length else ""
                print(f"\r{n}{of} frames  {fps_ema:5.1f} FPS", end="", file=sys.stderr, flush=True)
    finally:
        wall = time.perf_counter() - start
        if progress:
            print(file=sys.stderr)
        if video is not None:
            video.close()
        source.close()
        if show:
            cv2.destroyAllWindows()
    outputs: dict[str, str] = {}
    if save_dir:
        outputs["save_dir"] = str(save_dir)
    if video is not None and video.path is not None:
        outputs["video"] = str(video.path)
    if json_path:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"package": str(detector.manifest.root), "artifact": detector.artifact.file,
                                         "source": source.name, "frames": records}, indent=1))
        outputs["json"] = str(json_path)
    return RunSummary(n, wall, times.summary(), total_dets, outputs)
