"""The targets command: every profile in a table and as JSON, and this host described."""

from __future__ import annotations

import json

from test_cli import assert_one_line_error, run_cli


def test_targets_table_and_json():
    table = run_cli("targets")
    assert table.returncode == 0, table.stderr
    for name in ("x86", "x86-vnni", "arm64", "rpi4", "rpi5", "edgetpu", "npu-vx", "openvino-npu", "ort-qnn",
                 "rknn-lite"):
        assert f"\n{name} " in "\n" + table.stdout, name
    profiles = {t["name"]: t for t in json.loads(run_cli("targets", "--json", "-").stdout)}
    assert profiles["edgetpu"]["delegate"] == "libedgetpu.so.1" and profiles["edgetpu"]["tflite_io"] == "uint8"
    assert profiles["rpi4"]["threads"] == 4 and profiles["rknn-lite"]["status"] == "future"


def test_detect_describes_this_host():
    text = run_cli("targets", "--detect")
    assert text.returncode == 0 and "Suggested target:" in text.stdout, text.stderr
    info = json.loads(run_cli("targets", "--detect", "--json", "-").stdout)
    assert info["suggested_target"] and info["arch"] and info["cores"] >= 1


def test_future_profile_is_refused_in_one_line(nanodet_plus_package, fixtures):
    proc = run_cli("run", str(nanodet_plus_package), "--target", "rknn-lite", "--source",
                   str(fixtures("images/samples/dog.jpg")))
    assert_one_line_error(proc, "rknn-lite", "future")


def test_convert_for_the_edgetpu_target_makes_a_full_integer_uint8_model(export, tmp_path):
    """``convert --target edgetpu``: exactly the profile's artifact (TFLite INT8, uint8 I/O), and the
    float-op report read from the file finds nothing for the Edge TPU to hand back to the CPU."""
    import shutil

    import pytest
    from conftest import fixture_path

    from edge_runtime.backends.tflite_ops import tflite_op_report
    from edge_runtime.manifest import load_manifest

    pytest.importorskip("onnx2tf")
    pkg = tmp_path / "yf"
    shutil.copytree(export("yolo-fastestv2"), pkg)
    proc = run_cli("convert", str(pkg), "--target", "edgetpu", "--calib", str(fixture_path("images/calib-coco-val2017")),
                   "--calib-size", "16")
    assert proc.returncode == 0, proc.stderr
    assert "target edgetpu: tflite x int8, TFLite I/O uint8, tflite_compiler edgetpu_compiler" in proc.stderr
    manifest = load_manifest(pkg)
    assert sorted(a.key for a in manifest.artifacts) == sorted(["onnx-fp32", "tflite-int8"]), manifest.artifacts
    art = manifest.artifact("tflite", "int8")
    assert art.extra["quantization"]["io_dtype"] == "uint8"
    report = tflite_op_report(manifest.artifact_path(art))
    assert report.full_integer and report.integer_io, report.describe()
    if shutil.which("edgetpu_compiler") is None:  # not installable here: the one line, and nothing compiled
        [line] = [line for line in proc.stderr.splitlines() if "is not installed" in line]
        assert line.startswith("WARNING: edgetpu_compiler is not installed: model_int8.tflite will run on the CPU")
        assert f"compile it with: edgetpu_compiler -s -o {pkg} {pkg / 'model_int8.tflite'}," in line, line
        assert "compiled_file" not in art.extra and not list(pkg.glob("*_edgetpu.tflite"))


# Stand-in for Google's edgetpu_compiler, a Debian package from the Coral apt repository that cannot be installed
# here: the real tool's command line and outputs (<stem>_edgetpu.tflite and its operation log in -o DIR, the log
# in the real format). Its "compiled" model is a copy of the input; nothing on this host runs an Edge TPU model.
EDGETPU_COMPILER_STANDIN = """#!{python}
import os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
if os.environ.get("STANDIN_FAIL"):
    print("Edge TPU Compiler version 16.0.384591198", flush=True)
    sys.exit("ERROR: Attempting to use a delegate that only supports static-sized tensors")
out, model = Path(args[args.index("-o") + 1]), Path(args[-1])
shutil.copyfile(model, out / (model.stem + "_edgetpu.tflite"))
(out / (model.stem + "_edgetpu.log")).write_text(
    "Edge TPU Compiler version 16.0.384591198\\nInput: " + model.name + "\\nOutput: " + model.stem + "_edgetpu.tflite"
    "\\n\\nOperator                       Count      Status\\n\\n"
    "CONV_2D                        12         Mapped to Edge TPU\\n"
    "CONCATENATION                  2          Mapped to Edge TPU\\n"
    "LOGISTIC                       1          Operation is otherwise supported, but not mapped due to some "
    "unspecified limitation\\n")
print("Edge TPU Compiler version 16.0.384591198\\n\\nModel compiled successfully in 35 ms.")
"""


def test_convert_for_the_edgetpu_target_compiles_with_edgetpu_compiler(demo_package, tmp_path, monkeypatch):
    """With edgetpu_compiler on PATH, ``convert --target edgetpu`` ships the compiled model next to the checked
    INT8 model (checksummed, moved in with it), records what the compiler mapped and that it was not run here;
    the edgetpu bundle carries both and the profile. A compiler that fails is one error line."""
    import os
    import shutil
    import sys
    import tarfile
    from pathlib import Path

    import pytest
    from conftest import fixture_path

    from converters.tflite.compilers import compile_for_edgetpu
    from edge_runtime.deploy.bundle import make_bundle
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.manifest import load_manifest

    pytest.importorskip("onnx2tf")
    tools = tmp_path / "bin"
    tools.mkdir()
    compiler = tools / "edgetpu_compiler"
    compiler.write_text(EDGETPU_COMPILER_STANDIN.format(python=sys.executable))
    compiler.chmod(0o755)
    path = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    pkg = tmp_path / "demo"
    shutil.copytree(demo_package, pkg)
    proc = run_cli("convert", str(pkg), "--target", "edgetpu", "--calib",
                   str(fixture_path("images/calib-coco-val2017")), "--calib-size", "16", env=path)
    assert proc.returncode == 0, proc.stderr
    assert "model_int8_edgetpu.tflite: 14 ops on the Edge TPU, 1 on the CPU" in proc.stderr, proc.stderr
    manifest = load_manifest(pkg)
    art = manifest.artifact("tflite", "int8")
    assert art.verified and art.extra["compiled_file"] == "model_int8_edgetpu.tflite"
    assert [p.name for p in manifest.artifact_files(art)] == ["model_int8.tflite", "model_int8_edgetpu.tflite"]
    manifest.artifact_path(art, verify=True)  # both checksums match the files moved into the package
    compiled = art.extra["compiled"]
    assert compiled["compiler"] == "edgetpu_compiler 16.0.384591198" and compiled["checked"] is False
    assert compiled["ops_on_accelerator"] == {"CONV_2D": 12, "CONCATENATION": 2}
    assert compiled["ops_on_cpu"] == {"LOGISTIC: Operation is otherwise supported, but not mapped due to some "
                                      "unspecified limitation": 1}
    assert not [p.name for p in pkg.iterdir() if p.name.startswith(".")]  # no staging or compiler folder left
    # the runtime: the compiled model only with its delegate loaded; without an Edge TPU (here) the checked
    # plain model runs on the CPU, and says so
    from edge_runtime.backends import open_artifact
    from edge_runtime.backends.litert import LiteRtBackend

    assert LiteRtBackend.recorded_options(art.extra) == {"compiled_model": "model_int8_edgetpu.tflite"}
    tpu = open_artifact(manifest, art, 1, {"delegate": "libedgetpu.so.1"})
    assert "delegate libedgetpu.so.1 failed: CPU fallback" in tpu.describe() and "compiled" not in tpu.describe()

    with tarfile.open(make_bundle(pkg, "edgetpu", tmp_path / "tpu.tar.gz")) as tar:
        names = {Path(n).relative_to("demo-shapes-edgetpu").as_posix() for n in tar.getnames() if "/" in n}
    assert {"package/model_int8.tflite", "package/model_int8_edgetpu.tflite", "target.toml"} <= names, names

    model = tmp_path / "again" / "model_int8.tflite"
    model.parent.mkdir()
    shutil.copyfile(pkg / "model_int8.tflite", model)
    monkeypatch.setenv("PATH", path["PATH"])
    monkeypatch.setenv("STANDIN_FAIL", "1")
    with pytest.raises(EdgeRuntimeError) as excinfo:
        compile_for_edgetpu(model, model)
    assert str(excinfo.value) == (f"{model}: edgetpu_compiler failed (exit status 1): ERROR: Attempting to use a "
                                  f"delegate that only supports static-sized tensors")
    assert [p.name for p in model.parent.iterdir()] == ["model_int8.tflite"]

    from edge_runtime.errors import ModelLoadError

    (pkg / "model_int8_edgetpu.tflite").write_bytes(b"replaced")  # the compiled model is checksummed like the rest
    with pytest.raises(ModelLoadError, match="model_int8_edgetpu.tflite: checksum mismatch"):
        manifest.artifact_path(art, verify=True)


def test_export_records_macs_and_bench_prints_the_roofline(nanodet_plus_package, yolo_fastestv2_package):
    """MACs counted from the ONNX graph match the published figures (GFLOPs = 2 x GMACs): NanoDet-Plus-m
    416 1.52 GFLOPs, YOLO-FastestV2 352 0.212 BFLOPs, within 5 %."""
    from edge_runtime.manifest import load_manifest

    for pkg, published_gflops in ((nanodet_plus_package, 1.52), (yolo_fastestv2_package, 0.212)):
        macs = load_manifest(pkg).artifact("onnx", "fp32").extra["macs"]
        assert abs(2 * macs / 1e9 - published_gflops) / published_gflops < 0.05, (pkg.name, macs)
    proc = run_cli("bench", str(yolo_fastestv2_package), "--target", "rpi4", "--iters", "5", "--warmup", "1",
                   "--no-isolate")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("roofline model.onnx"))
    assert "GMACs in" in line and "% of rpi4's 48 GFLOP/s fp32 peak" in line, line
    assert "ran on" in proc.stdout and "CPUExecutionProvider" in proc.stdout
