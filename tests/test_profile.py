"""profile: static per-layer counts from the exported graph (params, MACs, memory) against the published
figures and their own formulas, and per-layer latency from ONNX Runtime's and OpenVINO's profilers."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch", reason="the static profile exports the model with torch")
onnx = pytest.importorskip("onnx")

from converters.profile import format_profile_table, module_path, profile_model, profile_onnx
from edge_runtime.backends.layer_latency import format_latency_table, onnx_node, profile_latency
from edge_runtime.errors import EdgeRuntimeError

torch.set_num_threads(1)  # the test machine's cores are shared


@pytest.fixture(scope="module")
def profiles() -> dict:
    return {"nanodet-plus-m": profile_model("nanodet-plus-m", imgsz=320),
            "yolo-fastestv2": profile_model("yolo-fastestv2", imgsz=352)}


@pytest.fixture(scope="module")
def demo_ov_package(tmp_path_factory):
    """The demo-shapes package (bundled weights) with an OpenVINO FP32 IR beside its ONNX."""
    pytest.importorskip("openvino")
    from converters.convert import convert_package
    from converters.export_onnx import export_package

    out = tmp_path_factory.mktemp("profile") / "demo"
    export_package("demo-shapes", None, out)
    convert_package(out, ["openvino"], ["fp32"])
    return out


@pytest.mark.parametrize("model, params_m, gflops", [("nanodet-plus-m", 1.17, 0.9), ("yolo-fastestv2", 0.25, 0.212)])
def test_totals_match_the_published_figures(profiles, model, params_m, gflops):
    """NanoDet-Plus-m 320: 1.17 M params, 0.9 GFLOPs; YOLO-FastestV2 352: 0.25 M, 0.212 BFLOPs (within 5 %).
    The published params count the torch model (BatchNorm unfolded); the graph has BatchNorm folded into
    conv biases, one value per channel fewer, which stays within 5 % of it."""
    p = profiles[model]
    assert p.notes and "random-initialised" in p.notes[0]
    assert abs(p.torch_params / 1e6 - params_m) / params_m < 0.05, p.torch_params
    assert abs(p.flops / 1e9 - gflops) / gflops < 0.05, p.flops
    assert 0.95 * p.torch_params < p.params < p.torch_params


def test_layers_sum_to_totals_and_follow_the_formulas(profiles):
    p = profiles["nanodet-plus-m"]
    d = json.loads(json.dumps(p.to_dict()))
    assert d["totals"]["macs"] == sum(r["macs"] for r in d["layers"]) == p.macs
    assert d["totals"]["flops"] == 2 * p.macs
    assert d["totals"]["params"] == sum(r["params"] for r in d["layers"])
    assert sum(g["macs"] for g in d["groups"].values()) == p.macs
    # the deploy wrapper calls head.distribution_project itself: still grouped under the head
    assert set(d["groups"]) == {"backbone", "fpn", "head", "(top level)"}, d["groups"].keys()
    assert all(d["groups"][g]["macs"] > 0 for g in ("backbone", "fpn", "head"))
    for layer in p.layers:  # every tensor here is float32; a Split writes more outputs than its first
        assert layer.activation_bytes == math.prod(layer.output_shape) * 4 or layer.op_type == "Split", layer
    # peak live activations: more than the largest single output, less than all of them together
    assert max(r.activation_bytes for r in p.layers) < p.peak_activation_bytes < p.activation_bytes


def test_conv_rows_follow_the_formulas(demo_ov_package):
    """Depthwise and dense convs: MACs = Cout x H x W x Cin/groups x kh x kw, params = weights + bias."""
    path = demo_ov_package / "model.onnx"
    p = profile_onnx(path)
    graph = onnx.load(str(path))
    weights = {i.name: list(i.dims) for i in graph.graph.initializer}
    by_name = {layer.name: layer for layer in p.layers}
    checked, seen = set(), set()
    for node in graph.graph.node:
        if node.op_type != "Conv":
            continue
        cout, cin_per_group, kh, kw = weights[node.input[1]]
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        layer = by_name[node.name]
        _, c, h, w = layer.output_shape
        assert layer.macs == c * h * w * cin_per_group * kh * kw, node.name
        # YOLO-FastestV2's heads are shared by two levels: their weights count at the first reader only
        first_reader = node.input[1] not in seen
        seen.add(node.input[1])
        assert layer.params == (cout * cin_per_group * kh * kw + cout) * first_reader, node.name
        assert layer.activation_bytes == c * h * w * 4
        assert layer.memory_access_bytes == 4 * (math.prod(by_name[node.name].output_shape) + cout * (
            cin_per_group * kh * kw + 1)) + _input_bytes(p, node.input[0])
        checked.add("depthwise" if groups == c > 1 else "dense")
    assert checked == {"depthwise", "dense"}
    assert p.params == sum(math.prod(i.dims) for i in graph.graph.initializer if i.dims)


def _input_bytes(p, tensor: str) -> int:
    """Bytes of an activation: the output of the layer writing it, or the graph input."""
    producers = [layer for layer in p.layers if layer.name and tensor.startswith(layer.name + "_output_")]
    return producers[0].activation_bytes if producers else math.prod(p.input_shape) * 4


def test_module_paths_and_table(profiles):
    assert module_path("/model/backbone/stage2/stage2.0/branch_main/branch_main.0/Conv") == \
        "backbone.stage2.0.branch_main.0"
    assert module_path("/Concat") == "" and module_path("Conv_12") == ""
    # YOLO-FastestV2 runs its heads on two levels: the second call's '_1' scope maps back to the module
    yolo = profiles["yolo-fastestv2"]
    assert {"output_reg_layers", "output_obj_layers", "output_cls_layers"} <= set(yolo.groups())
    assert not any(g.endswith("_1") for g in yolo.groups())
    table = format_profile_table(yolo, top=5)
    lines = table.splitlines()
    assert "top 5 of" in lines[0] and lines[3].startswith("backbone.first_conv.0 ")  # the largest conv first
    assert "FLOPs 0.213 G" in table and "random-initialised" in table


def test_package_graph_profile_and_ort_latency(demo_ov_package):
    static = profile_onnx(demo_ov_package / "model.onnx")
    assert static.macs == json.loads((demo_ov_package / "manifest.json").read_text())["artifacts"][0]["macs"]
    macs = {layer.name: layer.macs for layer in static.layers}
    lat = profile_latency(demo_ov_package, "onnx", runs=5, warmup=2, threads=1)
    names = {r.name for r in lat.layers}
    convs = [layer.name for layer in static.layers if layer.op_type == "Conv"]
    assert convs and all(name in names for name in convs)
    assert all(r.ms >= 0 for r in lat.layers) and lat.total_ms > 0
    assert 0.2 * lat.end_to_end_ms < lat.total_ms < 1.5 * lat.end_to_end_ms, (lat.total_ms, lat.end_to_end_ms)
    d = json.loads(json.dumps(lat.to_dict(macs)))
    assert sum(r.get("macs", 0) for r in d["layers"]) == static.macs  # every conv joined once
    table = format_latency_table(lat, top=5, macs_by_node=macs)
    assert "GMAC/s" in table and "end to end" in table


def test_openvino_latency_joins_onnx_nodes(demo_ov_package):
    static = profile_onnx(demo_ov_package / "model.onnx")
    macs = {layer.name: layer.macs for layer in static.layers}
    lat = profile_latency(demo_ov_package, "openvino", runs=5, warmup=2, threads=1)
    assert lat.total_ms > 0 and lat.total_ms < 1.5 * lat.end_to_end_ms, (lat.total_ms, lat.end_to_end_ms)
    conv_rows = [r for r in lat.layers if r.op_type in ("Convolution", "GroupConvolution")]
    joined = {onnx_node(r.name, macs) for r in conv_rows}
    assert conv_rows and None not in joined  # '<onnx node>/WithoutBiases' maps back to the node
    assert joined == {layer.name for layer in static.layers if layer.op_type == "Conv"}


def test_tflite_and_unknown_backend_errors(demo_ov_package):
    with pytest.raises(EdgeRuntimeError, match="TFLite Python interpreter has no per-op profiler.*benchmark_model"):
        profile_latency(demo_ov_package, "tflite")
    with pytest.raises(EdgeRuntimeError, match="unknown backend 'tensorrt'"):
        profile_latency(demo_ov_package, "tensorrt")
    with pytest.raises(EdgeRuntimeError, match="no such package folder"):
        profile_latency(demo_ov_package / "missing", "onnx")
    with pytest.raises(EdgeRuntimeError, match="no such ONNX file"):
        profile_onnx(demo_ov_package / "missing.onnx")


def test_profile_cli_prints_both_tables_and_writes_json(demo_ov_package, tmp_path):
    from test_cli import assert_one_line_error, run_cli

    out = tmp_path / "profile.json"
    proc = run_cli("profile", str(demo_ov_package), "--backend", "openvino", "--runs", "3", "--top", "5",
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "layers by MACs (top 5 of" in proc.stdout and "per-layer latency of model_openvino_fp32.xml" in proc.stdout
    result = json.loads(out.read_text())
    static, latency = result["static"], result["latency"]
    assert static["totals"]["macs"] == sum(layer["macs"] for layer in static["layers"]) > 0
    assert latency["runs"] == 3 and latency["layers_total_ms"] > 0
    # OpenVINO's conv layers join the ONNX nodes of the static table, MACs included
    joined = [row for row in latency["layers"] if "macs" in row]
    assert joined and all(row["macs"] >= 0 for row in joined)
    assert_one_line_error(run_cli("profile"), "a package folder or --model", status=2)
