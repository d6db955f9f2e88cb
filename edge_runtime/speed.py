"""An artifact's speed against its format's FP32 on this CPU, as ``convert`` records it (``speed``).

Timed in a fresh interpreter (``python -m edge_runtime.speed``): inside a converter's process the
sessions it keeps open share the cores and distort the figure. A subprocess rather than a spawned
``multiprocessing`` worker, because spawning re-runs the caller's main script when it has no
``__main__`` guard (a user's conversion script would convert again in the worker).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .backends import open_artifact
from .errors import EdgeRuntimeError
from .manifest import Artifact, Manifest, load_manifest
from .preprocess import to_layout
from .timing import time_calls

REPEATS = 3
SECONDS_EACH = 0.25  # per artifact and repeat: enough calls for a stable median, a few seconds in all
TIMEOUT_S = 600


def _median_ms(manifest: Manifest, art: Artifact, tensor: np.ndarray, threads: int, seconds: float) -> float:
    """Median ms of ``art`` on ``tensor`` over about ``seconds`` of calls; its session ends on return."""
    spec = manifest.input_for(art)
    feed = {spec.name: to_layout(tensor, spec.layout)}
    backend = open_artifact(manifest, art, threads)
    first = time_calls(lambda: backend.run(feed), 2, 3)
    calls = int(min(200, max(5, seconds * 1e3 / max(float(np.median(first)), 1e-3))))
    return float(np.median(time_calls(lambda: backend.run(feed), 0, calls)))


def time_against_fp32(package: str | Path, keys: list[str], tensor: np.ndarray, threads: int,
                      repeats: int = REPEATS, seconds: float = SECONDS_EACH) -> dict[str, dict[str, float]]:
    """Model-only latency of the artifacts ``keys`` names (``Artifact.key``, e.g. ``openvino-int8``; each
    format's FP32 must be in the package) on the NCHW ``tensor``, and each one's speed against its format's
    FP32, timed in this process. One live session at a time (two sessions' thread pools slow each other),
    about ``seconds`` each; per repeat the FP32 and the others take turns, the order reversed every other
    repeat, and the speed-up is taken within a repeat, so a load that drifts between repeats moves both
    sides; its median over the repeats is kept. Returns ``key -> {"ms", "fp32_ms", "vs_fp32"}``."""
    manifest = load_manifest(package)
    arts = {a.key: a for a in manifest.artifacts}
    order: list[str] = []
    for key in keys:
        fp32 = f"{arts[key].format}-fp32"
        if fp32 not in arts:
            raise EdgeRuntimeError(f"{manifest.root}: {key} has no {fp32} artifact to be timed against")
        order += [k for k in (fp32, key) if k not in order]
    samples: dict[str, list[float]] = {key: [] for key in order}
    for repeat in range(repeats):
        for key in order if repeat % 2 == 0 else order[::-1]:
            samples[key].append(_median_ms(manifest, arts[key], tensor, threads, seconds))
            gc.collect()  # the session and its thread pool go before the next one opens
    result = {}
    for key in keys:
        fp32 = samples[f"{arts[key].format}-fp32"]
        result[key] = {"ms": float(np.median(samples[key])), "fp32_ms": float(np.median(fp32)),
                       "vs_fp32": float(np.median([f / s for f, s in zip(fp32, samples[key])]))}
    return result


def time_in_fresh_process(package: str | Path, keys: list[str], tensor: np.ndarray, threads: int,
                          timeout_s: float = TIMEOUT_S) -> dict[str, dict[str, float]]:
    """``time_against_fp32`` in a fresh interpreter; a worker that fails or hangs is one
    ``EdgeRuntimeError`` line (its last stderr line, or the timeout)."""
    with tempfile.TemporaryDirectory(prefix="edge-runtime-speed-") as tmp:
        path = Path(tmp) / "input.npy"
        np.save(path, np.ascontiguousarray(tensor, np.float32))
        cmd = [sys.executable, "-m", "edge_runtime.speed", str(package), "--input", str(path),
               "--threads", str(threads), "--keys", *keys]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgeRuntimeError(f"{package}: timing against FP32 took over {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise EdgeRuntimeError(f"{package}: timing against FP32 failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_runtime.speed", description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("--keys", nargs="+", required=True, help="artifacts as format-precision, e.g. onnx-int8")
    ap.add_argument("--input", required=True, help=".npy of the NCHW float32 input batch")
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args(argv)
    tensor = np.load(args.input, allow_pickle=False)
    try:
        result = time_against_fp32(args.package, args.keys, tensor, args.threads)
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
