"""Soak test (issue 15, "runs that last"; not run in CI): does a long camera run keep its memory flat?

Runs ``edge-runtime run`` in a child process on a loopback MJPEG camera (127.0.0.1, the frames of a
video JPEG-encoded once and streamed in a loop at ``--fps``; tests/loopback_camera.py) for
``--minutes``, with ``--json`` and ``--summary-json`` on, as a headless camera service would run.
Every ``--interval`` seconds it reads the child's resident memory (VmRSS in /proc/<pid>/status); at
the end it stops the run the way a service manager does (SIGTERM) and checks that the summary and
the JSON lines were written. Prints RSS after the warm-up and at the end and the growth between
them; ``--json`` writes every sample. Goal: under 5 MB growth after warm-up over 30 minutes at 60 FPS.

    python bench/soak.py pkg320/ --minutes 30 --fps 60 --threads 1 --json soak.json
    python bench/soak.py pkg320/ --minutes 10 --fps 30 --track --json soak-track.json   # with tracking on

The camera runs in this process and the model in the child, so the RSS is the run's alone. Measured
figures (issue 15) are in docs/service.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback camera the tests use

from loopback_camera import LoopbackCamera, encode_video  # noqa: E402

DEFAULT_VIDEO = ROOT.parent / "shared" / "fixtures" / "video" / "vtest.avi"


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (VmRSS, kB in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("model name", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def soak(package: str, minutes: float, fps: float, threads: int, interval: float, warmup_s: float,
         video: Path, backend: str, out_dir: Path, track: bool = False) -> dict[str, Any]:
    frames = encode_video(video)
    camera = LoopbackCamera(frames, fps=fps)
    jsonl, summary_path = out_dir / "detections.jsonl", out_dir / "summary.json"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", package, "--source", camera.url, "--show", "no",
           "--threads", str(threads), "--backend", backend, "--json", str(jsonl), "--summary-json", str(summary_path)]
    if track:  # tracking and a line across the middle: ids come and go as the video loops
        import cv2
        import numpy as np

        height, width = cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_COLOR).shape[:2]
        cmd += ["--track", "--count-line", f"mid=0,{height // 2},{width},{height // 2}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # to files, not pipes: an unread pipe fills after ~64 kB and would block the run (and flatten its RSS)
    out_path, err_path = out_dir / "run.stdout", out_dir / "run.stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        child = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    try:
        while (t := time.monotonic() - start) < minutes * 60:
            if child.poll() is not None:
                raise RuntimeError(f"the run ended early (exit {child.returncode}): {err_path.read_text()[-2000:]}")
            samples.append((round(t, 1), round(rss_mb(child.pid), 2)))
            print(f"{t / 60:6.2f} min  RSS {samples[-1][1]:7.2f} MB", flush=True)
            time.sleep(interval)
        samples.append((round(time.monotonic() - start, 1), round(rss_mb(child.pid), 2)))
        child.send_signal(signal.SIGTERM)  # what systemctl stop sends
        child.wait(timeout=60)
        stdout, stderr = out_path.read_text(), err_path.read_text()
    finally:
        if child.poll() is None:
            child.kill()
        camera.stop()
    after = [rss for t, rss in samples if t >= warmup_s] or [samples[-1][1]]
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    lines = sum(1 for _ in jsonl.open()) if jsonl.exists() else 0
    return {"package": package, "minutes": minutes, "target_fps": fps, "threads": threads, "cpu": cpu_model(),
            "track": track,
            "warmup_s": warmup_s, "rss_after_warmup_mb": after[0], "rss_end_mb": samples[-1][1],
            "rss_max_after_warmup_mb": max(after), "growth_mb": round(samples[-1][1] - after[0], 2),
            "growth_mb_per_min": round((samples[-1][1] - after[0]) / max((samples[-1][0] - warmup_s) / 60, 1e-9), 3),
            "exit_code": child.returncode, "json_lines": lines, "frames_served": camera.served,
            "summary": summary, "stdout": stdout, "stderr_tail": stderr[-2000:], "samples": samples}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--fps", type=float, default=60.0, help="the loopback camera's frame rate [60]")
    p.add_argument("--threads", type=int, default=1, help="inference threads [1]")
    p.add_argument("--backend", default="auto")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples [5]")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the reference RSS sample [60]")
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="frames for the camera [vtest.avi]")
    p.add_argument("--track", action="store_true", help="run with --track and a count line across the middle")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = soak(args.package, args.minutes, args.fps, args.threads, args.interval, args.warmup, args.video,
                      args.backend, Path(tmp), args.track)
    s = report["summary"] or {}
    print(f"\n{report['cpu']}: {report['minutes']:g} min at a {report['target_fps']:g} FPS camera, "
          f"{report['threads']} inference thread(s): {s.get('frames', '?')} frames, {s.get('fps', 0):.1f} FPS")
    print(f"RSS after {report['warmup_s']:g} s warm-up {report['rss_after_warmup_mb']:.1f} MB, at the end "
          f"{report['rss_end_mb']:.1f} MB (max {report['rss_max_after_warmup_mb']:.1f}): growth "
          f"{report['growth_mb']:+.2f} MB ({report['growth_mb_per_min']:+.3f} MB/min)")
    print(f"SIGTERM: exit {report['exit_code']}, summary {'written' if report['summary'] else 'MISSING'}, "
          f"{report['json_lines']} JSON lines")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
