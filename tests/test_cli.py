"""The `edge-runtime` command line as a user runs it: real packages, real images and video."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from agreement import assert_same_as_reference

from edge_runtime import Detections
from edge_runtime.cli import main
from edge_runtime.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = "images/samples"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, as a user's shell would start it."""
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, status: int = 1) -> None:
    """One ``error:`` line holding every needle, no traceback, exit ``status`` (1: a runtime failure,
    2: a usage error or a live source given up on)."""
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("error: "), proc.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def read_jsonl(path: Path) -> list[dict]:
    """``run --json``: one JSON object per line and frame."""
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("image", ["dog.jpg", "person.jpg", "horses.jpg", "000139.jpg"])
@pytest.mark.parametrize("model", ["nanodet-plus-m", "yolo-fastestv2"])
def test_run_json_equals_torch_reference(model, image, nanodet_plus_package, yolo_fastestv2_package, fixtures,
                                         tmp_path):
    reference_decode = pytest.importorskip("reference_decode")
    package, weights = {
        "nanodet-plus-m": (nanodet_plus_package, "weights/nanodet-plus-m/nanodet-plus-m_coco.ckpt"),
        "yolo-fastestv2": (yolo_fastestv2_package, "weights/yolo-fastestv2/coco2017-0.241078ap-model.pth"),
    }[model]
    path = fixtures(SAMPLES, image)
    out = tmp_path / "dets.jsonl"
    assert main(["run", str(package), "--source", str(path), "--json", str(out), "--show", "no"]) == 0
    (frame,) = read_jsonl(out)
    got = frame["detections"]
    ref = reference_decode.torch_reference_detections(model, package, fixtures(weights), cv2.imread(str(path)))
    assert len(got) > 0 and len(ref) > 0
    manifest = load_manifest(package)
    dets = Detections(np.array([d["box"] for d in got], np.float32), np.array([d["score"] for d in got], np.float32),
                      np.array([d["class_id"] for d in got], np.int32), manifest.class_names)
    assert_same_as_reference(ref, dets, manifest.postprocess, f"run --json {model} {image}")


def test_run_video_writes_annotated_video_and_stage_table(nanodet_plus_package, fixtures, tmp_path):
    video = fixtures("video/vtest.avi")
    summary = tmp_path / "summary.json"
    proc = run_cli("run", str(nanodet_plus_package), "--source", str(video), "--save", str(tmp_path / "out"),
                   "--json", str(tmp_path / "dets.jsonl"), "--max-frames", "12", "--summary-json", str(summary))
    assert proc.returncode == 0, proc.stderr
    for stage in ("read", "preprocess", "inference", "postprocess", "draw", "write"):
        assert stage in proc.stdout
    assert "FPS end to end" in proc.stdout
    report = json.loads(summary.read_text())
    assert report["frames"] == 12 and report["fps"] > 0
    assert report["stages_ms"]["inference"]["median"] > 0
    cap = cv2.VideoCapture(report["outputs"]["video"])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, frame = cap.read()
    assert ok and frame.shape == (576, 768, 3)
    frames = read_jsonl(tmp_path / "dets.jsonl")
    assert [f["index"] for f in frames] == list(range(12))
    assert report["source"] == "vtest.avi" and report["artifact"] == "model.onnx" and report["stopped"] == ""
    # pedestrians video: people are found in nearly every frame
    assert sum(any(d["label"] == "person" for d in f["detections"]) for f in frames) >= 10


def test_run_folder_saves_one_annotated_image_per_input(yolo_fastestv2_package, fixtures, tmp_path):
    folder = fixtures(SAMPLES)
    assert main(["run", str(yolo_fastestv2_package), "--source", str(folder), "--save", str(tmp_path)]) == 0
    inputs = sorted(p.stem for p in folder.glob("*.jpg"))
    assert sorted(p.stem for p in tmp_path.glob("*.jpg")) == inputs
    original, annotated = cv2.imread(str(folder / "dog.jpg")), cv2.imread(str(tmp_path / "dog.jpg"))
    assert annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original).mean() > 0.5  # boxes and labels were drawn


def test_bench_reports_every_artifact(nanodet_plus_package, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", str(nanodet_plus_package), "--iters", "5", "--warmup", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "model.onnx" in proc.stdout and "median ms" in proc.stdout
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["format"] == "onnx" and row["precision"] == "fp32"
    assert 0 < row["latency_ms"]["median"] <= row["latency_ms"]["p90"]
    # both timings present and positive; their ratio is a benchmark's business, not a unit test's
    assert row["end_to_end_ms"]["median"] > 0 and row["latency_ms"]["min"] > 0
    assert row["speedup_vs_baseline"] == pytest.approx(1.0)
    assert report["host"]["physical_cores"] >= 1


def test_export_cli_writes_a_package(fixtures, tmp_path):
    pytest.importorskip("torch")
    weights = fixtures("weights/yolo-fastestv2/coco2017-0.241078ap-model.pth")
    proc = run_cli("export", "--model", "yolo-fastestv2", "--weights", str(weights), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["input"]["shape"] == [1, 3, 352, 352]
    assert manifest["artifacts"][0]["parity_vs_torch"]["max_abs_diff"] < 1e-4


def test_export_errors_are_one_line(fixtures, tmp_path):
    pytest.importorskip("torch")
    weights = fixtures("weights/yolo-fastestv2/coco2017-0.241078ap-model.pth")
    assert_one_line_error(run_cli("export", "--model", "nanodet-plus-m", "--weights", str(weights),
                                  "--out", str(tmp_path)), str(weights), "nanodet-plus-m")
    assert_one_line_error(run_cli("export", "--model", "resnet", "--weights", str(weights), "--out", str(tmp_path)),
                          "unknown model", status=2)
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(run_cli("export", "--model", "yolo-fastestv2", "--weights", str(bogus),
                                  "--out", str(tmp_path / "pkg")), str(bogus))


def test_export_into_a_non_empty_folder_needs_force(tmp_path):
    """Refused before any work (no torch import, nothing written); --force writes the package there."""
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    assert_one_line_error(run_cli("export", "--model", "demo-shapes", "--out", str(tmp_path)),
                          str(tmp_path), "not empty", "--force", status=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert_one_line_error(run_cli("export", "--model", "demo-shapes", "--out", str(keep)), str(keep), "not a folder",
                          status=2)
    pytest.importorskip("torch")
    proc = run_cli("export", "--model", "demo-shapes", "--out", str(tmp_path), "--force")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "manifest.json").is_file() and keep.read_text() == "mine"


def test_run_never_loads_a_library_the_package_names(package_copy, fixtures, tmp_path):
    """A stranger's package asking for a TFLite delegate: one-line error, the library's code never runs."""
    from test_manifest_errors import build_evil_library

    lib, marker = build_evil_library(tmp_path)
    manifest_path = package_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["backend_options"] = {"delegate": str(lib)}
    manifest_path.write_text(json.dumps(manifest))
    proc = run_cli("run", str(package_copy), "--source", str(fixtures(SAMPLES, "dog.jpg")))
    assert_one_line_error(proc, str(manifest_path), "model.onnx", "'backend_options'")
    assert not marker.exists()


def test_bundle_refuses_a_symlink_inside_the_package(package_copy, tmp_path):
    """A linked secret must never ship: the bundle is refused before anything is built or written."""
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN PRIVATE KEY-----")
    (package_copy / "notes.txt").symlink_to(secret)
    out = tmp_path / "bundle.tar.gz"
    proc = run_cli("bundle", str(package_copy), "--target", "x86", "-o", str(out))
    assert_one_line_error(proc, str(package_copy / "notes.txt"), "symbolic link")
    assert not out.exists() and not list(tmp_path.glob(".bundle.tar.gz.*"))


def test_stream_credentials_stay_out_of_logs_and_errors(package_copy):
    from edge_runtime.urls import redact_url

    assert redact_url("rtsp://user:pw@cam/stream") == "rtsp://***@cam/stream"
    assert redact_url("http://u:p@host:8080/x?a=b@c") == "http://***@host:8080/x?a=b@c"
    assert redact_url("rtsp://admin:p@ss@10.0.0.5/s") == "rtsp://***@10.0.0.5/s"  # '@' in the password
    assert redact_url("http://cam/snap.cgi?user=a&pwd=secret&w=640") == "http://cam/snap.cgi?user=a&pwd=***&w=640"
    for plain in ("rtsp://cam/stream", "http://host/a@b", "0", "clip.mp4", "picam"):
        assert redact_url(plain) == plain
    with socket.socket() as closed:  # a port nothing listens on: the stream cannot be opened
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proc = run_cli("run", str(package_copy), "--source", f"http://admin:hunter2@127.0.0.1:{port}/video.mjpg")
    assert_one_line_error(proc, f"http://***@127.0.0.1:{port}/video.mjpg", "cannot be opened")
    assert "hunter2" not in proc.stderr + proc.stdout


def test_bad_inputs_give_one_line_errors(package_copy, fixtures, tmp_path):
    image = str(fixtures(SAMPLES, "dog.jpg"))
    # a non-image file
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_one_line_error(run_cli("run", str(package_copy), "--source", str(notes)), str(notes), "not a readable")
    # an image file that is not an image
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\x00" * 100)
    assert_one_line_error(run_cli("run", str(package_copy), "--source", str(fake)), str(fake))
    # a camera that does not exist
    assert_one_line_error(run_cli("run", str(package_copy), "--source", "7"), "camera 7")
    # a missing source
    assert_one_line_error(run_cli("run", str(package_copy), "--source", str(tmp_path / "nope.jpg")), "nope.jpg")
    # a manifest missing a field
    manifest_path = package_copy / "manifest.json"
    original = manifest_path.read_text()
    manifest = json.loads(original)
    del manifest["input"]["std"]
    manifest_path.write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("run", str(package_copy), "--source", image), str(manifest_path), "input.std")
    # a truncated model
    manifest_path.write_text(original)  # restore the manifest, then cut the model short
    model = package_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:4096])
    assert_one_line_error(run_cli("run", str(package_copy), "--source", image), str(model))
    assert_one_line_error(run_cli("bench", str(package_copy)), str(model))
    # not a package at all
    assert_one_line_error(run_cli("info", str(tmp_path)), "manifest.json")


def test_runtime_needs_no_torch_or_onnx(nanodet_plus_package, fixtures, tmp_path):
    """`run` in an interpreter where torch, onnx and tensorflow cannot be imported (as on a device)."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'onnx', 'tensorflow', 'converters', 'onnxslim'}:\n"
        "            raise ImportError(f'{name} is blocked: device-side test')\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    check = run_cli("info", str(nanodet_plus_package), env=env)
    assert check.returncode == 0, check.stderr
    proc = run_cli("run", str(nanodet_plus_package), "--source", str(fixtures(SAMPLES, "dog.jpg")),
                   "--json", str(tmp_path / "d.jsonl"), env=env)
    assert proc.returncode == 0, proc.stderr
    labels = {d["label"] for d in read_jsonl(tmp_path / "d.jsonl")[0]["detections"]}
    assert {"dog", "bicycle"} <= labels
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, **env},
                             capture_output=True, text=True)
    assert blocked.returncode != 0  # the blocker really blocks


def test_device_extra_pulls_no_host_libraries():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(deps: list[str]) -> list[str]:
        return sorted(dep.split(">")[0].split("=")[0].split("[")[0].strip().lower() for dep in deps)

    assert names(project["dependencies"]) == ["numpy", "opencv-python-headless"]
    assert names(extras["onnx"]) == ["onnxruntime"]
    assert names(extras["openvino"]) == ["openvino"]
    assert names(extras["tflite"]) == ["ai-edge-litert"]
    assert "torch==2.13.0" in extras["export"]  # the only torch anywhere, pinned ([convert] builds on [export])
    assert "edge-runtime[export]" in extras["convert"]
    assert not any("torch" in names(deps) for name, deps in extras.items() if name != "export")


def test_help_explains_every_command():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("export", "convert", "run", "bench", "targets", "info"):
        assert command in proc.stdout
    run_help = run_cli("run", "--help").stdout
    for flag in ("--source", "--save", "--json", "--show", "--threads", "--target", "--backend", "--device",
                 "--delegate"):
        assert flag in run_help
