"""Does each artifact compute on an x86 CPU without VNNI what convert measured? A package's artifacts run
natively and on an emulated Intel Haswell (AVX2, no AVX-512/VNNI: scripts/x86_avx2.sh, qemu-user), each
against FP32 ONNX run natively, on the held-out images convert checked them on; with what
``hostfit.host_mismatch`` says of each there.

    python bench/int8_on_avx2.py PKG --calib path/to/calib-coco-val2017 --calib-size 64

``--calib`` / ``--calib-size``: the ones the package was converted with (the held-out images are the next
``--images`` of that folder, as convert picks them). Emulation runs ~50x slower than native (NanoDet-Plus-m
416: ~8 s an image and artifact on 2 cores): a cosine table, never a timing. An OpenVINO INT8 recorded with
bf16 is also run natively in f32, since the emulated Haswell has no BF16 and runs it in f32: the two effects
apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(package: str, tensors: str, reference: str, keys: list[str], ov_precision: str | None) -> dict:
    """Per artifact: per-image cosine (lowest over outputs) and worst max |diff| against the saved FP32 outputs."""
    from edge_runtime.backends import open_artifact
    from edge_runtime.compare import compare
    from edge_runtime.deploy.hostinfo import cpu_summary
    from edge_runtime.hostfit import host_mismatch
    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(package)
    inputs = np.load(tensors)["tensors"]
    saved = np.load(reference)
    fp32 = manifest.artifact("onnx", "fp32")
    want = [[saved[f"{i}_{j}"] for j in range(len(fp32.outputs))] for i in range(len(inputs))]
    out = {"cpu": cpu_summary(), "artifacts": {}}
    for art in manifest.artifacts:
        if art.key not in keys:
            continue
        options = {"inference_precision": ov_precision} if ov_precision and art.format == "openvino" else None
        backend = open_artifact(manifest, art, 1, options)
        spec = manifest.input_for(art)
        cosines, diffs = [], []
        for x, ref in zip(inputs, want):
            x = x[None].transpose(0, 2, 3, 1) if spec.layout == "NHWC" else x[None]
            have = backend.run({spec.name: np.ascontiguousarray(x)})
            result = compare(ref, [have[n] for n in art.outputs])
            cosines.append(result["cosine"])
            diffs.append(result["max_abs_diff"])
        out["artifacts"][art.key] = {"cosine_mean": float(np.mean(cosines)), "cosine_worst": float(np.min(cosines)),
                                     "max_abs_diff": float(max(diffs)), "mismatch": host_mismatch(art)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package")
    ap.add_argument("--calib", required=True, help="the calibration folder the package was converted with")
    ap.add_argument("--calib-size", type=int, required=True, help="the calibration images it used")
    ap.add_argument("--images", type=int, default=24, help="held-out images [24, as convert]")
    ap.add_argument("--artifacts", default="", help="artifact keys, comma-separated [every INT8 one]")
    ap.add_argument("--runner", help="an x86 emulator command [scripts/x86_avx2.sh's run-avx2, made in a temp dir]")
    ap.add_argument("--child", nargs=3, metavar=("TENSORS", "REFERENCE", "KEYS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        tensors, reference, keys = args.child
        print("AVX2-BENCH " + json.dumps(measure(args.package, tensors, reference, keys.split(","), None)))
        return

    from converters.calibration import CalibrationSet
    from edge_runtime.backends import open_artifact
    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(args.package)
    keys = [k for k in args.artifacts.split(",") if k] or [a.key for a in manifest.artifacts if a.precision == "int8"]
    calibration = CalibrationSet(args.calib, manifest.input, args.calib_size, progress=False)
    held_out = CalibrationSet(args.calib, manifest.input, args.images, exclude=calibration.used, progress=False)
    with tempfile.TemporaryDirectory(prefix="int8-avx2-") as tmp:
        tensors, reference = Path(tmp) / "tensors.npz", Path(tmp) / "fp32.npz"
        np.savez(tensors, tensors=np.concatenate(held_out.tensors))
        fp32 = manifest.artifact("onnx", "fp32")
        backend = open_artifact(manifest, fp32, 1)
        np.savez(reference, **{f"{i}_{j}": backend.run({manifest.input.name: x})[name]
                               for i, x in enumerate(held_out.tensors) for j, name in enumerate(fp32.outputs)})
        runner = args.runner
        if runner is None:
            made = subprocess.run(["bash", str(REPO / "scripts" / "x86_avx2.sh"), tmp], capture_output=True, text=True)
            if made.returncode:
                sys.exit(f"no x86 emulation here: {(made.stderr.strip().splitlines() or ['?'])[-1]}")
            runner = str(Path(tmp) / "run-avx2")
        native = measure(args.package, str(tensors), str(reference), keys, None)
        bf16 = [a.key for a in manifest.artifacts
                if a.key in keys and a.extra.get("inference_precision_hint") == "bf16"]
        native_f32 = measure(args.package, str(tensors), str(reference), bf16, "f32") if bf16 else {"artifacts": {}}
        proc = subprocess.run([*runner.split(), sys.executable, __file__, args.package, "--calib", args.calib,
                               "--calib-size", str(args.calib_size), "--child", str(tensors), str(reference),
                               ",".join(keys)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("AVX2-BENCH ")), None)
        if proc.returncode or line is None:
            sys.exit(f"the emulated run failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        emulated = json.loads(line.removeprefix("AVX2-BENCH "))
    print(f"native: {native['cpu']['cpu']} {native['cpu']['flags']}; emulated: {emulated['cpu']['cpu']} "
          f"{emulated['cpu']['flags']}; {len(held_out.tensors)} held-out images of {Path(args.calib).name}, "
          f"cosine vs FP32 ONNX (native) per image, lowest over outputs")
    print("| artifact | weight bits | measured on | native mean / worst | native in f32 | AVX2 mean / worst | "
          "auto on AVX2 |")
    print("|---|---:|---|---:|---:|---:|---|")
    for key in keys:
        art = next(a for a in manifest.artifacts if a.key == key)
        where = art.extra.get("fp32_agreement", {}).get("measured_on", {}).get("cpu", "-")
        n, e = native["artifacts"][key], emulated["artifacts"][key]
        f32 = native_f32["artifacts"].get(key)
        verdict = "left out" if e["mismatch"] else "may choose"
        print(f"| {key} | {art.extra.get('quantization', {}).get('weight_bits', '-')} | {where} | "
              f"{n['cosine_mean']:.4f} / {n['cosine_worst']:.4f} | "
              + (f"{f32['cosine_mean']:.4f} / {f32['cosine_worst']:.4f}" if f32 else "-")
              + f" | {e['cosine_mean']:.4f} / {e['cosine_worst']:.4f} | {verdict} |")


if __name__ == "__main__":
    main()
