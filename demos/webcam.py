"""Webcam (or video) detection with an FPS overlay, in a screenful of code on the public API.

    python demos/webcam.py pkg/            # camera 0
    python demos/webcam.py pkg/ video.avi  # any source `edge-runtime run` accepts

With a display: a window (press q or Esc to quit). Headless (a Raspberry Pi over ssh): the annotated
stream and live statistics at http://127.0.0.1:8080/ (Ctrl-C to stop).
"""

import sys

from edge_runtime import Detector, EdgeRuntimeError
from edge_runtime.io.pipeline import display_available, run_pipeline
from edge_runtime.io.serve import FrameServer
from edge_runtime.io.sources import open_source


def main(package: str, source: str = "0") -> None:
    detector = Detector(package)
    print(detector.describe())
    window = display_available()
    with FrameServer(("127.0.0.1", 8080)) as server:
        if not window:
            print(f"live view: {server.url}")
        # threaded: the next frame is read while this one is inferred and drawn; stale camera frames are dropped
        summary = run_pipeline(detector, open_source(source), show=window, on_result=server.publish)
    print(summary.table())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:3])
    except EdgeRuntimeError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        pass
