"""The wheel as a user gets it: built from this tree, installed into a fresh venv with the device extra, it runs
a prebuilt package; with the host extras added (torch first, pinned) it exports the bundled demo model from the
wheel's own files. One venv for both halves, versions from requirements/lock.txt, pip's local wheels only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import Detector
from edge_runtime.deploy.bundle import build_wheel

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
HOST_ONLY = {"torch", "onnx", "onnxslim", "tensorflow", "openvino", "nncf"}
# pip's words when a requirement is not on this machine (no index reachable): a skip, not a failure
OFFLINE = ("Could not find a version", "No matching distribution", "connection", "Network is unreachable",
           "Temporary failure in name resolution")


def clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH: the venv must see only what was installed into it (with the
    source tree on the path, pip would even take edge-runtime as installed already)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def pip_install(python: Path, *requirements: str) -> None:
    """``pip install`` into the venv of ``python`` with this interpreter's pip (no pip inside the venv needed),
    constrained to the lock; skips the test when a requirement is not available offline."""
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-input",
                           "-c", str(LOCK), *requirements], capture_output=True, text=True, timeout=600,
                          env=clean_env())
    if proc.returncode != 0 and any(word in proc.stderr for word in OFFLINE):
        pytest.skip(f"pip cannot install {' '.join(requirements)} offline: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]


def installed(python: Path) -> set[str]:
    listed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "list", "--format=json"],
                            capture_output=True, text=True, check=True, env=clean_env()).stdout
    return {p["name"].lower() for p in json.loads(listed)}


def away_from_the_source(program: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A program of the venv, run outside this source tree."""
    return subprocess.run([str(program), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=clean_env())


def run_tool(venv_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The venv's own ``edge-runtime`` script."""
    return away_from_the_source(venv_dir / "bin" / "edge-runtime", *args, cwd=cwd)


def detections(jsonl: Path) -> list[dict]:
    return json.loads(jsonl.read_text().splitlines()[0])["detections"]


def assert_same_detections(got: list[dict], want: list[dict]) -> None:
    assert [d["label"] for d in got] == [d["label"] for d in want]
    assert np.allclose([d["box"] for d in got], [d["box"] for d in want], atol=0.05)


def lock_version(name: str) -> str:
    return next(line.split("==")[1].strip() for line in LOCK.read_text().splitlines()
                if line.lower().startswith(f"{name.lower()}=="))


def test_wheel_runs_a_package_then_exports_the_bundled_model(demo_package, tmp_path):
    from converters.demo_data import make_image

    started = time.perf_counter()
    wheel = build_wheel(tmp_path / "build")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "converters/assets/yolo-fastestv2-shapes.pth" in names  # every package-data asset ships
    shipped = {Path(n).name for n in names if "/data/share/edge-runtime/targets/" in n}
    assert shipped == {p.name for p in (REPO / "targets").glob("*.toml")}
    assert "License-Expression: Apache-2.0" in metadata and any(n.endswith("/licenses/LICENSE") for n in names)
    assert 'Requires-Dist: pyyaml>=6; extra == "validate"' in metadata

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    image = tmp_path / "shapes.png"
    assert cv2.imwrite(str(image), make_image(0, "val", 0)[0])

    # device half: numpy, OpenCV, ONNX Runtime; a package made on the host runs
    pip_install(python, f"{wheel}[onnx]")
    assert not installed(python) & HOST_ONLY, installed(python) & HOST_ONLY
    where = away_from_the_source(python, "-c", "import edge_runtime; from edge_runtime.deploy.targets import "
                                 "available_targets; print(edge_runtime.__file__); print(available_targets()['x86'])",
                                 cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(env_dir) for p in where), where  # the installed copy and its profiles
    run = run_tool(env_dir, "run", str(demo_package), "--source", str(image), "--json", str(tmp_path / "a.jsonl"),
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    want = Detector(demo_package, backend="onnx")(image).to_json()["detections"]
    assert len(want) > 0
    assert_same_detections(detections(tmp_path / "a.jsonl"), want)

    # host half: torch first (pinned), then the export extra; the weights come from the wheel
    pip_install(python, "torch==2.13.0")
    pip_install(python, f"{wheel}[onnx,export]")
    export = run_tool(env_dir, "export", "--model", "demo-shapes", "--out", "pkg", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert str(env_dir) in export.stderr and "yolo-fastestv2-shapes.pth" in export.stderr  # the wheel's copy
    run = run_tool(env_dir, "run", "pkg", "--source", str(image), "--json", str(tmp_path / "b.jsonl"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert_same_detections(detections(tmp_path / "b.jsonl"), want)

    # TFLite conversion needs onnx2tf, which no extra can carry: the error names the second install step
    tflite = run_tool(env_dir, "convert", "pkg", "--to", "tflite", "--precisions", "fp32", cwd=tmp_path)
    step = re.search(r"pip install --no-deps onnx2tf==(\S+) tf-keras==(\S+) ", tflite.stderr)
    assert tflite.returncode == 1 and step, tflite.stderr
    assert step.groups() == (lock_version("onnx2tf"), lock_version("tf_keras"))
    print(f"wheel build + fresh venv + both halves: {time.perf_counter() - started:.0f} s")
