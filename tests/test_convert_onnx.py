"""ONNX INT8 conversion, calibration sources, the convert CLI and --backend auto, on real models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from choice import shipped
from conftest import fixture_path

from edge_runtime import Detector
from edge_runtime.errors import BackendUnavailableError, SourceError
from edge_runtime.manifest import load_manifest, sha256_file

CALIB = "images/calib-coco-val2017"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def int8_packages(export, tmp_path_factory):
    """Copies of the NanoDet-Plus-m and YOLO-FastestV2 packages with an ONNX INT8 artifact (NNCF;
    32 calibration images for NanoDet-Plus-m, 64 for the smaller, more sensitive YOLO-FastestV2)."""
    pytest.importorskip("nncf")
    from converters.convert import convert_package

    out = {}
    for key in ("nanodet-plus-m", "yolo-fastestv2"):
        pkg = tmp_path_factory.mktemp("int8") / key
        shutil.copytree(export(key), pkg)
        convert_package(pkg, ["onnx"], ["int8"], calib=fixture_path(CALIB), calib_size=CALIB_SIZE[key],
                        int8_min_cosine=0)  # plain INT8 (the budget: test_int8_accuracy, test_autoselect_budget)
        out[key] = pkg
    return out


CALIB_SIZE = {"nanodet-plus-m": 32, "yolo-fastestv2": 64}
# (worst, mean) per-image cosine on the 24 held-out photos, plain INT8 (no accuracy budget), the recipe auto
# ships, the fused U8S8 graph for both (within RECIPE_COSINE_SLACK of NNCF's S8S8 one, and faster): measured
# NanoDet-Plus-m 0.987 / 0.993 (S8S8: 0.990 / 0.995), YOLO-FastestV2 0.957 / 0.991 (0.925 / 0.989); one
# crowded photo drags YOLO-FastestV2's worst down (tests/test_int8_accuracy.py covers the accuracy-aware path)
MIN_COSINE = {"nanodet-plus-m": (0.95, 0.985), "yolo-fastestv2": (0.8, 0.975)}


@pytest.mark.parametrize("key", ["nanodet-plus-m", "yolo-fastestv2"])
def test_onnx_int8_artifact_is_recorded_and_close_to_fp32(int8_packages, key):
    manifest = load_manifest(int8_packages[key])
    art = manifest.artifact("onnx", "int8")
    assert art.sha256 == sha256_file(manifest.root / art.file)
    quant = art.extra["quantization"]
    assert quant["format"] == "QDQ" and quant["quantizer"] == quant["recipe"]["chosen"] and quant["float_nodes"]
    assert activation_types(manifest.root / art.file) == quant["activations"] == GRAPH_TYPES[key, quant["quantizer"]]
    assert art.extra["calibration"] == {"source": "calib-coco-val2017", "kind": "folder", "images": CALIB_SIZE[key]}
    worst, mean = MIN_COSINE[key]
    agreement = art.extra["fp32_agreement"]
    assert agreement["cosine"] > worst and agreement["cosine_mean"] > mean, agreement
    assert agreement["checked_on"] == {"held_out_images": 24, "source": "calib-coco-val2017"}
    # the graph really holds integer weights: its file is well under the FP32 size
    assert (manifest.root / art.file).stat().st_size < 0.7 * (manifest.root / "model.onnx").stat().st_size
    if quant["quantizer"] == "nncf":  # its first Convs stay float as recorded: they read a float input in the file
        import onnx

        from converters.quantize_onnx import NNCF_FLOAT_FIRST_CONVS, first_convs, float_convs

        head = quant["float_first_convs"]
        assert set(head["convs"]) == set(first_convs(onnx.load(str(manifest.root / "model.onnx")),
                                                     NNCF_FLOAT_FIRST_CONVS))
        # the stem and stage2.0's first Convs (ShuffleNetV2 both), kept in float only as the better measured
        assert len(head["convs"]) == 5 and any("stage2.0" in name for name in head["convs"])
        assert head["kept"] == (head["with"] > head["without"]) and head["metric"] == "cosine"
        in_float = set(float_convs(onnx.load(str(manifest.root / art.file))))
        assert (set(head["convs"]) <= in_float) == head["kept"]
        if key == "nanodet-plus-m":  # measured 0.9954 against 0.9922
            assert head["kept"], head


def activation_types(path: Path) -> str:
    import onnx

    from converters.quantize_onnx import activation_types as read

    return read(onnx.load(str(path)))


# what each graph holds: ONNX Runtime's U8S8 graph is uint8 throughout; NNCF's recipe is int8, but a tensor that
# cannot be negative (after a Relu: YOLO-FastestV2, not NanoDet-Plus-m's LeakyRelu) it quantises to uint8
GRAPH_TYPES = {("nanodet-plus-m", "nncf"): "S8S8", ("nanodet-plus-m", "nncf-u8s8"): "U8S8",
               ("yolo-fastestv2", "nncf"): "U8S8+S8S8", ("yolo-fastestv2", "nncf-u8s8"): "U8S8"}


def test_onnx_int8_recipe_is_chosen_by_what_was_measured(int8_packages):
    """auto quantises with both NNCF recipes and ships the fastest on this host among those whose cosine is
    within RECIPE_COSINE_SLACK of the best (a more accurate one within SPEED_TIE of it ties and ships).
    NanoDet-Plus-m's fused U8S8 graph quantises each Conv before its LeakyRelu as well: measured 0.9928 against
    the S8S8 graph's 0.9954 (ONNX Runtime's own U8S8 graph: 0.905), within the slack, so the faster fused one
    ships with and without a budget (test_int8_accuracy)."""
    from converters.quantize_onnx import RECIPE_COSINE_SLACK

    for key, pkg in int8_packages.items():
        recipe = load_manifest(pkg).artifact("onnx", "int8").extra["quantization"]["recipe"]
        found = recipe["candidates"]
        assert set(found) == {"nncf", "nncf-u8s8"} and recipe["metric"] == "cosine", recipe
        assert recipe["measured_on"] == "24 held-out images"
        assert all("speed_vs_fp32" in c for c in found.values()), recipe  # no target: this host is the CPU
        best = max(c["cosine"] for c in found.values())
        eligible = [k for k, c in found.items() if c["cosine"] >= best - RECIPE_COSINE_SLACK]
        assert recipe["chosen"] == shipped(found, eligible, "speed_vs_fp32"), recipe
        assert recipe["activations"] == found[recipe["chosen"]]["activations"]
        assert found["nncf-u8s8"]["activations"] == "U8S8"
        if key == "nanodet-plus-m":
            assert found["nncf"]["cosine"] - 0.02 < found["nncf-u8s8"]["cosine"] < found["nncf"]["cosine"], recipe


def test_nncf_calibration_rewritten_for_ort_fusion(export, tmp_path):
    """fuse_for_ort: the rewrite of NNCF's per-tensor graph keeps its accuracy where it only restates grids (uint8
    zero points, Q/DQ after shuffle ops, int32 biases: YOLO-FastestV2's Convs feed Relus, so nothing else), and ONNX
    Runtime then runs nearly every quantised Conv as QLinearConv (NNCF's own graph: those after a Relu only)."""
    nncf = pytest.importorskip("nncf")
    import onnx
    import onnxruntime

    from converters.calibration import CalibrationSet
    from converters.qdq_fuse import fuse_for_ort
    from converters.quantize_onnx import _nncf_settings, activation_types, decode_tail_nodes, first_convs
    from edge_runtime.compare import compare

    pkg = export("yolo-fastestv2")
    manifest = load_manifest(pkg)
    model = onnx.load(str(pkg / "model.onnx"))
    calibration = CalibrationSet(fixture_path(CALIB), manifest.input, size=16, progress=False)
    name = manifest.input.name
    # the recipe's settings: MIXED (asymmetric activations: non-zero zero points to move), per-tensor activations
    settings, _ = _nncf_settings(per_tensor_activations=True, seven_bit_weights=False)
    quantized = nncf.quantize(
        model, nncf.Dataset(calibration.tensors, lambda t: {name: t}), subset_size=16,
        ignored_scope=nncf.IgnoredScope(names=decode_tail_nodes(model) + first_convs(model, 4)), **settings)
    fused, counts = fuse_for_ort(quantized, calibration.tensors, name)
    assert activation_types(fused) == "U8S8" and activation_types(quantized) != "U8S8"
    assert counts["conv_output_quantisers"] == 0 and counts["grid_quantisers"] > 0 and counts["int32_biases"] > 0

    def optimised(graph: onnx.ModelProto, path: Path) -> tuple[onnxruntime.InferenceSession, list[str]]:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 2
        options.optimized_model_filepath = str(path)
        session = onnxruntime.InferenceSession(graph.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        return session, [node.op_type for node in onnx.load(str(path)).graph.node]

    plain_session, plain_ops = optimised(quantized, tmp_path / "plain.onnx")
    fused_session, fused_ops = optimised(fused, tmp_path / "fused.onnx")
    producer = {out: node.op_type for node in quantized.graph.node for out in node.output}
    quantised_convs = sum(n.op_type == "Conv" and producer.get(n.input[1]) == "DequantizeLinear"
                          for n in quantized.graph.node)  # integer weights, whatever their input's path
    fused_convs = fused_ops.count("QLinearConv")
    assert plain_ops.count("QLinearConv") < 0.8 * fused_convs and fused_convs >= 0.9 * quantised_convs, \
        (plain_ops.count("QLinearConv"), fused_convs, quantised_convs)
    outputs = [o.name for o in fused_session.get_outputs()]
    fp32 = onnxruntime.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    for tensor in calibration.tensors[:4]:
        reference, plain, rewritten = (run.run(outputs, {name: tensor}) for run in (fp32, plain_session, fused_session))
        # not bit-exact: an int32 bias differs from the float one by under half its step, which flips the
        # rounding of the odd value sitting on a grid boundary (measured 0.9978-0.9995 between the two graphs)
        assert compare(plain, rewritten)["cosine"] > 0.995
        assert compare(reference, rewritten)["cosine"] > compare(reference, plain)["cosine"] - 0.002


def test_depthwise_input_equalisation_is_exact_in_float(export):
    """equalise_depthwise_inputs rescales NanoDet-Plus-m's Conv -> LeakyRelu -> depthwise Conv chains so each
    depthwise input's channels share one range, and the FP32 outputs do not move."""
    import onnx
    import onnxruntime

    from converters.calibration import CalibrationSet
    from converters.qdq_fuse import equalise_depthwise_inputs
    from edge_runtime.compare import compare

    pkg = export("nanodet-plus-m")
    manifest = load_manifest(pkg)
    model = onnx.load(str(pkg / "model.onnx"))
    images = CalibrationSet(fixture_path(CALIB), manifest.input, size=4, progress=False).tensors
    equalised, chains = equalise_depthwise_inputs(model, images, manifest.input.name)
    assert chains >= 10, chains
    changed = {i.name for i in model.graph.initializer} - {
        i.name for i, j in zip(model.graph.initializer, equalised.graph.initializer) if i == j}
    assert len(changed) >= 2 * chains  # both Convs of each chain
    runs = [onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            for m in (model, equalised)]
    outputs = [o.name for o in runs[0].get_outputs()]
    for tensor in images[:2]:
        found = compare(*(run.run(outputs, {manifest.input.name: tensor}) for run in runs))
        assert found["cosine"] > 0.99999 and found["max_abs_diff"] < 1e-3, found


def test_target_profile_sets_the_onnx_recipe_inputs(export, tmp_path):
    """The x86 profile (AVX2, no VNNI) asks for 7-bit weights in the U8S8 graph; the speed is timed
    only when this host is the profile's CPU, otherwise the more accurate recipe ships."""
    from types import SimpleNamespace

    from converters import Converter
    from converters.convert_job import host_cpu_target, saturation_unmeasured, target_options
    from converters.quantize_onnx import _reduce_range
    from edge_runtime.deploy.hostinfo import host_int8_saturates
    from edge_runtime.deploy.targets import conversion_plan, load_target
    from edge_runtime.hostfit import host_mismatch

    # 7 bits where u8 x s8 pairs saturate in 16 bits (AVX2), 8 where the kernels accumulate in 32;
    # a profile that does not say (edgetpu) gets the 7 that is right on every CPU
    for name, seven in {"x86": True, "x86-vnni": False, "arm64": False, "rpi4": False, "edgetpu": True}.items():
        settings = conversion_plan(target=load_target(name)).settings
        assert _reduce_range(SimpleNamespace(options={"target": name, **settings})) is seven, name
    assert _reduce_range(SimpleNamespace(options={"onnx_reduce_range": False, "target": "x86"})) is False
    # NNCF's graphs take 7 bits only for an x86 target whose saturation this host cannot measure: never for
    # another architecture or an accelerator, whatever their onnx_weight_bits says
    seven_here = host_int8_saturates() is not True
    for name in ("x86", "x86-vnni", "arm64", "rpi4", "edgetpu", "openvino-npu", "ort-qnn"):
        profile = load_target(name)
        options = {**conversion_plan(target=profile).settings, **target_options(profile)}
        assert saturation_unmeasured(options) is (name == "x86" and seven_here), name

    pkg = tmp_path / "yfv2"
    shutil.copytree(export("yolo-fastestv2"), pkg)
    manifest = Converter(pkg).to("onnx,openvino", "int8", fixture_path(CALIB), target="x86", calib_size=32,
                                 int8_min_cosine=0)
    art = manifest.artifact("onnx", "int8")
    recipe = art.extra["quantization"]["recipe"]
    here = host_cpu_target() == "x86"
    # NNCF's graphs too take 7-bit weights for x86 when this CPU cannot measure what 8 bits compute there
    # (it has VNNI); an AVX2 host measures its 8-bit graphs as the target computes them. Either way the
    # records hold on an AVX2 CPU (tests/test_x86_avx2.py measures why that matters)
    ov = manifest.artifact("openvino", "int8")
    assert ov.extra["quantization"]["weight_bits"] == (8 if here else 7)
    assert ov.extra["quantization"]["overflow_fix"] == ("first_layer" if here else "enable")
    assert ov.extra["inference_precision_hint"] == "f32"  # the profile's: these CPUs have no BF16
    # the fused U8S8 graph runs integer kernels: 7 bits for x86 whatever the host, as ort's graph
    assert art.extra["quantization"]["weight_bits"] == (8 if here and recipe["chosen"] == "nncf" else 7)
    haswell = {"cpu": "Intel Core i7-4770", "arch": "x86_64", "flags": ["avx2", "f16c", "fma"]}
    assert host_mismatch(art, haswell) is None and host_mismatch(ov, haswell) is None
    assert all(("speed_vs_fp32" in c) == here for c in recipe["candidates"].values()), recipe
    if not here:
        assert "speed not measured" in recipe["why"] and "target x86" in recipe["why"]
        chosen = recipe["candidates"][recipe["chosen"]]["cosine"]
        assert chosen == max(c["cosine"] for c in recipe["candidates"].values()), recipe


@pytest.mark.parametrize("key", ["nanodet-plus-m", "yolo-fastestv2"])
def test_int8_detections_agree_with_fp32(int8_packages, fixtures, key):
    """The issue's rule with INT8's score spread and NMS near-ties allowed for, as
    tests/test_int8_accuracy.py (tests/agreement.py INT8), on all 11 photos. Under the old rules
    YOLO-FastestV2 was only held to 9 of 11: on 000181 and giraffe INT8 keeps the other one of two
    overlapping boxes after NMS (a tie, explained now); on an Intel Xeon NanoDet-Plus-m's horses.jpg
    'horse 0.42' lost NMS to a neighbour in INT8. Measured here: matched scores within 0.094."""
    from agreement import int8_disagreements

    pkg = int8_packages[key]
    fp32, int8 = (Detector(pkg, backend="onnx", precision=p) for p in ("fp32", "int8"))
    for path in sorted(fixtures("images/samples").glob("*.jpg")):
        problems = int8_disagreements(fp32, int8, cv2.imread(str(path)))
        assert not problems, f"{key} int8 {path.name}: {problems}"


def test_tail_stays_float(int8_packages):
    import onnx

    model = onnx.load(str(int8_packages["nanodet-plus-m"] / "model_int8.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    producer = {o: n for n in model.graph.node for o in n.output}
    for output in model.graph.output:  # outputs come from float ops (Sigmoid / MatMul), not a DQ node
        assert producer[output.name].op_type not in ("DequantizeLinear", "QuantizeLinear")


def test_ort_quantizer_with_selectable_calibration_and_its_budget_search(export, tmp_path):
    """quantize_static with each calibration method; under a budget its plain graph misses (measured
    0.985 against 0.99), the fewest leading Convs go back to float until it holds, and those Convs
    really read float inputs in the saved graph."""
    import onnx

    from converters.convert import convert_package
    from converters.quantize_onnx import float_convs

    pkg = tmp_path / "yfv2"
    shutil.copytree(export("yolo-fastestv2"), pkg)
    for method, min_cosine in (("percentile", 0), ("minmax", 0.99)):
        manifest = convert_package(pkg, ["onnx"], ["int8"], calib=fixture_path(CALIB), calib_size=32,
                                   int8_min_cosine=min_cosine,
                                   options={"onnx_quantizer": "ort", "calib_method": method})
        art = manifest.artifact("onnx", "int8")
        quant = art.extra["quantization"]
        assert quant["calibration_method"] == method and quant["activations"] == "U8S8"
        assert art.extra["fp32_agreement"]["cosine_mean"] > 0.9, art.extra["fp32_agreement"]
    control = quant["accuracy_control"]
    assert control["met"] and control["after"] >= 0.99 - 1e-9 and control["before"] < 0.99, control
    assert control["float_layers"] and set(control["float_layers"]) <= set(
        float_convs(onnx.load(str(manifest.artifact_path(art))))), control
    assert art.extra["fp32_agreement"]["cosine_mean"] >= 0.99 - 1e-6


def _write_clip(path: Path, images: list[Path]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for image in images:
        writer.write(cv2.resize(cv2.imread(str(image)), (320, 240)))
    writer.release()


def test_calibration_from_folder_video_and_coco_json(export, tmp_path):
    from converters.calibration import CalibrationSet
    from edge_runtime.preprocess import ImagePreprocessor

    spec = load_manifest(export("yolo-fastestv2")).input
    folder = fixture_path(CALIB)
    images = sorted(folder.glob("*.jpg"))
    by_folder = CalibrationSet(folder, spec, size=10, progress=False)
    assert len(by_folder) == 10 and by_folder.describe()["kind"] == "folder"
    # same code path as the runtime: the first tensor is the runtime's preprocessing of the first image
    expected = ImagePreprocessor(spec)(cv2.imread(str(images[0])))[0]
    assert np.array_equal(by_folder.tensors[0], expected)
    clip = tmp_path / "clip.avi"
    _write_clip(clip, images[:30])
    by_video = CalibrationSet(clip, spec, size=10, progress=False)
    assert len(by_video) == 10 and by_video.describe() == {"source": "clip.avi", "kind": "video", "images": 10,
                                                            "every_kth_frame": 3}
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"images": [{"id": i, "file_name": str(p)} for i, p in enumerate(images[:5])],
                                "annotations": [], "categories": []}))
    assert len(CalibrationSet(coco, spec, size=10, progress=False)) == 5
    with pytest.raises(SourceError, match="nothing.json"):
        (tmp_path / "nothing.json").write_text("{}")
        CalibrationSet(tmp_path / "nothing.json", spec, progress=False)


def test_backend_auto_measures_once_and_caches(int8_packages):
    pkg = int8_packages["yolo-fastestv2"]
    (pkg / "autoselect.json").unlink(missing_ok=True)
    first = Detector(pkg, backend="auto")
    cache = json.loads((pkg / "autoselect.json").read_text())
    (entry,) = cache.values()
    assert set(entry["median_ms"]) == {"onnx-fp32", "onnx-int8"}
    assert first.artifact.key == entry["choice"] == min(entry["median_ms"], key=entry["median_ms"].get)
    entry["choice"] = "onnx-int8" if entry["choice"] == "onnx-fp32" else "onnx-fp32"
    (pkg / "autoselect.json").write_text(json.dumps(cache))
    assert Detector(pkg, backend="auto").artifact.key == entry["choice"]  # read from the cache, not re-measured
    assert Detector(pkg, backend="auto", precision="fp32").artifact.key == "onnx-fp32"


def test_missing_backend_library_message(export, tmp_path):
    """An artifact whose runtime is not installed: the message lists what is installed and the extra."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'openvino', 'ai_edge_litert', 'tflite_runtime'}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    pkg = tmp_path / "pkg"
    shutil.copytree(export("yolo-fastestv2"), pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    art = dict(manifest["artifacts"][0], format="openvino", precision="fp16", file="model.onnx")
    manifest["artifacts"].append(art)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", str(pkg), "--backend", "openvino",
                           "--source", str(fixture_path("images/samples/dog.jpg"))], capture_output=True, text=True,
                          env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "needs openvino" in line and "installed backends: onnx (onnxruntime" in line
    assert "pip install 'edge-runtime[openvino]'" in line
    with pytest.raises(BackendUnavailableError):  # and in-process, the same error type
        from edge_runtime.backends import open_backend

        open_backend(pkg / "model.onnx", "caffe", 1)
