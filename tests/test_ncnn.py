"""ncnn: pnnx conversion (FP32, FP16) and the runtime backend, on real models, held-out photos and the
official NanoDet-Plus-m ncnn files. No mocks.

Measured here (AMD EPYC Zen 4, ncnn 1.0.20261020, pnnx 20261020, 2 threads), against FP32 ONNX on the
sample photos: NanoDet-Plus-m max |diff| 2.4e-5 (FP32 and FP16: the official weights are fp16 values
already), YOLO-FastestV2 2.9e-6 (FP32) and 4.9e-3 (FP16 weights). The bounds below leave 40x (FP32)
and 4x (FP16) for other CPUs' kernels.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from agreement import assert_agree

pytest.importorskip("ncnn", reason="the ncnn tests need the ncnn wheel")
if importlib.util.find_spec("pnnx") is None:
    pytest.skip("converting to ncnn needs the pnnx wheel", allow_module_level=True)

from conftest import SAMPLES  # tests/ is on sys.path, see conftest

from converters.convert import convert_package
from converters.formats import skip_reason
from edge_runtime import Detector
from edge_runtime.backends import open_artifact, open_backend
from edge_runtime.backends.ncnn import NcnnBackend, cpu_has_fp16_arithmetic
from edge_runtime.errors import ManifestError, ModelLoadError
from edge_runtime.manifest import load_manifest

MODELS = {"nanodet-plus-m": "nanodet_plus_package", "yolo-fastestv2": "yolo_fastestv2_package"}
PRECISIONS = ("fp32", "fp16")
MAX_ABS_DIFF = {"fp32": 1e-3, "fp16": 2e-2}
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.9999}
CALIB = "images/calib-coco-val2017"
PHOTOS = ("000004.jpg", "dog.jpg", "person.jpg", "horses.jpg")


@pytest.fixture(scope="session")
def ncnn_packages(request, tmp_path_factory, fixtures):
    """``ncnn_packages(key)`` -> a private copy of the session package with ncnn fp32 and fp16 added,
    checked by convert on 8 held-out photos."""
    done: dict[str, Path] = {}

    def make(key: str) -> Path:
        if key not in done:
            package = tmp_path_factory.mktemp(f"ncnn-{key}") / "pkg"
            shutil.copytree(request.getfixturevalue(MODELS[key]), package)
            convert_package(package, ["ncnn"], list(PRECISIONS), calib=fixtures(CALIB), calib_size=1, val_size=8)
            done[key] = package
        return done[key]

    return make


@pytest.fixture(scope="session", params=list(MODELS))
def ncnn_package(request, ncnn_packages) -> Path:
    return ncnn_packages(request.param)


@pytest.fixture(scope="session")
def photos(read_image) -> list[np.ndarray]:
    return [read_image(name) for name in PHOTOS]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def test_manifest_lists_verified_ncnn_artifacts(ncnn_package):
    manifest = load_manifest(ncnn_package)
    for precision in PRECISIONS:
        art = manifest.artifact("ncnn", precision)
        assert art.verified, art.extra["verification"]
        assert art.file == f"model_ncnn_{precision}.param"
        assert art.extra["weights_file"] == f"model_ncnn_{precision}.bin"
        # fp16 arithmetic only where convert could check it (an ARMv8.2+ CPU); here x86: fp16 weights, fp32 maths
        assert art.extra["ncnn_fp16"] is (precision == "fp16" and cpu_has_fp16_arithmetic())
        assert art.extra["onnx_outputs"] == list(manifest.artifact("onnx", "fp32").outputs)
        agreement = art.extra["fp32_agreement"]
        assert agreement["checked_on"]["held_out_images"] == 8
        assert agreement["cosine"] >= MIN_COSINE[precision] and agreement["max_abs_diff"] <= MAX_ABS_DIFF[precision]
        # the Input layer states the shape it was converted for
        first = (ncnn_package / art.file).read_text().splitlines()[2].split()
        assert first[0] == "Input" and f"0={manifest.input.shape[3]}" in first and "2=3" in first
    fp32_bin = (ncnn_package / "model_ncnn_fp32.bin").stat().st_size
    assert (ncnn_package / "model_ncnn_fp16.bin").stat().st_size < 0.6 * fp32_bin


def test_raw_outputs_match_fp32_onnx_on_photos(ncnn_package, photos):
    manifest = load_manifest(ncnn_package)
    reference = Detector(ncnn_package, backend="onnx", precision="fp32", threads=2)
    tensors = [reference.preprocess(image)[0].copy() for image in photos]
    for precision in PRECISIONS:
        art = manifest.artifact("ncnn", precision)
        backend = open_artifact(manifest, art, 2)
        for name, tensor in zip(PHOTOS, tensors):
            want = reference.infer(tensor)
            have = backend.run({"in0": tensor})
            for role, expected, blob in zip(manifest.artifact("onnx", "fp32").outputs, want, art.outputs):
                got = have[blob]
                assert got.shape == expected.shape, (precision, role, got.shape, expected.shape)
                diff = float(np.abs(got - expected).max())
                assert diff <= MAX_ABS_DIFF[precision], f"{precision} {name} {role}: max |diff| {diff:.3g}"
                assert cosine(got, expected) >= MIN_COSINE[precision], f"{precision} {name} {role}"


def test_detections_agree_with_onnx(ncnn_package, photos):
    reference = Detector(ncnn_package, backend="onnx", precision="fp32", threads=2)
    for precision in PRECISIONS:
        det = Detector(ncnn_package, backend="ncnn", precision=precision, threads=2)
        assert det.backend.describe().startswith("ncnn ")
        found = 0
        for name, image in zip(PHOTOS, photos):
            want, have = reference(image), det(image)
            assert_agree(want, have, f"ncnn {precision} {name}")
            found += len(have)
        assert found >= len(PHOTOS), f"ncnn {precision}: only {found} detections on {len(PHOTOS)} photos"


def test_cli_runs_the_ncnn_artifact(ncnn_packages, fixtures):
    package = ncnn_packages("nanodet-plus-m")
    photo = fixtures(SAMPLES, "000004.jpg")
    lines = {}
    for backend in ("onnx", "ncnn"):
        proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", str(package), "--backend", backend,
                               "--precision", "fp32", "--source", str(photo), "--json", "-"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        lines[backend] = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    want, have = lines["onnx"]["detections"], lines["ncnn"]["detections"]
    assert [d["label"] for d in have] == [d["label"] for d in want] and len(want) >= 5
    for a, b in zip(want, have):
        assert max(abs(x - y) for x, y in zip(a["box"], b["box"])) <= 0.5 and abs(a["score"] - b["score"]) <= 1e-3


def test_decode_tail_matmul_becomes_a_gemm(ncnn_packages):
    """NanoDet's distribution integral runs as a Gemm: ncnn's broadcasting MatMul took half the backbone's time
    (converters/convert_ncnn.py). The export writes it as a product by a (bins, 1) matrix already, so the
    converter's rewrite of a MatMul by a constant vector (an imported model's integral) finds none there."""
    nanodet = load_manifest(ncnn_packages("nanodet-plus-m")).artifact("ncnn", "fp32")
    assert nanodet.extra["converter"]["matmul_vectors_as_gemm"] == 0
    param = ncnn_packages("nanodet-plus-m") / nanodet.file
    layers = [line.split()[0] for line in param.read_text().splitlines()[2:]]
    assert "Gemm" in layers and "MatMul" not in layers
    yolo = load_manifest(ncnn_packages("yolo-fastestv2")).artifact("ncnn", "fp32")
    assert yolo.extra["converter"]["matmul_vectors_as_gemm"] == 0


def test_tampered_or_misnamed_weights_are_refused(ncnn_packages, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(ncnn_packages("yolo-fastestv2"), package)
    manifest_path = package / "manifest.json"
    original = manifest_path.read_text()
    # the weights the backend loads must be the file the manifest checksums
    data = json.loads(original)
    art = next(a for a in data["artifacts"] if a["format"] == "ncnn" and a["precision"] == "fp32")
    fp16 = next(a for a in data["artifacts"] if a["format"] == "ncnn" and a["precision"] == "fp16")
    own = art["weights_file"], art["weights_sha256"]
    art["weights_file"], art["weights_sha256"] = fp16["weights_file"], fp16["weights_sha256"]
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="must list its weights as weights_file 'model_ncnn_fp32.bin'"):
        load_manifest(package)
    del art["weights_file"], art["weights_sha256"]
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="must list its weights"):
        load_manifest(package)
    art["weights_file"], art["weights_sha256"] = own
    onnx = next(a for a in data["artifacts"] if a["format"] == "onnx")
    onnx["weights_file"], onnx["weights_sha256"] = fp16["weights_file"], fp16["weights_sha256"]
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="its onnx backend loads no weights file"):
        load_manifest(package)
    # a format this version has no backend for is never loaded: its fields are not judged
    del onnx["weights_file"], onnx["weights_sha256"]
    data["artifacts"].append({**fp16, "format": "rknn", "file": "model.rknn"})
    manifest_path.write_text(json.dumps(data))
    load_manifest(package)
    # one byte of the weights changed: refused by its checksum before ncnn reads it
    manifest_path.write_text(original)
    weights = package / "model_ncnn_fp32.bin"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match=r"model_ncnn_fp32\.bin: checksum mismatch"):
        Detector(package, backend="ncnn", precision="fp32")


def test_malformed_files_are_one_line_errors(tmp_path):
    param = tmp_path / "model.param"
    param.write_text("not a param\n")
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"model\.param: not an ncnn param file") as err:
        open_backend(param, "ncnn", 1)
    assert "\n" not in str(err.value)
    param.write_text("7767517\n1 1\nInput in0 0 1 in0 0=x\n")
    with pytest.raises(ModelLoadError, match="line 3: malformed Input layer"):
        open_backend(param, "ncnn", 1)
    (tmp_path / "model.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.bin: the weights of model\.param are missing"):
        open_backend(param, "ncnn", 1)
    (tmp_path / "model.bin").write_bytes(b"")
    for size in ("0=0 1=8 2=3", "0=-5 1=8 2=3", "0=40000 1=40000 2=3000"):  # before any allocation or run
        param.write_text(f"7767517\n1 1\nInput in0 0 1 in0 {size}\n")
        with pytest.raises(ModelLoadError, match=r"line 3: Input size .* outside 1\.\.8192"):
            open_backend(param, "ncnn", 1)


def test_a_first_layer_working_in_place_leaves_the_callers_array_alone(tmp_path):
    """ncnn runs ReLU in place on its input blob: the backend hands it a copy (a borrowed numpy buffer
    crashed the process)."""
    param = tmp_path / "relu.param"
    param.write_text("7767517\n2 2\nInput in0 0 1 in0 0=4 1=3 2=2\nReLU relu 1 1 in0 out0\n")
    (tmp_path / "relu.bin").write_bytes(b"")
    backend = open_backend(param, "ncnn", 1)
    assert backend.inputs[0].shape == (1, 2, 3, 4) and backend.outputs[0].shape == (1, 2, 3, 4)
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(1, 2, 3, 4)
    before = x.copy()
    out = backend.run({"in0": x})["out0"]
    np.testing.assert_array_equal(out, np.maximum(before, 0))
    np.testing.assert_array_equal(x, before)


def test_fp16_arithmetic_only_as_recorded_and_where_the_cpu_has_it(ncnn_packages):
    assert NcnnBackend.recorded_options({"ncnn_fp16": True}) == {"fp16_compute": True}
    assert NcnnBackend.recorded_options({"ncnn_fp16": "yes"}) == {} == NcnnBackend.recorded_options({})
    param = ncnn_packages("yolo-fastestv2") / "model_ncnn_fp16.param"
    for asked in (False, True):
        opt = open_backend(param, "ncnn", 1, {"fp16_compute": asked}).net.opt
        flags = {opt.use_fp16_storage, opt.use_fp16_packed, opt.use_fp16_arithmetic}
        assert flags == {asked and cpu_has_fp16_arithmetic()}, (asked, flags)


def test_outputs_map_by_name_when_the_graph_lists_them_in_another_order(ncnn_packages, tmp_path):
    """pnnx numbers outputs in the ONNX graph's order; the manifest lists them in the family's role order."""
    import onnx

    from edge_runtime.manifest import sha256_file

    package = tmp_path / "pkg"
    shutil.copytree(ncnn_packages("yolo-fastestv2"), package)
    model = onnx.load(str(package / "model.onnx"))
    outputs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend(reversed(outputs))
    onnx.save(model, str(package / "model.onnx"))
    data = json.loads((package / "manifest.json").read_text())
    data["artifacts"] = [a for a in data["artifacts"] if a["format"] == "onnx"]
    data["artifacts"][0]["sha256"] = sha256_file(package / "model.onnx")
    (package / "manifest.json").write_text(json.dumps(data))
    manifest = convert_package(package, ["ncnn"], ["fp32"])
    art = manifest.artifact("ncnn", "fp32")
    assert art.outputs == ("out1", "out0") and art.verified
    assert art.extra["fp32_agreement"]["cosine"] >= MIN_COSINE["fp32"]


def test_int8_made_by_ncnn_tools_runs(fixtures, read_image):
    """convert has no ncnn INT8 (ncnn2int8 is in no wheel), but the backend runs one made with ncnn's tools:
    the official NanoDet-Plus-m 416 INT8 files against their FP32 twin on a photo."""
    import cv2

    assert "ncnn2int8" in skip_reason("ncnn", "int8")
    folder = fixtures("weights", "nanodet-plus-m")
    image = cv2.resize(read_image("000004.jpg"), (416, 416)).astype(np.float32)
    tensor = ((image - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395]).transpose(2, 0, 1)[None]
    tensor = np.ascontiguousarray(tensor, dtype=np.float32)
    fp32 = open_backend(folder / "nanodet-plus-m_416.param", "ncnn", 2)
    int8 = open_backend(folder / "nanodet-plus-m_416_int8.param", "ncnn", 2)
    assert fp32.inputs[0].name == "data" and fp32.inputs[0].shape == (1, "c", "h", "w")
    want, have = fp32.run({"data": tensor}), int8.run({"data": tensor})
    assert set(want) == set(have) and {"cls8", "dis8", "cls64", "dis64"} <= set(want)
    # measured on 3 photos: box logits (dis) 0.980-0.997, class scores after sigmoid (cls) 0.936-0.997
    for name in want:
        assert have[name].shape == want[name].shape
        floor = 0.95 if name.startswith("dis") else 0.9
        assert cosine(have[name], want[name]) >= floor, (name, cosine(have[name], want[name]))


def test_a_package_named_by_a_relative_path_converts(ncnn_packages, tmp_path, monkeypatch):
    """pnnx runs in its own working folder: the paths it is given must not be relative to ours (the demo's
    package is demo_out/package)."""
    shutil.copytree(ncnn_packages("yolo-fastestv2"), tmp_path / "pkg")
    monkeypatch.chdir(tmp_path)
    manifest = convert_package(Path("pkg"), ["ncnn"], ["fp32"])
    assert manifest.artifact("ncnn", "fp32").verified
