"""The bench scripts' own logic on real files (their timings are benchmarks, not tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("param, shape, outputs", [
    ("nanodet-plus-m/nanodet-plus-m_416.param", (1, 3, 416, 416), 8),
    ("yolo-fastestv2/yolo-fastestv2-opt.param", (1, 3, 352, 352), 2)])
def test_the_ncnn_reference_rows_run_every_output_of_the_official_files(param, shape, outputs):
    """The reference rows time the official ncnn files through the ncnn backend, which finds their input
    blob and every output blob in the .param and extracts them all."""
    pytest.importorskip("ncnn")
    path = fixture_path("weights", param)
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    stats = bench_module("int8_vs_fp32").ncnn_latency(str(path), data, 1, 1, 2)
    assert stats["median"] > 0
    from edge_runtime.backends import open_backend

    backend = open_backend(path, "ncnn", 1)
    assert len(backend.outputs) == outputs and backend.inputs[0].name not in {o.name for o in backend.outputs}
    for name, out in backend.run({backend.inputs[0].name: data}).items():
        assert out.size > 0 and np.isfinite(out).all(), name


def test_the_int8_ceiling_keeps_nothing_in_float(demo_package, tmp_path):
    """The ceiling INT8 quantises what every default recipe keeps in float (the first convolutions, the
    stem, the decode tail) and takes no accuracy budget: its speed is the most that fewer float layers can buy."""
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    import onnx
    import openvino as ov

    from converters.convert_openvino import float_convs as ir_float_convs
    from converters.demo_data import write_split
    from converters.formats import CONVERTERS
    from converters.quantize_onnx import FUSED_FLOAT_FIRST_CONVS, first_convs, float_convs
    from edge_runtime.errors import UsageError
    from edge_runtime.manifest import load_manifest

    fp32 = onnx.load(str(demo_package / "model.onnx"))
    stem = first_convs(fp32, 1)
    assert len(first_convs(fp32, FUSED_FLOAT_FIRST_CONVS)) > len(stem) == 1  # what the defaults keep in float
    write_split(tmp_path / "calib", "train", 40, progress=False)
    calib = tmp_path / "calib" / "train"
    ceiling = bench_module("int8_ceiling")
    with pytest.raises(UsageError, match="exists"):  # never into a folder that is there: nothing half-written
        ceiling.ceiling_package(demo_package, tmp_path, calib, 24, ["onnx"])
    formats = ["onnx", "openvino"] + ([] if CONVERTERS["tflite"].missing_libraries("int8") else ["tflite"])
    out, made, refused = ceiling.ceiling_package(demo_package, tmp_path / "ceiling", calib, 24, formats)
    assert made == formats, refused
    manifest = load_manifest(out)
    quant = {a.format: a.extra["quantization"] for a in manifest.artifacts if a.precision == "int8"}
    assert all("accuracy_control" not in q for q in quant.values())  # no budget: nothing went back to float

    assert float_convs(onnx.load(str(out / "model_int8.onnx"))) == []
    assert quant["onnx"]["float_nodes"] == [] and quant["onnx"]["float_first_convs"]["convs"] == []

    record = quant["openvino"]
    assert (record["ignored_tail_ops"], record["float_first_convs"], record["float_convs"]) == (0, 0, [])
    assert record["stem_quantized"]["convs"]
    ir = ov.Core().read_model(str(out / "model_openvino_int8.xml"))
    assert not any(name.startswith(stem[0]) for name in ir_float_convs(ir))  # a FakeQuantize before the stem

    if "tflite" in formats:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        assert quant["tflite"]["float_ops"] == "none (full integer)"
        interpreter = Interpreter(model_path=str(out / "model_int8.tflite"),  # no XNNPACK: the ops as written
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        tensors = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
        convs = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        assert convs and all(tensors[op["inputs"][0]] == np.int8 for op in convs)
