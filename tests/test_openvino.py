"""OpenVINO: IR conversion (FP32, FP16, INT8 through NNCF) and the runtime backend, on real models,
real calibration photos and real sample images. No mocks.

Each model is converted once per session, in a private copy of the shared session package.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from agreement import unmatched
from choice import shipped

pytest.importorskip("openvino", reason="the OpenVINO tests need openvino")

from conftest import PACKAGES, SAMPLES  # tests/ is on sys.path, see conftest

from converters.convert_openvino import BF16_MIN_SPEEDUP, int8_inference_precision
from edge_runtime import Detector
from edge_runtime.backends import open_artifact, open_backend
from edge_runtime.compare import MIN_WORST_COSINE
from edge_runtime.errors import EdgeRuntimeError, ModelLoadError
from edge_runtime.manifest import load_manifest, sha256_file

MODELS = {"nanodet-plus-m": "nanodet_plus_package", "yolo-fastestv2": "yolo_fastestv2_package"}
PRECISIONS = ("fp32", "fp16", "int8")
CALIB = "images/calib-coco-val2017"
CALIB_SIZE = 32


@pytest.fixture(scope="session")
def ov_packages(request, tmp_path_factory, fixtures):
    """``ov_packages(key)`` -> a private copy of the session package with openvino fp32/fp16/int8 added."""
    done: dict[str, Path] = {}

    def make(key: str) -> Path:
        if key not in done:
            pytest.importorskip("nncf", reason="OpenVINO INT8 conversion needs nncf")
            from converters.convert import convert_package

            source = request.getfixturevalue(MODELS[key])
            calib = fixtures(CALIB)
            package = tmp_path_factory.mktemp(f"ov-{key}") / "pkg"
            shutil.copytree(source, package)
            convert_package(package, ["openvino"], list(PRECISIONS), calib=calib, calib_size=CALIB_SIZE,
                            int8_min_cosine=0)  # plain INT8 (the budget: test_int8_accuracy)
            done[key] = package
        return done[key]

    return make


@pytest.fixture(scope="session", params=list(MODELS))
def ov_package(request, ov_packages) -> Path:
    return ov_packages(request.param)


@pytest.fixture(scope="session")
def sample_images(fixtures) -> list[tuple[str, np.ndarray]]:
    import cv2

    paths = sorted(fixtures(SAMPLES).glob("*.jpg"))
    assert paths, f"no sample images in {fixtures(SAMPLES)}"
    return [(p.name, cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in paths]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def raw_outputs(package: Path, fmt: str, precision: str, tensors: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Outputs (in the manifest's role order) of one artifact on every input tensor, run as the runtime runs
    it (an OpenVINO INT8 IR with its recorded inference precision)."""
    manifest = load_manifest(package)
    art = manifest.artifact(fmt, precision)
    backend = open_artifact(manifest, art, 2)
    return [[out[name] for name in art.outputs] for out in
            (backend.run({manifest.input.name: t}) for t in tensors)]


@pytest.fixture(scope="session")
def sample_tensors(sample_images):
    """``sample_tensors(package)`` -> the runtime's preprocessed input for each sample image."""
    cache: dict[Path, list[np.ndarray]] = {}

    def get(package: Path) -> list[np.ndarray]:
        if package not in cache:
            det = Detector(package, backend="onnx", precision="fp32", threads=2)
            cache[package] = [det.family.preprocess(image)[0].copy() for _, image in sample_images]
        return cache[package]

    return get


# --------------------------------------------------------------------------- the converted package


def test_manifest_lists_openvino_artifacts(ov_package):
    manifest = load_manifest(ov_package)
    onnx_outputs = manifest.artifact("onnx", "fp32").outputs
    for precision in PRECISIONS:
        art = manifest.artifact("openvino", precision)
        assert art.file == f"model_openvino_{precision}.xml"
        assert sha256_file(ov_package / art.file) == art.sha256
        weights = ov_package / art.extra["weights_file"]
        assert weights.name == f"model_openvino_{precision}.bin"
        assert sha256_file(weights) == art.extra["weights_sha256"]
        assert art.outputs == onnx_outputs
        agreement = art.extra["fp32_agreement"]
        assert set(agreement) == {"max_abs_diff", "cosine", "cosine_mean", "backend", "checked_on", "measured_on"}
        assert agreement["cosine_mean"] >= agreement["cosine"]
        assert art.extra["converter"]["openvino"] and art.extra["converter"]["nncf"]
    quant = manifest.artifact("openvino", "int8").extra
    assert quant["calibration"]["images"] == CALIB_SIZE
    q = quant["quantization"]
    assert q["preset"] in ("mixed", "performance") and q["fast_bias_correction"] is True
    assert q["subset_size"] == CALIB_SIZE
    assert q["ignored_tail_ops"] > 0 and len(q["float_convs"]) >= 1
    # FP16 stores half the weight bytes of FP32
    fp32_bin = (ov_package / "model_openvino_fp32.bin").stat().st_size
    assert (ov_package / "model_openvino_fp16.bin").stat().st_size < 0.6 * fp32_bin


def test_ir_keeps_output_names_and_nchw_input(ov_package):
    import openvino as ov

    manifest = load_manifest(ov_package)
    for precision in PRECISIONS:
        model = ov.Core().read_model(str(ov_package / f"model_openvino_{precision}.xml"))
        assert [o.get_any_name() for o in model.outputs] == list(manifest.artifact("onnx", "fp32").outputs)
        assert model.inputs[0].get_any_name() == manifest.input.name
        assert list(model.inputs[0].get_shape()) == list(manifest.input.shape)


# --------------------------------------------------------------------------- raw numerics


def test_fp32_matches_onnx_and_torch(ov_package, sample_tensors, fixtures):
    tensors = sample_tensors(ov_package)
    want = raw_outputs(ov_package, "onnx", "fp32", tensors)
    have = raw_outputs(ov_package, "openvino", "fp32", tensors)
    worst = max(float(np.abs(w - h).max()) for ws, hs in zip(want, have) for w, h in zip(ws, hs))
    assert worst < 1e-3, f"OpenVINO FP32 vs ONNX Runtime FP32: max abs diff {worst:.3g}"

    torch = pytest.importorskip("torch")
    from converters.checkpoints import load_model
    from converters.models import get_spec

    manifest = load_manifest(ov_package)
    spec = get_spec(manifest.name)
    net, _ = load_model(spec, fixtures(PACKAGES[manifest.name]["weights"]))
    deploy = spec.deploy(net).eval()
    with torch.no_grad():
        reference = [t.numpy() for t in deploy(torch.from_numpy(tensors[0]))]
    worst = max(float(np.abs(r - h).max()) for r, h in zip(reference, have[0]))
    assert worst < 1e-3, f"OpenVINO FP32 vs torch: max abs diff {worst:.3g}"


# Post-training INT8 of these two models does not reach the strict FP32 agreement (worst
# per-image cosine > 0.99; every confident detection matched at IoU > 0.8) on this AVX2 CPU without
# VNNI, after trying presets, range estimators, SmoothQuant, full bias correction, 100 calibration
# images, overflow-fix modes and float first/last layers; NNCF's accuracy-aware search kept 52 of 79
# YOLO-FastestV2 convolutions in float and still did not reach it. For scale, the ncnn INT8
# NanoDet-Plus-m file in the fixtures scores cls cosine 0.969-0.989 against its own FP32. The floors
# below are what INT8 must keep; the gap is recorded on the issue.


def _cosines(package: Path, precision: str, tensors: list[np.ndarray]) -> dict[str, list[float]]:
    names = load_manifest(package).artifact("onnx", "fp32").outputs
    want = raw_outputs(package, "onnx", "fp32", tensors)
    have = raw_outputs(package, "openvino", precision, tensors)
    return {name: [cosine(w[i], h[i]) for w, h in zip(want, have)] for i, name in enumerate(names)}


@pytest.mark.parametrize("precision, min_cosine", [("fp16", 0.999)])
def test_reduced_precision_cosine(ov_package, sample_tensors, precision, min_cosine):
    cosines = _cosines(ov_package, precision, sample_tensors(ov_package))
    worst = {name: round(min(values), 5) for name, values in cosines.items()}
    bad = {name: c for name, c in worst.items() if c <= min_cosine}
    assert not bad, (f"{ov_package.parent.name} openvino {precision}: worst per-image cosine vs FP32 {worst} "
                     f"(need > {min_cosine})")


def test_int8_cosine_floor(ov_package, sample_tensors):
    """Worst image > 0.975 and mean > 0.99 per output (measured on an AVX2 CPU without VNNI: NanoDet-Plus-m
    scores 0.987 / 0.994, distances 0.998 / 0.998; YOLO-FastestV2 scores 0.983 / 0.994, boxes 0.998 / 0.9996)."""
    cosines = _cosines(ov_package, "int8", sample_tensors(ov_package))
    summary = {name: (round(min(v), 4), round(float(np.mean(v)), 4)) for name, v in cosines.items()}
    assert all(worst > 0.975 and mean > 0.99 for worst, mean in summary.values()), \
        f"{ov_package.parent.name} openvino int8 (worst, mean) cosine vs FP32 per output: {summary}"


# --------------------------------------------------------------------------- decoded detections


def _disagreements(package: Path, images, precision: str, min_iou: float) -> tuple[list[str], int]:
    reference = Detector(package, backend="onnx", precision="fp32", threads=2, score_threshold=0.3)
    candidate = Detector(package, backend="openvino", precision=precision, threads=2, score_threshold=0.3)
    problems, compared = [], 0
    for name, image in images:
        want, have = reference(image), candidate(image)
        compared += int((want.scores > 0.4).sum())
        problems += [f"{name}: FP32 ONNX {d} missing in openvino {precision}"
                     for d in unmatched(want, have, iou_min=min_iou)]
        problems += [f"{name}: openvino {precision} {d} missing in FP32 ONNX"
                     for d in unmatched(have, want, iou_min=min_iou)]
    return problems, compared


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_detections_agree_with_fp32_onnx(ov_package, sample_images, precision):
    problems, compared = _disagreements(ov_package, sample_images, precision, min_iou=0.8)
    assert compared >= 10, "too few confident detections on the sample images to compare"
    assert not problems, f"{len(problems)} disagreements over {compared} FP32 detections:\n" + "\n".join(problems)


def test_int8_finds_the_same_objects(ov_package, sample_images):
    """INT8 floor: every confident detection on either side has a same-class partner at IoU > 0.5 (the
    mAP@0.5 match); only box placement and near-duplicate NMS choices may differ (measured: NanoDet-Plus-m
    1 of 42 detections below IoU 0.8, worst 0.59; YOLO-FastestV2 6 of 32, worst 0.65)."""
    problems, compared = _disagreements(ov_package, sample_images, "int8", min_iou=0.5)
    assert compared >= 10
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- backend behaviour


def test_unavailable_device_falls_back_to_cpu_with_one_warning(ov_packages, sample_tensors, caplog):
    import openvino as ov

    package = ov_packages("nanodet-plus-m")
    path = package / "model_openvino_fp32.xml"
    tensor = sample_tensors(package)[0]
    cpu = open_backend(path, "openvino", 2)
    available = ov.Core().available_devices
    for device in ("NPU", "GPU"):
        if any(d.split(".")[0] == device for d in available):
            continue  # the device exists here: nothing to fall back from
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            backend = open_backend(path, "openvino", 2, {"device": device})
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert device in warnings[0].getMessage() and "CPU" in warnings[0].getMessage()
        assert backend.device == "CPU" and " CPU " in backend.describe()
        got, want = backend.run({"input": tensor}), cpu.run({"input": tensor})
        assert set(got) == set(want) == {"scores", "distances"}
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_run_returns_fresh_arrays(ov_packages, sample_tensors):
    package = ov_packages("nanodet-plus-m")
    tensors = sample_tensors(package)
    backend = open_backend(package / "model_openvino_fp32.xml", "openvino", 2)
    first = backend.run({"input": tensors[0]})
    kept = {k: v.copy() for k, v in first.items()}
    second = backend.run({"input": tensors[1]})
    for name in first:  # the request reuses its buffers; what we handed out must not change
        np.testing.assert_array_equal(first[name], kept[name])
        assert not np.array_equal(first[name], second[name])
    assert [t.name for t in backend.inputs] == ["input"]
    assert backend.inputs[0].shape == (1, 3, 416, 416) and backend.inputs[0].dtype == "float32"
    assert [(t.name, t.dtype) for t in backend.outputs] == [("scores", "float32"), ("distances", "float32")]


def test_corrupt_or_incomplete_ir_is_a_one_line_model_load_error(ov_packages, tmp_path):
    package = ov_packages("nanodet-plus-m")
    xml, weights = package / "model_openvino_fp32.xml", package / "model_openvino_fp32.bin"
    cases = {}
    data = xml.read_bytes()
    (tmp_path / "truncated.xml").write_bytes(data[: len(data) // 2])
    shutil.copy(weights, tmp_path / "truncated.bin")
    cases["truncated.xml"] = "corrupt or truncated"
    (tmp_path / "nobin.xml").write_bytes(data)
    cases["nobin.xml"] = "nobin.bin is missing"
    (tmp_path / "shortbin.xml").write_bytes(data)
    (tmp_path / "shortbin.bin").write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    cases["shortbin.xml"] = "corrupt or truncated"
    (tmp_path / "garbage.xml").write_bytes(b"\x00\x01 not xml at all")
    shutil.copy(weights, tmp_path / "garbage.bin")
    cases["garbage.xml"] = "not an OpenVINO IR"
    # an IR under another name: OpenVINO would read the same-stem .bin, which no manifest lists for it
    (tmp_path / "renamed.ir").write_bytes(data)
    shutil.copy(weights, tmp_path / "renamed.bin")
    cases["renamed.ir"] = "an OpenVINO IR must be named .xml"
    for name, expected in cases.items():
        with pytest.raises(ModelLoadError) as info:
            open_backend(tmp_path / name, "openvino", 2)
        message = str(info.value)
        assert str(tmp_path / name) in message and expected in message, message
        assert "\n" not in message, message


def test_truncated_ir_in_package_fails_the_checksum(ov_packages, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(ov_packages("nanodet-plus-m"), package)
    xml = package / "model_openvino_int8.xml"
    xml.write_bytes(xml.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="model_openvino_int8.xml: checksum mismatch"):
        Detector(package, backend="openvino", precision="int8")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_describe_names_openvino_and_inference_precision(ov_packages, precision):
    package = ov_packages("yolo-fastestv2")
    det = Detector(package, backend="openvino", precision=precision, threads=2)
    text = det.describe()
    assert "openvino" in text and f"openvino {precision}" in text
    # FP16 IRs too compute their float ops in f32; INT8 in the hint it was verified with (on a BF16 CPU the
    # faster of bf16 and f32, as timed by convert)
    recorded = load_manifest(package).artifact("openvino", "int8").extra["inference_precision_hint"]
    want = recorded if precision == "int8" else "f32"
    assert f"CPU {want}, 2 threads" in text, text


def test_bench_gives_each_precision_against_its_own_fp32_and_the_recorded_accuracy(ov_packages):
    """bench (in-process, few runs: the ratios are not asserted, only that each is this run's own
    FP32 median over the artifact's) names each artifact's speed against the same backend's FP32 and
    what convert recorded against FP32."""
    from edge_runtime.bench import bench_package, bench_table

    package = ov_packages("yolo-fastestv2")
    report = bench_package(package, threads=1, warmup=1, iters=3, isolate=False)
    rows = {(r["format"], r["precision"]): r for r in report["results"]}
    fp32 = rows[("openvino", "fp32")]
    for precision in ("fp16", "int8"):
        row = rows[("openvino", precision)]
        want = fp32["latency_ms"]["median"] / row["latency_ms"]["median"]
        assert row["speedup_vs_own_fp32"] == pytest.approx(want)
        recorded = load_manifest(package).artifact("openvino", precision).extra["fp32_agreement"]["cosine_mean"]
        assert row["recorded_accuracy"]["cosine_mean"] == pytest.approx(recorded)
    assert rows[("onnx", "fp32")]["speedup_vs_own_fp32"] == pytest.approx(1.0)
    table = bench_table(report)
    int8_cosine = rows[("openvino", "int8")]["recorded_accuracy"]["cosine_mean"]
    assert "vs its FP32" in table and f"cos {int8_cosine:.4f}" in table


# --------------------------------------------------------------------------- the INT8 recipe (issue 16)


def _hint(compiled) -> str:
    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    return used.get_type_name() if hasattr(used, "get_type_name") else str(used)


def test_int8_recipe_is_recorded_and_verified_under_its_hint(ov_package):
    """The default recipe: channel shuffles folded, NNCF, then the Concat pass (ShuffleNetV2 units: their
    Concat inputs and sliced tensors quantised, as many FakeQuantize nodes in the IR as recorded), and the
    hint chosen for this CPU recorded on the INT8 IR only, with convert's FP32 check run under it."""
    import openvino as ov

    from edge_runtime.backends.openvino import cpu_has_bf16

    manifest = load_manifest(ov_package)
    art = manifest.artifact("openvino", "int8")
    added = art.extra["quantization"]["concat_inputs_quantized"]
    assert added > 0, art.extra["quantization"]
    model = ov.Core().read_model(str(ov_package / art.file))
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    assert sum(name.endswith(("/concat_fq", "/slice_fq")) for name in names) == added
    # the shuffles folded into slices (their sources quantised once): NanoDet-Plus-m's 16 (Transpose form),
    # YOLO-FastestV2's 13 (Gather form)
    shuffles = {"nanodet-plus-m": 16, "yolo-fastestv2": 13}[manifest.name]
    for precision in ("fp32", "int8"):
        record = manifest.artifact("openvino", precision).extra["graph"]
        assert record["channel_shuffles_folded"] == shuffles, record
    assert sum(name.endswith("/slice_fq") for name in names) > 0
    # the stem stays in float by default (ov_quantize_stem is opt-in: test_opt_in_stem_pass_...)
    assert art.extra["quantization"]["stem_quantized"] is None
    assert not any(name.endswith("/pixel_fq") for name in names)
    hint = art.extra["inference_precision_hint"]
    timed = art.extra["quantization"].get("inference_precision_timed")
    if cpu_has_bf16():  # converted here without a target: both hints timed on this host, the faster recorded
        assert set(timed["ms"]) == {"bf16", "f32"} and all(ms > 0 for ms in timed["ms"].values()), timed
        faster = timed["bf16_vs_f32"] >= BF16_MIN_SPEEDUP  # the median of per-repeat ratios, as timed
        assert 0.5 < timed["bf16_vs_f32"] / (timed["ms"]["f32"] / timed["ms"]["bf16"]) < 2.0, timed
        assert hint == timed["chosen"] == timed["shipped"] == ("bf16" if faster else "f32"), timed
    else:
        assert hint == int8_inference_precision("auto") == "f32" and timed is None
    assert f"CPU {hint}, 2 threads" in art.extra["fp32_agreement"]["backend"], art.extra["fp32_agreement"]
    for precision in ("fp32", "fp16"):  # bf16 would cost them their 0.999 floor: nothing recorded, f32
        other = manifest.artifact("openvino", precision).extra
        assert "inference_precision_hint" not in other and "CPU f32" in other["fp32_agreement"]["backend"]


def test_int8_preset_is_chosen_by_what_was_measured(ov_package):
    """ov_preset auto: both NNCF presets quantised and measured against FP32 on the held-out photos under the
    shipped hint, timed against each other on this host (its CPU: no target), and without a budget the more
    accurate ships (PRESET_COSINE_SLACK), the faster of equals. Measured (AMX Xeon): YOLO-FastestV2's
    symmetric activations (performance) 0.9912 against 0.9908, NanoDet-Plus-m's 0.9889 against 0.9923 in bf16."""
    from converters.convert_openvino import OV_PRESETS, PRESET_COSINE_SLACK

    q = load_manifest(ov_package).artifact("openvino", "int8").extra["quantization"]
    choice = q["preset_choice"]
    found = choice["candidates"]
    assert set(found) == set(OV_PRESETS) and choice["metric"] == "cosine", choice
    assert choice["measured_on"].endswith("held-out images") and q["preset"] == choice["chosen"], choice
    assert "the timing failed" not in choice["why"], choice  # the worker's warning line says why
    if "inference_precision_timed" in q:  # a BF16 CPU: the presets are measured under the timed hint
        assert choice["hint"] == q["inference_precision_timed"]["chosen"], choice
    assert 0.98 < found[choice["chosen"]]["cosine"] <= 1.0 + 1e-6, choice
    best = max(c["cosine"] for c in found.values())
    eligible = [k for k, c in found.items() if c["cosine"] >= best - PRESET_COSINE_SLACK - 2e-6]
    assert choice["chosen"] in eligible, choice
    if all("speed_vs_mixed" in c for c in found.values()):  # timed: more than one qualified
        assert all(0.3 < c["speed_vs_mixed"] < 4 for c in found.values()), choice
        assert choice["chosen"] == shipped(found, eligible, "speed_vs_mixed"), choice
    else:  # the speed could not change the choice, so it was not timed
        assert not any("speed_vs_mixed" in c for c in found.values()), choice
        assert "speed not measured (only one preset's cosine is the best)" in choice["why"], choice
    # what was measured is what ships: NNCF's activation ranges are all symmetric (low 0 or -high) exactly with
    # "performance" (the Concat pass's own ranges, named by it, are min/max in both)
    import openvino as ov

    model = ov.Core().read_model(str(ov_package / "model_openvino_int8.xml"))
    asymmetric = 0
    for op in model.get_ordered_ops():
        source = op.input(0).get_source_output().get_node().get_type_name() if op.get_input_size() else ""
        if op.get_type_name() != "FakeQuantize" or source in ("Constant", "Convert") or \
                op.get_friendly_name().endswith(("/concat_fq", "/slice_fq", "/pixel_fq")):
            continue
        low, high = (op.input(i).get_source_output().get_node().get_data() for i in (1, 2))
        asymmetric += not (np.all(low == 0) or np.allclose(low, -high, rtol=1e-2))
    assert (asymmetric == 0) == (q["preset"] == "performance"), (asymmetric, q["preset"])


def test_runtime_compiles_with_the_recorded_hint(ov_packages):
    package = ov_packages("nanodet-plus-m")
    recorded = load_manifest(package).artifact("openvino", "int8").extra["inference_precision_hint"]
    int8 = Detector(package, backend="openvino", precision="int8", threads=2)
    assert _hint(int8.backend.compiled) == recorded
    fp32 = Detector(package, backend="openvino", precision="fp32", threads=2)
    assert _hint(fp32.backend.compiled) == "f32"
    # the caller's option wins over what the package records
    forced = Detector(package, backend="openvino", precision="int8", threads=2, options={"inference_precision": "f32"})
    assert _hint(forced.backend.compiled) == "f32"


def test_recorded_bf16_falls_back_to_f32_without_cpu_bf16_once_in_the_log(ov_packages, monkeypatch, caplog):
    """A CPU without AVX512-BF16/AMX-BF16 (host detection made to say so) runs an IR verified in bf16 in f32,
    and says so once per process; only the two recorded values count."""
    from edge_runtime.backends import openvino as ov_backend

    path = ov_packages("nanodet-plus-m") / "model_openvino_int8.xml"
    monkeypatch.setattr(ov_backend, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(ov_backend, "_fallback_logged", False)
    with caplog.at_level(logging.INFO, logger=ov_backend.log.name):
        first = open_backend(path, "openvino", 2, {"verified_precision": "bf16"})
        second = open_backend(path, "openvino", 2, {"verified_precision": "bf16"})
    assert _hint(first.compiled) == _hint(second.compiled) == "f32" and "CPU f32" in first.describe()
    said = [r.getMessage() for r in caplog.records if "BF16" in r.getMessage()]
    assert len(said) == 1 and str(path) in said[0] and "f32" in said[0], said
    assert ov_backend.OpenVinoBackend.recorded_options({"inference_precision_hint": "bf16"}) == \
        {"verified_precision": "bf16"}
    for junk in ("f16", "u8", {"config": 1}, None):
        assert ov_backend.OpenVinoBackend.recorded_options({"inference_precision_hint": junk}) == {}


def test_target_forces_f32_and_the_check_runs_in_f32(demo_package, tmp_path, fixtures):
    """openvino_inference_precision = "f32" in a target profile: the INT8 IR records f32 and is checked
    and run in f32 even on a BF16 CPU (the demo model is ShuffleNetV2 too: the Concat pass applies)."""
    pytest.importorskip("nncf", reason="OpenVINO INT8 conversion needs nncf")
    from converters import Converter

    package = tmp_path / "pkg"
    shutil.copytree(demo_package, package)
    profile = tmp_path / "f32-ov.toml"
    profile.write_text('name = "f32-ov"\narch = "x86_64"\nbackends = ["openvino"]\nprecisions = ["int8"]\n'
                       'openvino_inference_precision = "f32"\n')
    manifest = Converter(package).to(calib=fixtures(CALIB), target=str(profile), calib_size=8, val_size=8)
    art = manifest.artifact("openvino", "int8")
    assert art.verified and art.extra["inference_precision_hint"] == "f32"
    assert art.extra["quantization"]["concat_inputs_quantized"] > 0
    # another target's CPU: the presets are not timed here, the more accurate ships (or mixed, unmeasured)
    choice = art.extra["quantization"]["preset_choice"]
    assert "speed not measured (" in choice["why"] and "is not target f32-ov" in choice["why"] or \
        "no held-out images" in choice["why"], choice
    if "candidates" in choice:
        assert all("speed_vs_mixed" not in c for c in choice["candidates"].values()), choice
        assert choice["chosen"] == max(choice["candidates"], key=lambda k: choice["candidates"][k]["cosine"])
    assert "CPU f32, 2 threads" in art.extra["fp32_agreement"]["backend"]
    assert _hint(Detector(package, backend="openvino", precision="int8", threads=2).backend.compiled) == "f32"
    with pytest.raises(EdgeRuntimeError, match="openvino_inference_precision 'f16' is not one of auto, bf16, f32"):
        int8_inference_precision("f16")


@pytest.mark.parametrize("bits", [8, 7])
@pytest.mark.parametrize("mean, std, exact", [((0.0, 0.0, 0.0), (255.0, 255.0, 255.0), True),
                                               ((103.53, 116.28, 123.675), (57.375, 57.12, 58.395), False)])
def test_stem_quantizer_holds_every_pixel_exactly_when_the_channels_share_mean_and_std(mean, std, exact, bits):
    """quantize_image_convs on a one-convolution model: with one mean and std for all channels every 8-bit
    pixel value is a level of the input quantizer (the output equals the convolution of the exact input
    with the weights on the b-bit grid); with per-channel ones it is not, and the record says so. 7-bit
    weights too run as an int8 convolution (255 levels over a widened range)."""
    import openvino as ov
    import openvino.opset13 as ops

    from converters.convert_openvino import quantize_image_convs
    from edge_runtime.manifest import InputSpec

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    param = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    param.output(0).set_names({"input"})
    conv = ops.convolution(param, ops.constant(weights), [1, 1], [1, 1], [1, 1], [1, 1])
    model = ov.Model([conv], [param])
    spec = InputSpec("input", (1, 3, 8, 8), "NCHW", "float32", "BGR", mean, std, "resize")
    record = quantize_image_convs(model, spec, bits)
    assert record["every_pixel_exact"] is exact and record["weight_bits"] == bits and len(record["convs"]) == 1

    pixels = rng.integers(0, 256, (1, 3, 8, 8)).astype(np.float32)
    pixels[0, :, 0, 0], pixels[0, :, 0, 1] = 0, 255  # both ends of the range
    x = (pixels - np.array(mean, np.float32).reshape(1, 3, 1, 1)) / np.array(std, np.float32).reshape(1, 3, 1, 1)
    step = np.abs(weights).reshape(4, -1).max(axis=1).reshape(4, 1, 1, 1) / (2 ** (bits - 1) - 1)
    quantized = np.round(weights / step) * step
    exact_input = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    reference = ov.Model([ops.convolution(exact_input, ops.constant(quantized), [1, 1], [1, 1], [1, 1], [1, 1])],
                         [exact_input])
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(model, "CPU", config)
    got = compiled({0: x})[0]
    want = core.compile_model(reference, "CPU", config)({0: x})[0]
    diff = float(np.abs(got - want).max())
    if exact:
        assert diff <= 1e-4 * float(np.abs(want).max()), diff
    else:  # one range over three channels: the inputs fall between levels
        assert diff > 1e-3 * float(np.abs(want).max()), diff
    ran = {op.get_rt_info()["layerType"].astype(str): op.get_rt_info()["runtimePrecision"].astype(str)
           for op in compiled.get_runtime_model().get_ordered_ops()}
    assert ran["Convolution"] in ("u8", "i8"), ran


def test_opt_in_stem_pass_quantises_the_stem_on_the_pixel_grid(demo_package, tmp_path, fixtures):
    """ov_quantize_stem: the convolution that reads the image gets a 256-level quantizer over
    (0 - mean) / std .. (255 - mean) / std (one range for all channels) and per-channel weights, 8 bits
    where the CPU accumulates u8 x s8 in 32 bits, 7 where it saturates; recorded, no longer listed as a
    float convolution, and the IR still passes convert's check against FP32."""
    pytest.importorskip("nncf", reason="OpenVINO INT8 conversion needs nncf")
    import openvino as ov

    from converters.convert import convert_package
    from converters.convert_job import int8_weights_saturate

    package = tmp_path / "pkg"
    shutil.copytree(demo_package, package)
    manifest = convert_package(package, ["openvino"], ["int8"], calib=fixtures(CALIB), calib_size=8, val_size=8,
                               options={"ov_quantize_stem": True}, int8_min_cosine=0)
    art = manifest.artifact("openvino", "int8")
    quantization, spec = art.extra["quantization"], manifest.input
    stem = quantization["stem_quantized"]
    assert art.verified and stem["weight_bits"] == (7 if int8_weights_saturate({}) else 8), stem
    assert quantization["overflow_fix"] == ("first_layer" if stem["weight_bits"] == 7 else "disable")
    low = min((0 - m) / d for m, d in zip(spec.mean, spec.std))
    high = max((255 - m) / d for m, d in zip(spec.mean, spec.std))
    assert stem["input_range"] == pytest.approx([low, high], abs=1e-5)
    assert stem["every_pixel_exact"] == (len(set(spec.mean)) == 1 and len(set(spec.std)) == 1)
    model = ov.Core().read_model(str(package / art.file))
    pixel_fq = next(op for op in model.get_ordered_ops() if op.get_friendly_name().endswith("/pixel_fq"))
    assert pixel_fq.input(0).get_source_output().get_node().get_type_name() == "Parameter"
    assert pixel_fq.get_levels() == 256
    assert float(pixel_fq.input(2).get_source_output().get_node().get_data()) == pytest.approx(high, abs=1e-5)
    readers = [port.get_node().get_friendly_name() for port in pixel_fq.output(0).get_target_inputs()]
    assert stem["convs"] == readers and len(readers) == 1, (stem, readers)
    assert readers[0] not in quantization["float_convs"]


@pytest.mark.parametrize("f32_ms, bf16_ms, want", [(10.0, 9.0, "bf16"), (10.0, 9.9, "f32"), (9.0, 10.0, "f32")])
def test_timed_hint_ships_bf16_only_when_clearly_faster(monkeypatch, f32_ms, bf16_ms, want):
    """The rule on given timings (real ones are recorded by test_int8_recipe_is_recorded_...): bf16 from
    BF16_MIN_SPEEDUP on, f32 otherwise, and the record says how much faster bf16 ran."""
    from types import SimpleNamespace

    from converters import convert_openvino

    monkeypatch.setattr(convert_openvino, "time_hints", lambda *args, **kwargs: {
        "f32": f32_ms, "bf16": bf16_ms, "bf16_vs_f32": f32_ms / bf16_ms})
    said: list[str] = []
    job = SimpleNamespace(options={}, progress=said.append,
                          calibration=SimpleNamespace(tensors=[np.zeros((1, 3, 8, 8), np.float32)]))
    hint, record = convert_openvino._timed_hint(None, job, "Some CPU (x86_64)")
    assert hint == record["chosen"] == want and record["ms"] == {"f32": f32_ms, "bf16": bf16_ms}
    assert record["bf16_vs_f32"] == round(f32_ms / bf16_ms, 3)
    assert f"bf16 ran {f32_ms / bf16_ms:.2f}x as fast as f32 on Some CPU (x86_64)" in record["why"]
    assert said[-1].endswith(want)


def test_a_failed_hint_timing_ships_f32_with_one_warning(monkeypatch, caplog):
    """The worker failing (any error) costs the timing, not the conversion: f32, the more exact, is recorded."""
    from types import SimpleNamespace

    from converters import convert_openvino

    def fails(*args, **kwargs):
        raise OSError("no fork\nsecond line")

    monkeypatch.setattr(convert_openvino, "time_hints", fails)
    job = SimpleNamespace(options={}, progress=lambda msg: None,
                          calibration=SimpleNamespace(tensors=[np.zeros((1, 3, 8, 8), np.float32)]))
    hint, record = convert_openvino._timed_hint(None, job, "Some CPU (x86_64)")
    assert hint == record["chosen"] == "f32" and "timing failed" in record["why"]
    assert "openvino int8 hints: not timed: no fork" in caplog.text and "second line" not in caplog.text


# --------------------------------------------------------------------------- bf16: the FP32 graph in bf16


@pytest.fixture(scope="session")
def bf16_package(ov_package, tmp_path_factory, fixtures) -> Path:
    """A copy of ``ov_package`` with ``convert --precisions bf16`` added (held-out photos of the calibration
    folder check it)."""
    from converters.convert import convert_package
    from edge_runtime.backends.openvino import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX-BF16, so no bf16 IR can be checked here "
                    "(test_bf16_is_refused_in_one_line_where_it_cannot_be_checked covers that case)")
    package = tmp_path_factory.mktemp(f"bf16-{load_manifest(ov_package).name}") / "pkg"
    shutil.copytree(ov_package, package)
    convert_package(package, ["openvino"], ["bf16"], calib=fixtures(CALIB), calib_size=CALIB_SIZE)
    return package


def test_bf16_is_the_fp32_graph_checked_and_run_in_bf16(bf16_package):
    """The bf16 IR: the FP32 graph (no quantizer) with fp16-stored weights, recording the bf16 hint, checked
    under it on the 24 held-out photos against its own floor, and run so by the runtime. Measured worst / mean
    cosine: NanoDet-Plus-m 0.9906 / 0.9983 (Intel Xeon, AMX), 0.9903 / 0.9981 (AMD EPYC, AVX512-BF16);
    YOLO-FastestV2 0.9933 / 0.9989 and 0.9910 / 0.9983."""
    import openvino as ov

    manifest = load_manifest(bf16_package)
    art = manifest.artifact("openvino", "bf16")
    assert art.file == "model_openvino_bf16.xml" and art.verified
    assert art.extra["inference_precision_hint"] == "bf16" and art.extra["weights_compression"] == "fp16"
    agreement = art.extra["fp32_agreement"]
    assert agreement["checked_on"]["held_out_images"] == 24 and "CPU bf16, 2 threads" in agreement["backend"]
    assert art.extra["verification"]["threshold"] == MIN_WORST_COSINE["bf16"]
    assert agreement["cosine"] > 0.985 and agreement["cosine_mean"] > 0.996, agreement
    types = {op.get_type_name() for op in ov.Core().read_model(str(bf16_package / art.file)).get_ordered_ops()}
    assert "FakeQuantize" not in types
    detector = Detector(bf16_package, backend="openvino", precision="bf16", threads=2)
    assert _hint(detector.backend.compiled) == "bf16" and "CPU bf16" in detector.describe()


def test_bf16_finds_the_same_objects(bf16_package, sample_images):
    problems, compared = _disagreements(bf16_package, sample_images, "bf16", min_iou=0.8)
    assert compared >= 10
    assert not problems, "\n".join(problems)


def test_auto_weighs_bf16_by_its_recorded_drop(bf16_package):
    """auto may pick bf16 like any verified artifact within the budget (its mean cosine drop, < 0.004, is
    within the default cos:0.01), and leaves it out of a tighter one."""
    from edge_runtime.autoselect import auto_candidates
    from edge_runtime.budget import parse_budget

    manifest = load_manifest(bf16_package)
    art = manifest.artifact("openvino", "bf16")
    assert art in auto_candidates(manifest)
    assert parse_budget("cos:0.01").judge(art).within
    assert not parse_budget("cos:0.0001").judge(art).within


def test_bf16_is_refused_in_one_line_where_it_cannot_be_checked(ov_packages, tmp_path, fixtures, monkeypatch,
                                                                  caplog):
    """Made only when named (not by default); refused with one line without photos to check it on; skipped with
    one warning on a CPU without BF16 (made to say so), before any work, while the rest of the run goes on."""
    from converters import convert_openvino
    from converters.convert import convert_package
    from edge_runtime.backends import default_precisions

    assert "bf16" not in default_precisions()
    package = tmp_path / "pkg"
    shutil.copytree(ov_packages("yolo-fastestv2"), package)
    with pytest.raises(EdgeRuntimeError, match="bf16 is checked against FP32 on photos: pass --calib"):
        convert_package(package, ["openvino"], ["bf16"])
    monkeypatch.setattr(convert_openvino, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        manifest = convert_package(package, ["openvino"], ["bf16", "fp16"], calib=fixtures(CALIB), calib_size=8,
                                   val_size=8)
    said = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert said == ["skipping openvino bf16: this CPU has neither AVX512-BF16 nor AMX-BF16, so a bf16 IR "
                    "cannot be checked here; convert it on a CPU that has them"], said
    assert all(a.precision != "bf16" for a in manifest.artifacts)
    fp16 = manifest.artifact("openvino", "fp16")  # converted again after the skip, checked on this run's photos
    assert fp16.verified and fp16.extra["fp32_agreement"]["checked_on"]["held_out_images"] == 8
