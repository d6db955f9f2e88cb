"""Regenerate docs/demo.png, the README's picture: one frame of the demo clip exactly as
``edge-runtime run`` annotates it (boxes, labels, FPS overlay) with the bundled demo-shapes model.

    python demos/readme_picture.py                  # builds what it needs under demo_out/, writes docs/demo.png
    python demos/readme_picture.py --frame 40 --out /tmp/demo.png

Builds the FP32 ONNX package and the clip the way ``edge-runtime demo`` does (reused when present;
building needs the host tool chain, torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from converters.demo import build_package, demo_clip
from edge_runtime import Detector
from edge_runtime.io.pipeline import run_pipeline
from edge_runtime.io.sources import open_source

REPO = Path(__file__).resolve().parents[1]
# picked by eye from frames 10, 30, 58, 75, 100 and 126: every box right, shapes partly overlapping as in
# most of the clip (frame 30 has a false "square", 100 misses a half-hidden circle)
FRAME = 75


def annotated_frame(work: Path, frame: int) -> np.ndarray:
    """Frame ``frame`` of the demo clip as the pipeline draws it for any sink (window, video, web view)."""
    manifest = build_package(work, ["onnx"], ["fp32"], print)
    detector = Detector(manifest.root, backend="onnx", precision="fp32")
    kept: dict[int, np.ndarray] = {}
    run_pipeline(detector, open_source(str(demo_clip(work))), max_frames=frame + 1, progress=False,
                 on_result=lambda canvas, stats: kept.update({stats["frame"]: canvas}))
    return kept[frame]


def main() -> None:
    p = argparse.ArgumentParser(description="Write the README's picture: an annotated frame of the demo clip.")
    p.add_argument("--work", default=str(REPO / "demo_out"), help="where the package and clip are built [demo_out/, as edge-runtime demo]")
    p.add_argument("--frame", type=int, default=FRAME, help=f"clip frame to keep [{FRAME}]")
    p.add_argument("--out", default=str(REPO / "docs" / "demo.png"), help="image to write [docs/demo.png]")
    args = p.parse_args()
    image = annotated_frame(Path(args.work), args.frame)
    if not cv2.imwrite(args.out, image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"could not write {args.out}")
    print(f"{args.out}: frame {args.frame}, {Path(args.out).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
