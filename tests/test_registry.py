"""The backend and family registries are the only lists: everything else derives from them.

Checked two ways: no other module spells out the list of formats or precisions, and a backend or
family added to a (monkeypatched) registry is accepted by target profiles, convert's format check,
the layer profiler and the importer without any other edit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import edge_runtime.backends as backends
from converters.formats import CONVERTERS, check_formats, skip_reason
from edge_runtime.backends import (
    BACKENDS,
    Backend,
    all_precisions,
    default_precisions,
    formats,
    precisions,
    target_keys,
)
from edge_runtime.backends.layer_latency import profile_latency
from edge_runtime.deploy.targets import Target, conversion_plan, load_target
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.families import FAMILIES, ImportDefaults, importable_families
from edge_runtime.families.yolov8 import YoloV8Decoder
from edge_runtime.importer import import_model
from edge_runtime.manifest import BACKEND_KEYS

ROOT = Path(__file__).resolve().parents[1]
# the registry's own files may list formats and precisions (each backend declares its own)
REGISTRY = ROOT / "edge_runtime" / "backends"
FORMAT_LIST = re.compile(r"onnx[\"']?\s*,\s*[\"']?openvino[\"']?\s*,\s*[\"']?tflite")
PRECISION_LIST = re.compile(r"fp32[\"']?\s*,\s*[\"']?fp16[\"']?\s*,\s*[\"']?int8")


def test_no_module_outside_the_registry_lists_the_formats_or_precisions():
    spelled = []
    for folder in ("edge_runtime", "converters"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.parent == REGISTRY:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if FORMAT_LIST.search(line) or PRECISION_LIST.search(line):
                    spelled.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not spelled, "\n".join(spelled)


def test_registry_helpers_read_the_backend_classes():
    assert formats() == ("onnx", "openvino", "tflite", "ncnn")
    assert all_precisions() == backends.ALL_PRECISIONS == ("fp32", "fp16", "int8", "bf16")
    assert precisions("openvino") == ("fp32", "fp16", "bf16", "int8")
    # bf16 (OpenVINO) is made only when named: it needs a CPU with BF16 to be checked on
    assert default_precisions() == ("fp32", "fp16", "int8")
    assert conversion_plan().precisions == default_precisions()
    assert conversion_plan(precisions=["bf16"]).precisions == ("bf16",)
    with pytest.raises(EdgeRuntimeError, match="unknown artifact format 'rknn' .known: onnx, openvino, tflite, ncnn"):
        precisions("rknn")
    assert backends.profiled_formats() == ("onnx", "openvino")
    assert backends.import_formats() == {".onnx": "onnx", ".tflite": "tflite"}
    assert list(target_keys()) == ["execution_provider", "provider_options", "onnx_weight_bits", "openvino_device",
                                   "openvino_inference_precision", "delegate", "delegate_options", "tflite_io",
                                   "tflite_compiler"]
    # every option a backend reads is refused in a manifest, and so is every target key that becomes one
    for cls in BACKENDS.values():
        assert cls.option_keys <= BACKEND_KEYS
        assert {k.name for k in cls.target_keys if k.option} <= BACKEND_KEYS
    assert "tflite_io" not in BACKEND_KEYS  # a converter setting, not a backend option
    # an OpenVINO artifact records its verified hint under a key of its own, not the option's name
    assert "inference_precision_hint" not in BACKEND_KEYS and "verified_precision" in BACKEND_KEYS
    # Target has a field per declared key
    assert set(target_keys()) <= set(Target.__dataclass_fields__)


def test_host_tables_are_keyed_by_registered_names():
    from converters.compress.families import FAMILY_HOOKS

    assert set(CONVERTERS) <= set(formats())
    for fmt, converter in CONVERTERS.items():
        assert set(converter.functions) <= set(precisions(fmt)), fmt
    assert set(FAMILY_HOOKS) <= set(FAMILIES)
    assert skip_reason("onnx", "fp16").startswith("ONNX Runtime's CPU provider has no FP16 kernels")


class FakeNpuBackend(Backend):
    """A format nothing here can run: registered only to show what the registry alone decides."""

    name = "fake-npu"
    format = "fakenpu"
    precisions = ("int8",)
    libraries = (("edge_runtime_fake_npu", "edge-runtime-fake-npu"),)
    extra = "fakenpu"

    def run(self, inputs):
        raise AssertionError("never loaded")


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, FakeNpuBackend.format, FakeNpuBackend)


def _write_profile(tmp_path: Path, backends_line: str, precisions_line: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(f'name = "board"\narch = "aarch64"\nthreads = 2\nbackends = {backends_line}\n'
                    f'precisions = {precisions_line}\n')
    return path


def test_a_registered_backend_is_accepted_by_targets_and_convert(fake_backend, tmp_path, monkeypatch):
    profile = _write_profile(tmp_path, '["fakenpu", "onnx"]', '["int8"]')
    target = load_target(str(profile))
    assert target.backends == ("fakenpu", "onnx") and target.backend_options("fakenpu") == {}
    assert formats()[-1] == "fakenpu"
    # the device can run it, the host has no converter: one clear line, not a KeyError
    with pytest.raises(EdgeRuntimeError, match=r"no converter for format fakenpu .*convertible: onnx, openvino, "
                                               r"tflite"):
        check_formats(["onnx", "fakenpu"])
    from converters.formats import FormatConverter

    monkeypatch.setitem(CONVERTERS, "fakenpu", FormatConverter({"int8": "converters.fake:convert"}, ()))
    check_formats(["onnx", "fakenpu"])
    assert skip_reason("fakenpu", "fp16") == "the fakenpu backend does not run fp16"
    # no per-layer profiler declared: the generic reason
    with pytest.raises(EdgeRuntimeError, match="per-layer latency is not available for fakenpu"):
        profile_latency(tmp_path, backend="fakenpu")


def test_an_unregistered_backend_is_refused_everywhere(tmp_path):
    with pytest.raises(EdgeRuntimeError, match=r"unknown backend 'fakenpu' \(known: onnx, openvino, tflite, ncnn\)"):
        load_target(str(_write_profile(tmp_path, '["fakenpu"]', '["int8"]')))
    with pytest.raises(EdgeRuntimeError, match=r"unknown format \['fakenpu'\]; choose from onnx, openvino, tflite"):
        check_formats(["fakenpu"])
    with pytest.raises(EdgeRuntimeError, match="unknown backend 'fakenpu' for per-layer latency; choose one of "
                                               "onnx, openvino"):
        profile_latency(tmp_path, backend="fakenpu")
    with pytest.raises(EdgeRuntimeError, match=r"unknown precision 'fp8' \(known: fp32, fp16, int8, bf16\)"):
        load_target(str(_write_profile(tmp_path, '["onnx"]', '["fp8"]')))


def test_a_family_is_importable_when_it_declares_import_defaults(monkeypatch, tmp_path):
    assert importable_families() == ("yolox", "yolov5", "yolov8", "nanodet-plus", "ssd")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the family is checked first")
    with pytest.raises(EdgeRuntimeError, match=r"cannot import as family 'yolo11' \(importable: yolox, yolov5, "
                                               r"yolov8, nanodet-plus, ssd\)"):
        import_model(model, "yolo11", tmp_path / "pkg")

    class Yolo11Decoder(YoloV8Decoder):
        import_defaults = ImportDefaults("RGB", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "letterbox",
                                         {"strides": [8, 16, 32]}, {"score_threshold": 0.25, "nms_iou": 0.7})

    monkeypatch.setitem(FAMILIES, "yolo11", Yolo11Decoder)
    assert importable_families()[-1] == "yolo11"
    # accepted as a family: the next check is the model file itself
    with pytest.raises(EdgeRuntimeError, match="model.onnx: cannot load ONNX model"):
        import_model(model, "yolo11", tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
