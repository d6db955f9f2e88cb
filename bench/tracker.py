"""Cost of tracking and counting per frame (issue 19 goal: < 0.5 ms at 50 objects on x86).

    python bench/tracker.py                      # 10, 50 and 100 objects, 2 lines + 1 zone, 3000 frames each
    python bench/tracker.py --objects 50 --json tracker.json

Scripted scene, 30 FPS: N objects of 2 classes walk straight lines at 20-120 px/s over a 1920x1080 frame and
wrap around (so tracks keep ending and starting), with box jitter of 1.5 px, 5 % of detections missed and a
quarter of them scored below the high threshold (ByteTrack's second stage has work to do). Timed:
``Tracking.update`` (tracker + counters), the call the pipeline's "track" stage times. Also times the
linear assignment alone with lap.lapjv and, when installed, scipy's linear_sum_assignment on the same
cost matrices (the choice of assignment library, docs/tracking.md).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edge_runtime.deploy.hostinfo import detect_host
from edge_runtime.detections import Detections
from edge_runtime.timing import format_table, summarize
from edge_runtime.tracking import CountLine, TrackerSettings, Tracking, Zone, box_iou
from edge_runtime.versions import package_version

W, H, FPS = 1920, 1080, 30.0
NAMES = ("person", "car")


def scene(objects: int, frames: int, seed: int = 0) -> list[Detections]:
    rng = np.random.default_rng(seed)
    start = rng.uniform([0, 0], [W, H], (objects, 2))
    angle = rng.uniform(0, 2 * np.pi, objects)
    speed = rng.uniform(20, 120, objects)
    velocity = np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]
    size = rng.uniform([30, 60], [80, 180], (objects, 2))
    classes = (np.arange(objects) % 2).astype(np.int32)
    out = []
    for i in range(frames):
        centre = (start + velocity * i / FPS) % [W, H] + rng.normal(0, 1.5, (objects, 2))
        seen = rng.random(objects) > 0.05
        scores = np.where(rng.random(objects) < 0.25, rng.uniform(0.15, 0.45, objects), rng.uniform(0.5, 0.95, objects))
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)[seen].astype(np.float32)
        order = np.argsort(-scores[seen])
        out.append(Detections(boxes[order], scores[seen][order].astype(np.float32), classes[seen][order], NAMES))
    return out


def time_tracking(frames: list[Detections]) -> dict[str, float]:
    tracking = Tracking(TrackerSettings(high_score=0.5, low_score=0.1),
                        lines=[CountLine("h", (0, H / 2), (W, H / 2)), CountLine("v", (W / 2, 0), (W / 2, H))],
                        zones=[Zone("z", ((100, 100), (900, 100), (900, 700), (100, 700)))])
    times = []
    for i, dets in enumerate(frames):
        t0 = time.perf_counter()
        tracking.update(dets, i / FPS)
        times.append((time.perf_counter() - t0) * 1e3)
    stats = summarize(times[len(times) // 10:])  # the first frames fill the tracker
    stats["ids"] = tracking.ids_issued
    return stats


def time_assignment(frames: list[Detections]) -> dict[str, float]:
    """Median ms of one assignment on consecutive frames' 1 - IoU matrices, per library."""
    import lap

    costs = [1 - box_iou(a.boxes.astype(np.float64), b.boxes.astype(np.float64)) for a, b in zip(frames, frames[1:])]
    solvers = {"lap.lapjv": lambda c: lap.lapjv(c, extend_cost=True, cost_limit=0.8)}
    try:
        from scipy.optimize import linear_sum_assignment

        solvers["scipy linear_sum_assignment"] = linear_sum_assignment
    except ImportError:
        pass
    out = {}
    for name, solve in solvers.items():
        times = []
        for cost in costs:
            t0 = time.perf_counter()
            solve(cost)
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = float(np.median(times))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--json", default=None, help="write every figure here")
    args = p.parse_args()
    host = detect_host()
    print(f"{host.cpu} ({host.arch}; {' '.join(host.flags)}), numpy {np.__version__}, lap {package_version('lap')}")
    rows, report = [], {"cpu": host.cpu, "arch": host.arch, "flags": list(host.flags), "runs": []}
    for n in args.objects:
        frames = scene(n, args.frames)
        stats = time_tracking(frames)
        assign = time_assignment(frames)
        rows.append([n, stats["p50"], stats["p95"], stats["mean"], stats["ids"],
                     *(f"{v * 1e3:.0f} us" for v in assign.values())])
        report["runs"].append({"objects": n, "track_ms": stats, "assignment_ms": assign})
    headers = ["objects", "p50 ms", "p95 ms", "mean ms", "ids", *report["runs"][0]["assignment_ms"]]
    print(format_table(headers, rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
