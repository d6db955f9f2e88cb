"""``--backend auto`` within an accuracy budget, and convert's default INT8 budget (issue 16, items 2 and 3).

The demo model converted to ONNX and OpenVINO, FP32 and INT8, with convert's default budget (16 generated
images held out of 48): auto never chooses an artifact whose recorded drop against FP32 is over the budget,
whatever the timings and whatever the cache says; a budget loose enough admits the fastest; the
explanation names what the budget excluded; the default budget is recorded in the manifest and is auto's
default. No timing is asserted: only which artifacts may be chosen, checked on the timings auto measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run_cli

from edge_runtime.autoselect import CACHE_NAME, choose_artifact, fastest_artifact
from edge_runtime.budget import DropBudget, budget_for, parse_budget
from edge_runtime.errors import ModelLoadError, UsageError
from edge_runtime.manifest import load_manifest

pytest.importorskip("torch", reason="converting needs the host tool chain")
pytest.importorskip("openvino", reason="the package holds OpenVINO artifacts")

CALIB_SIZE = 32
HELD_OUT = 16


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    from converters.demo_data import write_split

    root = tmp_path_factory.mktemp("budget-calib")
    write_split(root, "train", CALIB_SIZE + HELD_OUT, progress=False)
    return root / "train"


@pytest.fixture(scope="module")
def budgeted(demo_package, calib, tmp_path_factory) -> Path:
    """onnx/openvino x fp32/int8, INT8 under convert's default budget (no budget flag given)."""
    from converters.convert import convert_package

    pkg = tmp_path_factory.mktemp("budgeted") / "pkg"
    shutil.copytree(demo_package, pkg)
    convert_package(pkg, ["onnx", "openvino"], ["fp32", "int8"], calib=calib, calib_size=CALIB_SIZE)
    return pkg


@pytest.fixture
def pkg(budgeted, tmp_path) -> Path:
    """A private copy (its autoselect.json is the test's own)."""
    out = tmp_path / "pkg"
    shutil.copytree(budgeted, out)
    return out


def _cosine_drop(art) -> float:
    return 1.0 - art.extra["fp32_agreement"]["cosine_mean"]


def test_default_convert_budget_is_recorded_and_is_autos_default(budgeted):
    manifest = load_manifest(budgeted)
    assert manifest.int8_budget["max_drop"] == "cos:0.01" and manifest.int8_budget["set_by"] == "default"
    assert manifest.int8_budget["validation_images"] == HELD_OUT
    for fmt in ("onnx", "openvino"):
        control = manifest.artifact(fmt, "int8").extra["quantization"]["accuracy_control"]
        assert control["metric"] == "cosine" and control["max_drop"] == 0.01 and control["met"], control
        assert control["validation_images"] == HELD_OUT
        assert control["after"] >= 0.99 and _cosine_drop(manifest.artifact(fmt, "int8")) <= 0.01
    budget = budget_for(manifest)
    assert budget == DropBudget(max_cosine_drop=0.01) and budget.source == "the package's, from convert"


def test_auto_never_picks_an_artifact_over_budget(pkg):
    manifest = load_manifest(pkg)
    int8 = [a for a in manifest.artifacts if a.precision == "int8"]
    tight = min(_cosine_drop(a) for a in int8) / 2  # every INT8 over it, every FP32 (drop ~1e-7) within
    assert tight > 0 and _cosine_drop(manifest.artifact("openvino", "fp32")) < tight
    loose = choose_artifact(manifest, 1, max_drop="off")
    assert set(loose.median_ms) == {a.key for a in manifest.artifacts}
    assert loose.artifact.key == min(loose.median_ms, key=loose.median_ms.get)  # off: the fastest of all

    strict = choose_artifact(manifest, 1, max_drop=f"cos:{tight:.6g}")
    assert strict.artifact.precision == "fp32"
    assert strict.over_budget == [a.key for a in int8]
    fp32_ms = {k: v for k, v in strict.median_ms.items() if k.endswith("-fp32")}
    assert strict.artifact.key == min(fp32_ms, key=fp32_ms.get)  # the fastest within the budget
    line = strict.explain()
    assert f"auto: {strict.artifact.key}" in line and f"budget cos:{tight:.6g} (--max-drop)" in line
    assert "excluded, over budget: " in line and all(a.key in line for a in int8), line
    assert "\n" not in line

    # the cache holds one entry per budget; a choice made under "off" is never reused under the tight one,
    # not even one that names an over-budget artifact under the tight budget's own key
    cache = json.loads((pkg / CACHE_NAME).read_text())
    assert sorted(e["budget"] for e in cache.values()) == sorted(["off", f"cos:{tight:.6g}"])
    for entry in cache.values():
        entry["choice"] = int8[0].key
    (pkg / CACHE_NAME).write_text(json.dumps(cache))
    assert choose_artifact(manifest, 1, max_drop="off").artifact.key == int8[0].key  # read from the cache
    again = choose_artifact(manifest, 1, max_drop=f"cos:{tight:.6g}")
    assert again.artifact.precision == "fp32" and not again.cached  # re-measured, not taken from the cache

    # the public entry points apply the same rule
    assert fastest_artifact(manifest, 1, max_drop=DropBudget(max_cosine_drop=tight)).precision == "fp32"
    from edge_runtime.detector import Detector

    det = Detector(pkg, backend="auto", threads=1, max_drop=f"cos:{tight:.6g}")
    assert det.artifact.precision == "fp32" and det.auto_choice.artifact == det.artifact
    assert Detector(pkg, backend="onnx", precision="int8", threads=1).auto_choice is None  # named: no budget


def test_loose_budget_admits_the_fastest(pkg):
    manifest = load_manifest(pkg)
    choice = choose_artifact(manifest, 1, max_drop="cos:1")
    assert choice.over_budget == [] and choice.artifact.key == min(choice.median_ms, key=choice.median_ms.get)
    assert "over budget" not in choice.explain()


def test_no_artifact_within_budget_is_one_error(pkg):
    manifest = load_manifest(pkg)
    with pytest.raises(ModelLoadError, match=r"no int8 artifact is within the accuracy budget cos:0 .*onnx-int8: "
                                             r"cosine drop 0\.\d{4}.*--max-drop"):
        choose_artifact(manifest, 1, precision="int8", max_drop="cos:0")


def test_artifact_without_a_record_is_not_within_a_budget(pkg):
    """An INT8 without a recorded agreement: no drop to judge, so only 'off' admits it. (The CPU it was
    measured on stays recorded: without it, an x86 CPU without VNNI would leave the 8-bit ones out first.)"""
    data = json.loads((pkg / "manifest.json").read_text())
    for art in data["artifacts"]:
        if art["precision"] == "int8":
            art["fp32_agreement"] = {"measured_on": art["fp32_agreement"]["measured_on"]}
            art["quantization"].pop("accuracy_control")
    data.pop("int8_budget")
    (pkg / "manifest.json").write_text(json.dumps(data))
    manifest = load_manifest(pkg)
    choice = choose_artifact(manifest, 1, max_drop=None)
    assert choice.budget == DropBudget(max_cosine_drop=0.01) and choice.budget.source == "built-in"
    assert choice.artifact.precision == "fp32"
    assert all(choice.judged[k].drop == "no recorded cosine vs FP32" for k in ("onnx-int8", "openvino-int8"))
    assert all(j.within for j in choose_artifact(manifest, 1, max_drop="off").judged.values())


def test_budget_syntax():
    assert parse_budget("cos:0.01") == DropBudget(max_cosine_drop=0.01)
    assert parse_budget("map:0.5") == DropBudget(max_map_points=0.5)
    assert parse_budget(" MAP:0.5, cos:0.02 ") == DropBudget(0.02, 0.5)
    assert str(parse_budget("map:0.5,cos:0.02")) == "map:0.5,cos:0.02" and str(parse_budget("off")) == "off"
    assert parse_budget("off").off
    for bad in ("0.5", "cos", "cos:", "cos:x", "cos:1.5", "map:-1", "map:101", "cos:0.1,cos:0.2", "top1:3", ""):
        with pytest.raises(UsageError, match="expected cos:D"):
            parse_budget(bad)
    with pytest.raises(UsageError, match="give the unit"):
        parse_budget(0.01)


def test_map_budget_judges_map_records_first_and_others_by_cosine():
    from edge_runtime.manifest import Artifact

    def art(precision: str, cosine: float | None, map_drop: float | None) -> Artifact:
        extra = {} if cosine is None else {"fp32_agreement": {"cosine": cosine, "cosine_mean": cosine}}
        if map_drop is not None:
            extra["quantization"] = {"accuracy_control": {"metric": "map", "drop": map_drop / 100}}
        return Artifact("m", "onnx", precision, "0" * 64, ("out",), extra)

    only_map, both = parse_budget("map:0.5"), parse_budget("map:0.5,cos:0.01")
    assert only_map.judge(art("int8", 0.95, 0.3)).within and both.judge(art("int8", 0.95, 0.3)).within
    assert not only_map.judge(art("int8", 0.999, 0.7)).within
    assert not only_map.judge(art("fp16", 0.9999, None)).within  # no mAP record, the budget names no cos
    assert both.judge(art("fp16", 0.9999, None)).within
    assert only_map.judge(art("fp32", None, None)).drop == "no drop (FP32)"


def test_default_budget_needs_held_out_images_and_0_turns_it_off(demo_package, calib, tmp_path):
    from converters.convert import MIN_HELD_OUT, convert_package

    few = tmp_path / "few"
    shutil.copytree(demo_package, few)
    # every image calibrates: none held out, no budget checked, and auto falls back to the built-in one
    manifest = convert_package(few, ["onnx"], ["int8"], calib=calib, calib_size=CALIB_SIZE + HELD_OUT)
    assert manifest.int8_budget["max_drop"] is None
    assert manifest.int8_budget["note"].startswith("none checked: 0 held-out images") and \
        f"needs {MIN_HELD_OUT}" in manifest.int8_budget["note"]
    assert "accuracy_control" not in manifest.artifact("onnx", "int8").extra["quantization"]
    assert budget_for(load_manifest(few)).source == "built-in"

    off = tmp_path / "off"
    shutil.copytree(demo_package, off)
    manifest = convert_package(off, ["onnx"], ["int8"], calib=calib, calib_size=CALIB_SIZE, int8_min_cosine=0)
    assert manifest.int8_budget["max_drop"] == "off"
    assert "accuracy_control" not in manifest.artifact("onnx", "int8").extra["quantization"]
    assert budget_for(load_manifest(off)).off


def test_run_max_drop_cli(pkg, calib):
    image = str(next(calib.iterdir()))
    proc = run_cli("run", str(pkg), "--source", image, "--max-drop", "0.5")
    assert_one_line_error(proc, "--max-drop 0.5", "cos:D", status=2)
    proc = run_cli("run", str(pkg), "--source", image, "--max-drop", "cos:0", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("auto: ")]
    assert "-fp32 (" in line and "budget cos:0 (--max-drop)" in line and "onnx-int8 (" in line, line
    help_text = run_cli("run", "--help").stdout
    assert "--max-drop BUDGET" in help_text and "cos:0.01" in help_text


def test_bench_names_autos_choice_within_the_budget(pkg):
    from edge_runtime.bench import bench_package, bench_table

    report = bench_package(pkg, threads=1, warmup=1, iters=3, isolate=False, max_drop="cos:0")
    rows = {(r["format"], r["precision"]): r for r in report["results"]}
    assert not rows[("onnx", "int8")]["within_budget"] and rows[("onnx", "fp32")]["within_budget"]
    within = [r for r in report["results"] if r["within_budget"]]
    assert report["fastest_within_budget"] == min(within, key=lambda r: r["latency_ms"]["median"])["artifact"]
    table = bench_table(report)
    assert f"auto's choice within the accuracy budget cos:0 (--max-drop): {report['fastest_within_budget']}" in table
    assert "over budget: " in table and rows[("onnx", "int8")]["artifact"] in table.split("over budget: ")[1]


HASWELL = {"cpu": "Intel Core i7-4770", "arch": "x86_64", "flags": ["avx2", "f16c", "fma"]}
ZEN4 = {"cpu": "AMD EPYC 9B14", "arch": "x86_64", "flags": ["avx2", "avx512f", "avx512_vnni", "f16c", "fma"]}
PI4 = {"cpu": "Raspberry Pi 4 Model B (Cortex-A72)", "arch": "aarch64", "flags": ["asimd", "neon"]}


def _measured_on_zen4(pkg: Path, weight_bits: int) -> None:
    """As if the package's INT8 artifacts had been converted on a VNNI CPU with ``weight_bits``-bit weights."""
    data = json.loads((pkg / "manifest.json").read_text())
    for art in data["artifacts"]:
        if art["precision"] == "int8":
            art["fp32_agreement"]["measured_on"] = {**ZEN4, "int8_saturates": False}
            art["quantization"]["weight_bits"] = weight_bits
    (pkg / "manifest.json").write_text(json.dumps(data))


def test_int8_records_say_where_they_hold(pkg):
    """The rule (tests/test_x86_avx2.py measures why): 8-bit ONNX Runtime / OpenVINO INT8 weights measured on a
    CPU that accumulates in 32 bits do not hold on an x86 CPU without VNNI/AMX; 7-bit ones, ones measured on
    such a CPU, TFLite's, FP32 and another device hold."""
    from dataclasses import replace

    from edge_runtime.deploy.hostinfo import int8_saturates, measured_on
    from edge_runtime.hostfit import host_mismatch

    manifest = load_manifest(pkg)
    for key in ("onnx-int8", "openvino-int8"):
        art = next(a for a in manifest.artifacts if a.key == key)
        assert art.extra["fp32_agreement"]["measured_on"] == measured_on()  # convert records this CPU
        assert art.extra["quantization"]["weight_bits"] in (7, 8)

        def variant(bits: int, where: dict | None, fmt: str = art.format):
            agreement = {k: v for k, v in art.extra["fp32_agreement"].items() if k != "measured_on"}
            if where is not None:
                agreement["measured_on"] = {**where, "int8_saturates": int8_saturates(where["arch"], where["flags"])}
            extra = {**art.extra, "fp32_agreement": agreement, "quantization": {**art.extra["quantization"],
                                                                                 "weight_bits": bits}}
            return replace(art, format=fmt, extra=extra)

        why = host_mismatch(variant(8, ZEN4), HASWELL)
        assert why.startswith("INT8 with 8-bit weights measured on AMD EPYC 9B14 (x86_64); this CPU (Intel Core "
                              "i7-4770 (x86_64)) has no VNNI/AMX"), why
        assert "an unrecorded CPU" in host_mismatch(variant(8, None), HASWELL)
        assert host_mismatch(variant(7, ZEN4), HASWELL) is None
        assert host_mismatch(variant(8, HASWELL), HASWELL) is None
        assert host_mismatch(variant(8, ZEN4), ZEN4) is None and host_mismatch(variant(8, ZEN4), PI4) is None
        assert host_mismatch(variant(8, ZEN4, "tflite"), HASWELL) is None
        assert host_mismatch(variant(8, ZEN4), HASWELL, {"device": "GPU"}) is None
        assert host_mismatch(variant(8, ZEN4), HASWELL, {"device": "AUTO"}) is not None  # AUTO may pick the CPU
        assert host_mismatch(variant(8, ZEN4), {**HASWELL, "flags": None}) is None  # flags unread: not judged
        unread = replace(variant(8, None), extra={**variant(8, None).extra, "fp32_agreement": {
            "measured_on": {**ZEN4, "flags": None}}})
        assert "AMD EPYC 9B14 (x86_64), its flags unread" in host_mismatch(unread, HASWELL)
        # records from before weight_bits: ONNX Runtime's reduce_range and OpenVINO's overflow fix say the width
        old = {k: v for k, v in art.extra["quantization"].items() if k != "weight_bits"}
        for record, bits in (({"reduce_range": True}, 7), ({"reduce_range": False}, 8),
                             ({"overflow_fix": "enable"}, 7), ({"overflow_fix": "first_layer"}, 8), ({}, None)):
            older = replace(art, extra={**variant(8, ZEN4).extra, "quantization": {
                **{k: v for k, v in old.items() if k not in ("reduce_range", "overflow_fix")}, **record}})
            why = host_mismatch(older, HASWELL)
            assert (why is None) == (bits == 7), (record, why)
            assert bits == 7 or f"INT8 with {'8-bit' if bits else 'unrecorded-width'} weights" in why
    fp32 = next(a for a in manifest.artifacts if a.key == "onnx-fp32")
    assert host_mismatch(fp32, HASWELL) is None


def test_auto_leaves_out_int8_measured_on_another_kind_of_cpu(pkg, monkeypatch, caplog, capsys):
    """A package converted on a VNNI CPU (8-bit weights), run on a Haswell: auto leaves its ONNX and OpenVINO
    INT8 out and says why; with only INT8 to choose from it is one error; named, it runs with a warning;
    bench never names them the fastest; info names them."""
    import logging

    import edge_runtime.hostfit as hostfit
    from edge_runtime.detector import artifact_to_run

    _measured_on_zen4(pkg, 8)
    monkeypatch.setattr(hostfit, "cpu_summary", lambda: HASWELL)
    monkeypatch.setattr(hostfit, "host_int8_saturates", lambda: True)
    manifest = load_manifest(pkg)
    choice = choose_artifact(manifest, 1, max_drop="off")
    assert choice.artifact.precision == "fp32" and set(choice.unfit) == {"onnx-int8", "openvino-int8"}
    assert set(choice.median_ms) == {"onnx-fp32", "openvino-fp32"}
    assert "excluded, onnx-int8: INT8 with 8-bit weights measured on AMD EPYC 9B14" in choice.explain()
    with pytest.raises(ModelLoadError, match=r"no artifact's accuracy record holds on this CPU: onnx-int8: .*"
                                             r"reconvert it on this CPU or with --target x86"):
        choose_artifact(manifest, 1, precision="int8", max_drop="off")
    with caplog.at_level(logging.WARNING, logger="edge_runtime.detector"):
        art = artifact_to_run(manifest, "onnx", "int8", 1)
    assert art.key == "onnx-int8" and "its detections may differ from what was validated" in caplog.text

    from edge_runtime.bench import bench_package, bench_table

    report = bench_package(pkg, threads=1, warmup=1, iters=3, isolate=False, max_drop="off")
    unfit = {r["artifact"] for r in report["results"] if r["not_on_this_cpu"]}
    assert unfit == {a.file for a in manifest.artifacts if a.precision == "int8"}, report["results"]
    assert report["fastest_verified"] not in unfit and report["fastest_within_budget"] not in unfit
    assert "not chosen, its record does not hold on this CPU: " in bench_table(report)

    import argparse

    from edge_runtime.cli.info import cmd_info

    capsys.readouterr()
    assert cmd_info(argparse.Namespace(package=str(pkg), json=None)) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("not for this CPU: ")]
    assert len(lines) == 2 and all("AMD EPYC 9B14" in ln and "auto leaves it out" in ln for ln in lines), lines

    _measured_on_zen4(pkg, 7)  # 7-bit weights compute the same on both
    choice = choose_artifact(load_manifest(pkg), 1, precision="int8", max_drop="off")
    assert choice.unfit == {} and set(choice.median_ms) == {"onnx-int8", "openvino-int8"}


def test_bundle_leaves_out_int8_whose_record_does_not_hold_on_the_targets_cpus(pkg, tmp_path, caplog):
    """``bundle``/``select`` for the x86 profile, whose CPUs may have no VNNI/AMX: ONNX Runtime and OpenVINO INT8
    with 8-bit weights measured on a VNNI CPU stay behind, one warning line each; x86-vnni takes them; 7-bit
    weights, or 8-bit ones measured on a CPU that saturates too, go to both. Only such INT8 left is one error."""
    import logging

    from edge_runtime.deploy.bundle import artifacts_for_target
    from edge_runtime.deploy.targets import load_target, target_file
    from edge_runtime.errors import EdgeRuntimeError

    x86, vnni = load_target("x86"), load_target("x86-vnni")
    assert x86.int8_saturates and not vnni.int8_saturates and not load_target("arm64").int8_saturates
    everything = {"onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"}
    _measured_on_zen4(pkg, 8)
    manifest = load_manifest(pkg)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.deploy.bundle"):
        kept = artifacts_for_target(manifest, x86)
    assert {a.key for a in kept} == {"onnx-fp32", "openvino-fp32"}
    lines = [r.getMessage() for r in caplog.records if "not bundling" in r.getMessage()]
    assert len(lines) == 2 and all(
        "INT8 with 8-bit weights measured on AMD EPYC 9B14 (x86_64); target x86's CPUs may have no VNNI/AMX" in line
        and line.endswith("reconvert it with --target x86 (7-bit weights)") for line in lines), lines
    assert {a.key for a in artifacts_for_target(manifest, vnni)} == everything

    int8_only = tmp_path / "x86-int8.toml"
    profile = target_file("x86").read_text()
    assert 'precisions = ["fp32", "int8"]' in profile
    int8_only.write_text(profile.replace('precisions = ["fp32", "int8"]', 'precisions = ["int8"]'))
    with pytest.raises(EdgeRuntimeError, match=r"no artifact that target x86 runs .*onnx-int8 \(its record does not hold "
                                        r"on the target CPU\)"):
        artifacts_for_target(manifest, load_target(str(int8_only)))

    _measured_on_zen4(pkg, 7)
    assert {a.key for a in artifacts_for_target(load_manifest(pkg), x86)} == everything
    data = json.loads((pkg / "manifest.json").read_text())
    for art in data["artifacts"]:
        if art["precision"] == "int8":
            art["fp32_agreement"]["measured_on"] = {**HASWELL, "int8_saturates": True}
            art["quantization"]["weight_bits"] = 8
    (pkg / "manifest.json").write_text(json.dumps(data))
    assert {a.key for a in artifacts_for_target(load_manifest(pkg), x86)} == everything
