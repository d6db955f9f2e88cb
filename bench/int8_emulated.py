"""Does each artifact compute on another kind of CPU what convert measured? A package's artifacts run
natively and on emulated CPUs (qemu-user), each against FP32 ONNX run natively, on the held-out images
convert checked them on; with what ``hostfit.host_mismatch`` says of each there.

    python bench/int8_emulated.py PKG --calib path/to/calib-coco-val2017 --calib-size 64 \
        --cpus haswell,cortex-a72,cortex-a76

``--cpus``: ``haswell`` (x86 AVX2, no AVX-512/VNNI: scripts/x86_avx2.sh, this machine's own Python and
wheels), and any qemu aarch64 CPU model (``cortex-a72``, the Raspberry Pi 4's, no dot products;
``cortex-a76``, the Pi 5's, with them; ``max``: also i8mm, SVE and SME, under which qemu 7.2 runs
TFLite INT8 wrong), run by scripts/arm64_rootfs.sh's Debian arm64 Python with the aarch64 wheels (no
OpenVINO there: its artifacts are left out). ``--calib`` / ``--calib-size``: the ones the package was
converted with (the held-out images are the next ``--images`` of that folder, as convert picks them).
Emulation runs ~50x (x86 on an AMD host; FP32 ~5000x on an Intel one) to ~150x (arm64) slower than
native: a cosine table, never a timing. An OpenVINO INT8 recorded with bf16 is also run natively in f32,
since the emulated Haswell has no BF16 and runs it in f32: the two effects apart.
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
    from edge_runtime.backends import installed_backends, open_artifact
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
        if art.key not in keys or art.format not in installed_backends():
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


ARM64_SCRIPT = REPO / "scripts" / "arm64_rootfs.sh"
TAG = "EMULATED-BENCH "


def runner_for(cpu: str, tmp: str) -> tuple[list[str], dict[str, str]]:
    """The command prefix that runs a Python script on the emulated ``cpu``, and its environment."""
    if cpu == "haswell":
        made = subprocess.run(["bash", str(REPO / "scripts" / "x86_avx2.sh"), tmp], capture_output=True, text=True)
        if made.returncode:
            sys.exit(f"no x86 emulation here: {(made.stderr.strip().splitlines() or ['?'])[-1]}")
        return [str(Path(tmp) / "run-avx2"), sys.executable], {**os.environ, "PYTHONPATH": str(REPO)}
    cache = os.environ.get("EDGE_RUNTIME_ARM64_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-runtime" / "arm64"
    made = subprocess.run(["bash", str(ARM64_SCRIPT), str(cache)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    if made.returncode:
        sys.exit(f"no arm64 emulation here: {(made.stderr.strip().splitlines() or ['?'])[-1]}")
    return [str(Path(cache) / "run-arm64-python")], {**os.environ, "EDGE_RUNTIME_ARM64_CPU": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package")
    ap.add_argument("--calib", required=True, help="the calibration folder the package was converted with")
    ap.add_argument("--calib-size", type=int, required=True, help="the calibration images it used")
    ap.add_argument("--images", type=int, default=24, help="held-out images [24, as convert]")
    ap.add_argument("--artifacts", default="", help="artifact keys, comma-separated [every INT8 one]")
    ap.add_argument("--cpus", default="haswell", help="emulated CPUs, comma-separated [haswell]")
    ap.add_argument("--child", nargs=3, metavar=("TENSORS", "REFERENCE", "KEYS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        tensors, reference, keys = args.child
        print(TAG + json.dumps(measure(args.package, tensors, reference, keys.split(","), None)))
        return

    from converters.calibration import CalibrationSet
    from edge_runtime.backends import open_artifact
    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(args.package)
    keys = [k for k in args.artifacts.split(",") if k] or [a.key for a in manifest.artifacts if a.precision == "int8"]
    cpus = [c for c in args.cpus.split(",") if c]
    if not cpus:
        sys.exit("--cpus: name at least one emulated CPU")
    if unknown := [k for k in keys if k not in {a.key for a in manifest.artifacts}]:
        sys.exit(f"{args.package}: no artifact {', '.join(unknown)}")
    calibration = CalibrationSet(args.calib, manifest.input, args.calib_size, progress=False)
    held_out = CalibrationSet(args.calib, manifest.input, args.images, exclude=calibration.used, progress=False)
    emulated = {}
    with tempfile.TemporaryDirectory(prefix="int8-emulated-") as tmp:
        tensors, reference = Path(tmp) / "tensors.npz", Path(tmp) / "fp32.npz"
        np.savez(tensors, tensors=np.concatenate(held_out.tensors))
        fp32 = manifest.artifact("onnx", "fp32")
        backend = open_artifact(manifest, fp32, 1)
        np.savez(reference, **{f"{i}_{j}": backend.run({manifest.input.name: x})[name]
                               for i, x in enumerate(held_out.tensors) for j, name in enumerate(fp32.outputs)})
        native = measure(args.package, str(tensors), str(reference), keys, None)
        bf16 = [a.key for a in manifest.artifacts
                if a.key in keys and a.extra.get("inference_precision_hint") == "bf16"]
        native_f32 = measure(args.package, str(tensors), str(reference), bf16, "f32") if bf16 else {"artifacts": {}}
        for cpu in cpus:
            command, env = runner_for(cpu, tmp)
            proc = subprocess.run([*command, str(Path(__file__).resolve()), str(Path(args.package).resolve()),
                                   "--calib", args.calib, "--calib-size", str(args.calib_size), "--child",
                                   str(tensors), str(reference), ",".join(keys)],
                                  capture_output=True, text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)), None)
            if proc.returncode or line is None:
                sys.exit(f"the run on the emulated {cpu} failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-2000:]}")
            emulated[cpu] = json.loads(line.removeprefix(TAG))
    print(f"native: {native['cpu']['cpu']} {native['cpu']['flags']}; "
          + "; ".join(f"emulated {cpu}: {e['cpu']['cpu']} {e['cpu']['flags']}" for cpu, e in emulated.items())
          + f"; {len(held_out.tensors)} held-out images of {Path(args.calib).name}, cosine vs FP32 ONNX (native) "
          f"per image, lowest over outputs, mean / worst")
    print("| artifact | weight bits | measured on | native | native in f32 | "
          + " | ".join(emulated) + " | " + " | ".join(f"auto on {cpu}" for cpu in emulated) + " |")
    print("|---|---:|---|---:|---:|" + "---:|" * len(emulated) + "---|" * len(emulated))
    for key in keys:
        art = next(a for a in manifest.artifacts if a.key == key)
        where = art.extra.get("fp32_agreement", {}).get("measured_on", {}).get("cpu", "-")
        n, f32 = native["artifacts"].get(key), native_f32["artifacts"].get(key)
        if n is None:
            print(f"| {key} | not installed on this machine |")
            continue
        cells = [(e["artifacts"].get(key)) for e in emulated.values()]
        print(f"| {key} | {art.extra.get('quantization', {}).get('weight_bits', '-')} | {where} | "
              f"{n['cosine_mean']:.4f} / {n['cosine_worst']:.4f} | "
              + (f"{f32['cosine_mean']:.4f} / {f32['cosine_worst']:.4f}" if f32 else "-") + " | "
              + " | ".join(f"{c['cosine_mean']:.4f} / {c['cosine_worst']:.4f}" if c else "not installed"
                           for c in cells) + " | "
              + " | ".join(("left out" if c["mismatch"] else "may choose") if c else "-" for c in cells) + " |")


if __name__ == "__main__":
    main()
