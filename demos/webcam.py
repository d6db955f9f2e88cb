"""Webcam (or video) detection with an FPS overlay, in a screenful of code on the public API.

    python demos/webcam.py pkg/            # camera 0
    python demos/webcam.py pkg/ video.avi  # any source `edge-runtime run` accepts

Press q or Esc to quit. Without a display it prints the detections instead.
"""

import sys
import time

import cv2

from edge_runtime import Detector, EdgeRuntimeError
from edge_runtime.draw import draw_detections, draw_fps
from edge_runtime.pipeline import display_available
from edge_runtime.sources import open_source


def main(package: str, source: str = "0") -> None:
    detector = Detector(package)
    print(detector.describe())
    window = display_available()
    fps, last = 0.0, time.perf_counter()
    with open_source(source) as frames:
        for frame in frames:
            dets = detector(frame.image)
            now = time.perf_counter()
            fps, last = 0.9 * fps + 0.1 / (now - last), now
            if not window:
                print(f"{frame.name}: {fps:5.1f} FPS", ", ".join(f"{d['label']} {d['score']:.2f}" for d in dets.to_list()))
                continue
            canvas = draw_fps(draw_detections(frame.image, dets), fps, (now - frame.timestamp) * 1e3)
            cv2.imshow("edge-runtime demo", canvas)
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                break


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:3])
    except EdgeRuntimeError as exc:
        sys.exit(f"error: {exc}")
