"""An artifact's speed against its format's FP32 on this CPU, as ``convert`` records it (``speed``), and
model files against a baseline file, for the choices converters make by speed (the ONNX INT8 recipe, the
OpenVINO INT8 hint and preset; the baseline is then called ``fp32`` whatever it is).

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
from typing import Any, Callable

import numpy as np

from .backends import open_artifact, open_backend
from .errors import EdgeRuntimeError
from .manifest import Artifact, load_manifest
from .preprocess import to_layout
from .timing import time_calls

REPEATS = 3
SECONDS_EACH = 0.25  # per artifact and repeat: enough calls for a stable median, a few seconds in all
TIMEOUT_S = 600
NCHW_FORMATS = ("onnx", "openvino")  # the files mode feeds the NCHW tensor as it is


Opener = Callable[[], Callable[[], object]]  # opens a session, returns one timed call on the input


def _median_ms(open_run: Opener, seconds: float) -> float:
    """Median ms of the call ``open_run`` makes over about ``seconds`` of calls; its session ends on return."""
    run = open_run()
    first = time_calls(run, 2, 3)
    calls = int(min(200, max(5, seconds * 1e3 / max(float(np.median(first)), 1e-3))))
    return float(np.median(time_calls(run, 0, calls)))


def _in_turns(openers: dict[str, Opener], against: dict[str, str], repeats: int,
              seconds: float) -> dict[str, dict[str, float]]:
    """Each key of ``against`` timed against the key it maps to (its FP32), one live session at a time (two
    sessions' thread pools slow each other), about ``seconds`` each; per repeat every opener takes its turn,
    the order reversed every other repeat, and the speed-up is taken within a repeat, so a load that drifts
    between repeats moves both sides; its median over the repeats is kept."""
    order = list(dict.fromkeys(k for key, fp32 in against.items() for k in (fp32, key)))
    samples: dict[str, list[float]] = {key: [] for key in order}
    for repeat in range(repeats):
        for key in order if repeat % 2 == 0 else order[::-1]:
            samples[key].append(_median_ms(openers[key], seconds))
            gc.collect()  # the session and its thread pool go before the next one opens
    result = {}
    for key, fp32_key in against.items():
        fp32 = samples[fp32_key]
        result[key] = {"ms": float(np.median(samples[key])), "fp32_ms": float(np.median(fp32)),
                       "vs_fp32": float(np.median([f / s for f, s in zip(fp32, samples[key])]))}
    return result


def time_against_fp32(package: str | Path, keys: list[str], tensor: np.ndarray, threads: int,
                      repeats: int = REPEATS, seconds: float = SECONDS_EACH) -> dict[str, dict[str, float]]:
    """Model-only latency of the artifacts ``keys`` names (``Artifact.key``, e.g. ``openvino-int8``; each
    format's FP32 must be in the package) on the NCHW ``tensor``, and each one's speed against its format's
    FP32, timed in this process (``_in_turns``). Returns ``key -> {"ms", "fp32_ms", "vs_fp32"}``."""
    manifest = load_manifest(package)
    arts = {a.key: a for a in manifest.artifacts}

    def opener(art: Artifact) -> Opener:
        def open_run() -> Callable[[], object]:
            spec = manifest.input_for(art)
            feed = {spec.name: to_layout(tensor, spec.layout)}
            backend = open_artifact(manifest, art, threads)
            return lambda: backend.run(feed)
        return open_run

    against = {}
    for key in keys:
        against[key] = f"{arts[key].format}-fp32"
        if against[key] not in arts:
            raise EdgeRuntimeError(f"{manifest.root}: {key} has no {against[key]} artifact to be timed against")
    return _in_turns({key: opener(arts[key]) for key in {*against, *against.values()}}, against, repeats, seconds)


def time_files_against_fp32(fp32: str | Path, files: dict[str, str | Path], tensor: np.ndarray, threads: int,
                            format: str = "onnx", options: dict[str, dict[str, Any]] | None = None,
                            repeats: int = REPEATS, seconds: float = SECONDS_EACH) -> dict[str, dict[str, float]]:
    """As ``time_against_fp32`` for model files outside a package (a converter's candidates): each of
    ``files`` (key -> path, NCHW input) against the model ``fp32`` of the same ``format``. ``options``: key
    (``fp32`` for the baseline) -> the backend's options, e.g. OpenVINO's ``inference_precision``, so that one
    file can be timed against itself under another setting."""
    if format not in NCHW_FORMATS:  # fed the NCHW tensor as it is
        raise EdgeRuntimeError(f"timing files: {format} is not one of {', '.join(NCHW_FORMATS)} (NCHW input)")

    def opener(key: str, path: str | Path) -> Opener:
        def open_run() -> Callable[[], object]:
            backend = open_backend(Path(path), format, threads, (options or {}).get(key))
            feed = {backend.inputs[0].name: tensor}
            return lambda: backend.run(feed)
        return open_run

    if "fp32" in files:
        raise EdgeRuntimeError("the key fp32 names the model timed against")
    openers = {"fp32": opener("fp32", fp32), **{key: opener(key, path) for key, path in files.items()}}
    return _in_turns(openers, {key: "fp32" for key in files}, repeats, seconds)


def _fresh_process(args: list[str], what: str, tensor: np.ndarray, threads: int,
                   timeout_s: float) -> dict[str, dict[str, float]]:
    """``python -m edge_runtime.speed ARGS`` on ``tensor``; its JSON result, or one ``EdgeRuntimeError`` line
    naming ``what`` (the worker's last stderr line, or the timeout)."""
    with tempfile.TemporaryDirectory(prefix="edge-runtime-speed-") as tmp:
        path = Path(tmp) / "input.npy"
        np.save(path, np.ascontiguousarray(tensor, np.float32))
        cmd = [sys.executable, "-m", "edge_runtime.speed", *args, "--input", str(path), "--threads", str(threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgeRuntimeError(f"{what} took over {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise EdgeRuntimeError(f"{what} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_in_fresh_process(package: str | Path, keys: list[str], tensor: np.ndarray, threads: int,
                          timeout_s: float = TIMEOUT_S) -> dict[str, dict[str, float]]:
    """``time_against_fp32`` in a fresh interpreter; a worker that fails or hangs is one
    ``EdgeRuntimeError`` line (its last stderr line, or the timeout)."""
    return _fresh_process([str(package), "--keys", *keys], f"{package}: timing against FP32", tensor,
                          threads, timeout_s)


def time_files_in_fresh_process(fp32: str | Path, files: dict[str, str | Path], tensor: np.ndarray, threads: int,
                                format: str = "onnx", options: dict[str, dict[str, Any]] | None = None,
                                timeout_s: float = TIMEOUT_S, what: str | None = None) -> dict[str, dict[str, float]]:
    """``time_files_against_fp32`` in a fresh interpreter, failing as ``time_in_fresh_process`` does (the error
    names ``what``, else the baseline file)."""
    if format not in NCHW_FORMATS:
        raise EdgeRuntimeError(f"timing files: {format} is not one of {', '.join(NCHW_FORMATS)} (NCHW input)")
    if bad := [key for key in files if "=" in key or key == "fp32"]:
        raise EdgeRuntimeError(f"timing files: key {bad[0]!r} (the keys name the files: no '=', fp32 is the baseline)")
    args = [f"--fp32={fp32}", f"--format={format}", "--files", *(f"{key}={path}" for key, path in files.items())]
    if options:
        args.append(f"--options={json.dumps(options)}")
    return _fresh_process(args, f"{what or fp32}: timing", tensor, threads, timeout_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_runtime.speed", description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", help="a package, timed with --keys")
    ap.add_argument("--keys", nargs="+", help="the package's artifacts as format-precision, e.g. onnx-int8")
    ap.add_argument("--fp32", help="instead of a package: an FP32 model file, --files timed against it")
    ap.add_argument("--files", nargs="+", help="with --fp32: KEY=PATH model files of the same format")
    ap.add_argument("--format", default="onnx", choices=NCHW_FORMATS, help="with --fp32: the files' format")
    ap.add_argument("--options", type=json.loads, help='with --fp32: JSON {"KEY": {backend options}}, fp32 too')
    ap.add_argument("--input", required=True, help=".npy of the NCHW float32 input batch")
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args(argv)
    if (args.package is None) == (args.fp32 is None) or bool(args.keys) != bool(args.package) \
            or bool(args.files) != bool(args.fp32):
        ap.error("give a package with --keys, or --fp32 with --files")
    if args.files and not all("=" in item for item in args.files):
        ap.error("--files takes KEY=PATH items")
    tensor = np.load(args.input, allow_pickle=False)
    try:
        if args.package:
            result = time_against_fp32(args.package, args.keys, tensor, args.threads)
        else:
            files = dict(item.split("=", 1) for item in args.files)
            result = time_files_against_fp32(args.fp32, files, tensor, args.threads, args.format, args.options)
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
