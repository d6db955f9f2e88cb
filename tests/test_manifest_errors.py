"""A damaged package must fail with one clear, single-line error naming the file and the problem.

Every test corrupts a private copy of the exported NanoDet-Plus-m 416 package (``package_copy``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import Detector, load_manifest
from edge_runtime.errors import BackendUnavailableError, EdgeRuntimeError, ManifestError, ModelLoadError


def _edit(pkg: Path, change) -> Path:
    path = pkg / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))
    return path


def _setter(dotted: str, value):
    """A change for ``_edit`` that sets the manifest field ``dotted`` (e.g. "input.shape") to ``value``."""
    def put(data):
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value

    return put


def _error(exc_type, pkg: Path) -> str:
    """Open ``pkg`` with Detector, expect ``exc_type``; return its (single-line) message."""
    with pytest.raises(exc_type) as info:
        Detector(pkg)
    msg = str(info.value)
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    assert isinstance(info.value, EdgeRuntimeError)
    return msg


def test_untouched_copy_loads(package_copy):
    """Control: the copy itself is a valid package (so every failure below is the corruption's)."""
    det = Detector(package_copy)
    dets = det(np.full((240, 320, 3), 127, np.uint8))
    assert det.manifest.root == package_copy and len(dets) == 0


@pytest.mark.parametrize("dotted", ["input.mean", "input.shape", "model.class_names", "postprocess.nms_iou",
                                    "artifacts", "format_version"])
def test_missing_field(package_copy, dotted):
    def drop(data):
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        del node[leaf]

    manifest = _edit(package_copy, drop)
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg and f"'{dotted}'" in msg and "missing" in msg
    with pytest.raises(ManifestError):
        load_manifest(package_copy)


def test_missing_decoder_parameter(package_copy):
    manifest = _edit(package_copy, lambda d: d["decoder"].pop("strides"))
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg and "decoder.strides" in msg


@pytest.mark.parametrize("text", ['{"format_version": 1, "model": ', "not json at all", ""])
def test_invalid_json(package_copy, text):
    manifest = package_copy / "manifest.json"
    manifest.write_text(text)
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg and "JSON" in msg


def test_manifest_not_utf8(package_copy):
    manifest = package_copy / "manifest.json"
    manifest.write_bytes(b"\xff\xfe\x00garbage")
    assert str(manifest) in _error(ManifestError, package_copy)


def test_manifest_not_an_object(package_copy):
    manifest = package_copy / "manifest.json"
    manifest.write_text("[1, 2, 3]")
    assert str(manifest) in _error(ManifestError, package_copy)


def test_no_manifest_and_no_folder(package_copy, tmp_path):
    (package_copy / "manifest.json").unlink()
    assert "manifest.json" in _error(ManifestError, package_copy)
    missing = tmp_path / "does-not-exist"
    assert str(missing) in _error(ManifestError, missing)


# every number is finite and in range: NaN, negative, zero or absurd sizes fail at load, in one line
BAD_NUMBERS = [
    ("input.shape", [1, 3, -416, 416], ["input.shape", "positive"]),
    ("input.shape", [1, 3, 0, 416], ["input.shape"]),
    ("input.shape", [1, 3, 100000, 416], ["input.shape", "8192"]),
    ("input.mean", [float("nan"), 116.28, 123.675], ["NaN"]),
    ("input.std", [float("inf"), 57.12, 58.395], ["NaN or Infinity"]),
    ("decoder.strides", [0, 16, 32, 64], ["decoder.strides"]),
    ("decoder.strides", [8, 16, 32.5, 64], ["decoder.strides"]),
    ("decoder.strides", [], ["decoder.strides"]),
    ("decoder.reg_max", -1, ["decoder.reg_max"]),
    ("decoder.reg_max", 7.5, ["decoder.reg_max"]),
    ("decoder.center_offset", float("nan"), ["NaN"]),
    ("postprocess.score_threshold", 1.5, ["postprocess.score_threshold", "[0, 1]"]),
    ("postprocess.nms_iou", -0.1, ["postprocess.nms_iou"]),
    ("postprocess.max_detections", 0, ["postprocess.max_detections"]),
    ("postprocess.max_detections", 10**9, ["postprocess.max_detections"]),
    ("model.num_classes", 81, ["model.num_classes 81", "80"]),
    ("model.class_names", [], ["model.class_names"]),
]


@pytest.mark.parametrize("field, value, words", [
    ("input.mean", "0,0,0", ["input.mean", "wrong type"]),
    ("postprocess.max_detections", 1.5, ["postprocess.max_detections", "wrong type"]),
    ("postprocess.score_threshold", True, ["postprocess.score_threshold", "wrong type"]),
    ("input.resize", "squash", ["input.resize", "squash"]),
    ("input.color", "YUV", ["input.color"]),
    ("input.layout", "CHW", ["input.layout"]),
    ("input.shape", [3, 416, 416], ["input.shape"]),
    ("format_version", 99, ["format_version 99", "upgrade"]),
    ("artifacts", [], ["artifacts"]),
] + BAD_NUMBERS)
def test_malformed_field(package_copy, field, value, words):
    manifest = _edit(package_copy, _setter(field, value))
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg
    for word in words:
        assert word in msg, (word, msg)


def test_unknown_family(package_copy):
    manifest = _edit(package_copy, lambda d: d["model"].__setitem__("family", "yolov99"))
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg and "yolov99" in msg and "nanodet" in msg


def test_truncated_model_fails_checksum(package_copy):
    onnx_path = package_copy / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])
    msg = _error(ModelLoadError, package_copy)
    assert str(onnx_path) in msg and "checksum" in msg


def test_truncated_model_with_matching_checksum_fails_in_onnxruntime(package_copy):
    """The sha256 is updated to the truncated file, so the checksum passes and ORT must refuse it."""
    onnx_path = package_copy / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    _edit(package_copy, lambda d: d["artifacts"][0].__setitem__("sha256", digest))
    msg = _error(ModelLoadError, package_copy)
    assert str(onnx_path) in msg and "cannot load ONNX model" in msg


def test_missing_model_file(package_copy):
    onnx_path = package_copy / "model.onnx"
    onnx_path.unlink()
    msg = _error(ModelLoadError, package_copy)
    assert str(onnx_path) in msg and "missing" in msg


def test_input_shape_disagrees_with_model(package_copy):
    _edit(package_copy, lambda d: d["input"].__setitem__("shape", [1, 3, 320, 320]))
    msg = _error(ModelLoadError, package_copy)
    assert "model.onnx" in msg and "shape" in msg and "320" in msg and "416" in msg


def test_input_name_disagrees_with_model(package_copy):
    _edit(package_copy, lambda d: d["input"].__setitem__("name", "images"))
    msg = _error(ModelLoadError, package_copy)
    assert "model.onnx" in msg and "'images'" in msg


def test_outputs_disagree_with_model(package_copy):
    _edit(package_copy, lambda d: d["artifacts"][0].__setitem__("outputs", ["scores", "boxes"]))
    msg = _error(ModelLoadError, package_copy)
    assert "model.onnx" in msg and "boxes" in msg


def test_family_output_count_disagrees(package_copy):
    _edit(package_copy, lambda d: d["artifacts"][0].__setitem__("outputs", ["scores"]))
    msg = _error(ModelLoadError, package_copy)
    assert "model.onnx" in msg and "nanodet" in msg


def test_unknown_artifact_format(package_copy):
    _edit(package_copy, lambda d: d["artifacts"][0].__setitem__("format", "caffe"))
    msg = _error(BackendUnavailableError, package_copy)
    assert "caffe" in msg and "model.onnx" in msg and "no backend" in msg


def test_requested_artifact_absent(package_copy):
    for kwargs in ({"precision": "int8"}, {"backend": "ncnn"}):
        with pytest.raises(ManifestError) as info:
            Detector(package_copy, **kwargs)
        msg = str(info.value)
        assert "\n" not in msg and "manifest.json" in msg and "onnx-fp32" in msg


# ---------------------------------------------------------------- inconsistent values, caught at load

@pytest.mark.parametrize("field, value", [("shape", [1, 3, "abc", 416]), ("shape", [1, 3, None, 416]),
                                          ("mean", ["a", 116.28, 123.675])])
def test_non_numeric_input_values(package_copy, field, value):
    manifest = _edit(package_copy, lambda d: d["input"].__setitem__(field, value))
    assert str(manifest) in _error(ManifestError, package_copy)


def test_class_names_disagree_with_model(package_copy):
    _edit(package_copy, lambda d: d["model"].__setitem__("class_names", d["model"]["class_names"][:3]))
    _error((ManifestError, ModelLoadError), package_copy)


def test_decoder_strides_disagree_with_model(package_copy):
    _edit(package_copy, lambda d: d["decoder"].__setitem__("strides", [8, 16, 32]))
    _error((ManifestError, ModelLoadError), package_copy)


def test_layout_without_channel_axis(package_copy):
    manifest = _edit(package_copy, lambda d: d["input"].__setitem__("layout", "NHWC"))
    assert "3-channel" in _error(ManifestError, package_copy) and str(manifest) in _error(ManifestError, package_copy)


def test_non_positive_std(package_copy):
    _edit(package_copy, lambda d: d["input"].__setitem__("std", [0, 1, 1]))
    assert "input.std must be positive" in _error(ManifestError, package_copy)


# ---------------------------------------------------------------- packages from strangers are data, not code

def build_evil_library(folder: Path) -> tuple[Path, Path]:
    """A real shared object whose constructor creates ``marker`` when anything loads it (ctypes, a TFLite
    delegate): (library, marker). Skips where no C compiler is installed."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) to build the test's shared library")
    marker = folder / "loaded.marker"
    src = folder / "evil.c"
    src.write_text("#include <stdio.h>\n__attribute__((constructor)) static void run(void) {\n"
                   f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("pwned", f); fclose(f); }}\n}}\n')
    lib = folder / "evil.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True, timeout=60)
    return lib, marker


def test_evil_library_is_a_real_payload(tmp_path):
    """Control for the tests below: loading the library really runs its constructor."""
    import ctypes

    lib, marker = build_evil_library(tmp_path)
    ctypes.CDLL(str(lib))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("entry", [
    {"backend_options": {"delegate": "LIB"}},
    {"delegate": "LIB", "delegate_options": {}},
    {"backend_options": {"device": "QNNExecutionProvider", "provider_options": {"backend_path": "LIB"}}},
    {"profile_prefix": "/tmp/overwrite-me"},
    {"config": {"CACHE_DIR": "/tmp"}},
])
def test_artifact_cannot_name_backend_options(package_copy, tmp_path, entry):
    lib, marker = build_evil_library(tmp_path)
    (package_copy / "evil.so").write_bytes(lib.read_bytes())
    entry = json.loads(json.dumps(entry).replace("LIB", str(package_copy / "evil.so")))
    manifest = _edit(package_copy, lambda d: d["artifacts"][0].update(entry))
    msg = _error(ManifestError, package_copy)
    key = sorted(entry)[0]
    assert str(manifest) in msg and "'model.onnx'" in msg and f"'{key}'" in msg, msg
    with pytest.raises(ManifestError):
        load_manifest(package_copy)
    assert not marker.exists(), "the package's library was loaded"


def test_manifest_cannot_name_backend_options_at_top_level(package_copy):
    manifest = _edit(package_copy, lambda d: d.__setitem__("backend_options", {"delegate": "/x.so"}))
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg and "'backend_options'" in msg


@pytest.mark.parametrize("key, value, words", [
    ("file", "/etc/hostname", ["outside the package", "/etc/hostname"]),
    ("file", "../model.onnx", ["outside the package", "../model.onnx"]),
    ("file", "sub/../../model.onnx", ["outside the package"]),
    ("weights_file", "/etc/passwd", ["weights_file", "outside the package"]),
    ("compiled_file", "../model.onnx", ["compiled_file", "outside the package"]),
    ("file", "", ["not a plain relative file name"]),
])
def test_artifact_paths_stay_inside_the_package(package_copy, key, value, words):
    # a real model where '..' points, so only the path rule can stop the load
    (package_copy.parent / "model.onnx").write_bytes((package_copy / "model.onnx").read_bytes())
    manifest = _edit(package_copy, lambda d: d["artifacts"][0].__setitem__(key, value))
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg
    for word in words:
        assert word in msg, (word, msg)


@pytest.mark.parametrize("fields, words", [
    ({"compiled_file": "model_edgetpu.tflite"}, ["compiled_file 'model_edgetpu.tflite' without compiled_sha256"]),
    ({"compiled_file": "sub/model_edgetpu.tflite", "compiled_sha256": "0" * 64}, ["outside its folder"]),
])
def test_a_file_listed_beside_an_artifact_has_its_checksum_and_lies_beside_it(package_copy, fields, words):
    """A backend opens such a file beside the model file and checks it by the listed sha256: one without a
    checksum, or elsewhere than the backend looks, would be loaded unchecked."""
    (package_copy / "sub").mkdir()
    manifest = _edit(package_copy, lambda d: d["artifacts"][0].update(fields))
    msg = _error(ManifestError, package_copy)
    assert str(manifest) in msg
    for word in words:
        assert word in msg, (word, msg)


def test_symlinked_artifact_is_refused(package_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    (package_copy / "model.onnx").rename(outside)
    (package_copy / "model.onnx").symlink_to(outside)  # same bytes, same sha256: only the link rule stops it
    msg = _error(ManifestError, package_copy)
    assert "model.onnx" in msg and "symbolic link" in msg


def test_symlinked_manifest_is_refused(package_copy, tmp_path):
    outside = tmp_path / "manifest.json"
    (package_copy / "manifest.json").rename(outside)
    (package_copy / "manifest.json").symlink_to(outside)  # a valid manifest, read only through the link
    msg = _error(ManifestError, package_copy)
    assert "manifest.json" in msg and "symbolic link" in msg


def test_artifact_under_a_symlinked_folder_is_refused(package_copy, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (package_copy / "model.onnx").rename(outside / "model.onnx")
    (package_copy / "sub").symlink_to(outside)
    _edit(package_copy, lambda d: d["artifacts"][0].__setitem__("file", "sub/model.onnx"))
    msg = _error(ManifestError, package_copy)
    assert str(package_copy / "sub") in msg and "symbolic link" in msg


def test_manifest_save_never_writes_through_a_link(package_copy, tmp_path):
    from edge_runtime.errors import UnsafePathError

    manifest = load_manifest(package_copy)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (package_copy / "manifest.json").unlink()
    (package_copy / "manifest.json").symlink_to(victim)
    with pytest.raises(UnsafePathError) as info:
        manifest.save()
    assert "symbolic link" in str(info.value) and "\n" not in str(info.value)
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in package_copy.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_autoselect_cache_write_refuses_a_link_and_atomic_writes_leave_no_temp(tmp_path):
    from edge_runtime.fsutil import atomic_write_text

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "autoselect.json").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):  # autoselect treats it as an unwritable package
        atomic_write_text(tmp_path / "autoselect.json", "{}")
    assert victim.read_text() == "precious"
    atomic_write_text(tmp_path / "plain.json", "{}")
    atomic_write_text(tmp_path / "plain.json", '{"a": 1}')
    assert (tmp_path / "plain.json").read_text() == '{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autoselect.json", "plain.json", "victim.txt"]


@pytest.mark.parametrize("field, value", [
    ("verification", {"passed": False, "check": "x", "value": "bad", "threshold": 0.999}),
    ("verification", "oops"),
    ("verification", {"passed": "yes"}),
    ("parity_vs_torch", "oops"),
])
def test_malformed_check_records_are_a_failed_check_not_a_traceback(package_copy, field, value, caplog):
    """A hand-edited record cannot crash the runtime: the artifact counts as unverified, auto refuses
    it in one line, and naming it runs it with a warning."""
    def change(data):
        data["artifacts"][0].pop("verification", None)
        data["artifacts"][0][field] = value

    _edit(package_copy, change)
    art = load_manifest(package_copy).artifacts[0]
    assert not art.verified and "\n" not in art.verdict.describe()
    msg = _error(ModelLoadError, package_copy)
    assert "no verified artifact" in msg and "onnx-fp32" in msg, msg
    import logging

    with caplog.at_level(logging.WARNING):
        det = Detector(package_copy, backend="onnx", threads=1)
    assert det.artifact.key == "onnx-fp32"
    assert any("no passing check against FP32" in r.getMessage() for r in caplog.records)


def test_recorded_verdict_reads_back_as_written():
    from edge_runtime.compare import Verdict, judge

    failed = judge("int8", {"fp32_agreement": {"cosine": 0.99}, "quantization": {"accuracy_control": {
        "metric": "map", "met": False, "drop": 0.012, "max_drop": 0.005}}})
    assert not failed.passed and failed.describe().endswith("1.2, needs <= 0.5")
    assert Verdict.from_dict(failed.to_dict()) == failed
    passed = judge("fp16", {"fp32_agreement": {"cosine": 0.99995}})
    assert passed.passed and Verdict.from_dict(passed.to_dict()) == passed
