"""One meaning per flag across the `edge-runtime` commands (issue 17): `--json FILE` ('-' = stdout),
`-o/--out` for what a command writes, `--precision` one value and `--precisions` a list, every output's
folder checked before any work, exit status 1 for a runtime failure and 2 for a usage error."""

from __future__ import annotations

import argparse
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FIXTURES, SAMPLES
from test_cli import assert_one_line_error, run_cli

from edge_runtime.backends import ALL_PRECISIONS
from edge_runtime.cli import build_parser

IMAGE = str(FIXTURES / SAMPLES / "dog.jpg")


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, hidden ones (the 'package' alias) included."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def option(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest and a.option_strings)


SELECT = ["select", "--data", str(FIXTURES / "datasets/voc-indoor-85/ground-truth"), "--images",
          str(FIXTURES / "datasets/voc-indoor-85/images"), "--fps", "30", "--models", "yolo-fastestv2",
          "--model-weights",
          f"yolo-fastestv2={FIXTURES / 'weights/yolo-fastestv2/coco2017-0.241078ap-model.pth'}"]
# (command, output dest) -> the command line with that output set to OUT, everything else valid
Argv = Callable[[Path, str], list[str]]
OUTPUT_FILES: dict[tuple[str, str], Argv] = {
    ("run", "json"): lambda pkg, out: ["run", str(pkg), "--source", IMAGE, "--json", out],
    ("run", "summary_json"): lambda pkg, out: ["run", str(pkg), "--source", IMAGE, "--summary-json", out],
    ("bench", "json"): lambda pkg, out: ["bench", str(pkg), "--iters", "2", "--json", out],
    ("validate", "json"): lambda pkg, out: ["validate", str(pkg), "--images", str(FIXTURES / SAMPLES), "--json", out],
    ("validate", "plot"): lambda pkg, out: ["validate", str(pkg), "--images", str(FIXTURES / SAMPLES), "--plot", out],
    ("profile", "json"): lambda pkg, out: ["profile", str(pkg), "--runs", "2", "--json", out],
    ("info", "json"): lambda pkg, out: ["info", str(pkg), "--json", out],
    ("targets", "json"): lambda pkg, out: ["targets", "--json", out],
    ("compress", "json"): lambda pkg, out: ["compress", "--model", "demo-shapes", "--prune", "0.3", "--out",
                                            str(pkg.parent / "c.ckpt"), "--json", out],
    ("compress", "out"): lambda pkg, out: ["compress", "--model", "demo-shapes", "--prune", "0.3", "-o", out],
    ("bundle", "out"): lambda pkg, out: ["bundle", str(pkg), "--target", "x86", "-o", out],
    ("package", "out"): lambda pkg, out: ["package", str(pkg), "--target", "x86", "-o", out],
    ("deploy", "json"): lambda pkg, out: ["deploy", str(pkg.parent / "b.tar.gz"), "--host", "pi@127.0.0.1",
                                          "--json", out],
    ("select", "json"): lambda pkg, out: [*SELECT, "--json", out],
    ("select", "plot"): lambda pkg, out: [*SELECT, "--plot", out],
}
OUTPUT_FOLDERS: dict[tuple[str, str], Argv] = {
    ("export", "out"): lambda pkg, out: ["export", "--model", "demo-shapes", "-o", out],
    ("import", "out"): lambda pkg, out: ["import", str(pkg / "model.onnx"), "--family", "yolov8", "-o", out],
    ("demo", "out"): lambda pkg, out: ["demo", "-o", out],
    ("run", "save"): lambda pkg, out: ["run", str(pkg), "--source", IMAGE, "--save", out],
    ("compress", "package"): lambda pkg, out: ["compress", "--model", "demo-shapes", "--prune", "0.3", "-o",
                                               str(pkg.parent / "c.ckpt"), "--package", out],
    ("select", "out"): lambda pkg, out: [*SELECT, "-o", out],
}


def test_the_cases_cover_every_output_of_every_command():
    """Each output a command declares (checked by the guard) is exercised below, and nothing else is."""
    files, folders = set(), set()
    for name, parser in commands().items():
        files |= {(name, dest) for dest in parser.get_default("output_files")}
        folders |= {(name, dest) for dest in parser.get_default("output_folders")}
    assert files == set(OUTPUT_FILES)
    assert folders == set(OUTPUT_FOLDERS)


@pytest.mark.parametrize("case", sorted(OUTPUT_FILES), ids="-".join)
def test_an_output_in_a_missing_folder_is_refused_before_any_work(case, demo_package, tmp_path):
    """Exit 2 and one line naming the path; the only stderr line is that one, so no model was loaded
    (run names its detector, bench and compress report progress, before any result is written)."""
    out = str(tmp_path / "no-such-folder" / "result.json")
    proc = run_cli(*OUTPUT_FILES[case](demo_package, out))
    assert_one_line_error(proc, f"{out}: folder does not exist", status=2)
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [f"error: {out}: folder does not exist"]
    assert not (tmp_path / "no-such-folder").exists()


@pytest.mark.parametrize("case", sorted(OUTPUT_FOLDERS), ids="-".join)
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(case, demo_package, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    proc = run_cli(*OUTPUT_FOLDERS[case](demo_package, str(taken)))
    assert_one_line_error(proc, f"{taken}: exists and is not a folder", status=2)
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1
    assert taken.read_text() == "mine"


def test_an_output_file_that_is_a_folder_is_refused(demo_package, tmp_path):
    assert_one_line_error(run_cli("info", str(demo_package), "--json", str(tmp_path)), str(tmp_path), "is a folder",
                          status=2)


def test_a_file_inside_the_save_folder_the_run_makes_is_fine(demo_package, fixtures, tmp_path):
    """--save makes its folder (with parents) before the run writes --json into it."""
    out = tmp_path / "new" / "out"
    image = str(fixtures(SAMPLES, "dog.jpg"))  # skips where the shared fixtures are absent
    proc = run_cli("run", str(demo_package), "--source", image, "--save", str(out), "--json", str(out / "d.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["name"] for line in (out / "d.jsonl").read_text().splitlines()] == ["dog.jpg"]
    assert (out / "dog.jpg").is_file()


def test_json_dash_prints_json_on_stdout(demo_package):
    """info and targets: the JSON alone on stdout (parseable as a whole)."""
    info = run_cli("info", str(demo_package), "--json", "-")
    assert info.returncode == 0, info.stderr
    manifest = json.loads(info.stdout)
    assert manifest["model"]["name"] == "demo-shapes" and manifest["artifacts"][0]["file"] == "model.onnx"
    assert manifest == json.loads((demo_package / "manifest.json").read_text())
    targets = run_cli("targets", "--json", "-")
    assert targets.returncode == 0, targets.stderr
    assert {"x86", "rpi4", "edgetpu"} <= {t["name"] for t in json.loads(targets.stdout)}
    host = run_cli("targets", "--detect", "--json", "-")
    assert json.loads(host.stdout)["cores"] >= 1


def test_run_json_dash_streams_detections_and_keeps_stdout_clean(demo_package, fixtures, tmp_path):
    """run --json -: one JSON line per frame on stdout; the timing table goes to stderr."""
    samples = fixtures(SAMPLES)  # skips where the shared fixtures are absent
    proc = run_cli("run", str(demo_package), "--source", str(samples), "--json", "-",
                   "--summary-json", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    names = sorted(p.name for p in samples.glob("*.jpg"))
    assert sorted(f["name"] for f in frames) == names
    assert "FPS end to end" in proc.stderr
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == len(names)


def test_bundle_and_the_deprecated_package_alias(demo_package, tmp_path):
    """bundle writes the target's bundle; 'package' still works, says it was renamed, and is not listed."""
    first = tmp_path / "b.tar.gz"
    proc = run_cli("bundle", str(demo_package), "--target", "x86", "-o", str(first))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"bundle: {first}") and "renamed" not in proc.stderr
    wheels = tmp_path / "wheels"
    with tarfile.open(first) as tar:
        names = sorted(m.name.split("/", 1)[-1] for m in tar.getmembers())
        wheel = next(m for m in tar.getmembers() if m.name.endswith(".whl"))
        wheel.name = Path(wheel.name).name
        tar.extract(wheel, wheels, filter="data")
    assert {"package/manifest.json", "package/model.onnx", "install.sh", "run.sh", "SHA256SUMS"} <= set(names)
    second = tmp_path / "old.tar.gz"
    old = run_cli("package", str(demo_package), "--target", "x86", "-o", str(second), "--wheel-dir", str(wheels))
    assert old.returncode == 0, old.stderr
    assert "'edge-runtime package' is now 'edge-runtime bundle'" in old.stderr
    with tarfile.open(second) as tar:
        assert sorted(m.name.split("/", 1)[-1] for m in tar.getmembers()) == names
    listing = run_cli("--help").stdout
    assert "\n    bundle " in listing and "\n    package " not in listing and "SUPPRESS" not in listing


def test_exit_status_one_for_a_runtime_failure_two_for_usage(demo_package, tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "manifest.json").write_text('{"format_version": 1, "model": ')  # cut short
    assert_one_line_error(run_cli("info", str(pkg)), str(pkg / "manifest.json"), status=1)
    assert_one_line_error(run_cli("run", str(pkg), "--source", IMAGE), str(pkg / "manifest.json"), status=1)
    # usage: bad values and combinations, found before the package is read
    assert_one_line_error(run_cli("run", str(demo_package), "--source", IMAGE, "--max-fps", "0"), "--max-fps",
                          status=2)
    assert_one_line_error(run_cli("validate", str(demo_package)), "--images", status=2)
    assert_one_line_error(run_cli("profile"), "a package folder or --model", status=2)
    for argv in (["run", str(demo_package)], ["run", str(demo_package), "--source", IMAGE, "--precision", "fp32,int8"],
                 ["deploy", "b.tar.gz", "--host", "pi@x", "-o", "StrictHostKeyChecking=no"]):
        proc = run_cli(*argv)  # argparse's own errors: usage line + message
        assert proc.returncode == 2 and "usage: edge-runtime" in proc.stderr and "Traceback" not in proc.stderr, argv


def test_flags_mean_the_same_in_every_command():
    for name, parser in commands().items():
        strings = {s: a for a in parser._actions for s in a.option_strings}
        files, folders = parser.get_default("output_files"), parser.get_default("output_folders")
        if "--json" in strings:
            action = strings["--json"]
            assert action.dest in files and action.metavar == "FILE" and "'-': stdout" in action.help, name
        if "-o" in strings:
            assert strings["-o"] is strings.get("--out") and strings["-o"].dest in files + folders, name
        if "--precision" in strings and strings["--precision"].help is not argparse.SUPPRESS:
            assert tuple(strings["--precision"].choices) == ALL_PRECISIONS, name  # one value
        if "--precisions" in strings:  # a list; the singular stays accepted there, hidden
            assert strings["--precision"].dest == "precisions" and strings["--precision"].help is argparse.SUPPRESS
        assert parser.description and f"edge-runtime {name if name != 'package' else 'bundle'}" in parser.epilog, name
    assert option(commands()["deploy"], "ssh_options").option_strings == ["--ssh-option"]


def test_help_lists_every_export_model_and_the_exit_statuses():
    pytest.importorskip("torch")
    from converters.models import MODELS

    for command in ("export", "compress", "profile"):
        text = " ".join(run_cli(command, "--help").stdout.split())
        missing = [m for m in MODELS if m not in text.replace("- ", "-")]
        assert not missing, (command, missing)
    top = run_cli("--help").stdout
    assert "exit status: 0 done; 1 a runtime failure" in top and "2 a usage error" in top and "130" in top
    assert "--json FILE" in top and "'-' = stdout" in top


def test_the_rules_behind_the_flags_live_in_the_api():
    """--target fills in what convert is not given (deploy.targets.conversion_plan), explicit flags win."""
    from edge_runtime.deploy.targets import conversion_plan, load_target

    edgetpu = load_target("edgetpu")
    plan = conversion_plan(target=edgetpu)
    assert (plan.formats, plan.precisions, plan.tflite_io) == (("tflite",), ("int8",), "uint8")
    assert plan.describe() == "tflite x int8, TFLite I/O uint8, tflite_compiler edgetpu_compiler"
    assert plan.settings == {"tflite_compiler": "edgetpu_compiler"}
    plan = conversion_plan(["onnx"], [], "int8", edgetpu)
    assert (plan.formats, plan.precisions, plan.tflite_io) == (("onnx",), ("int8",), "int8")
    plan = conversion_plan(["onnx"], [], None, None)
    assert (plan.formats, plan.precisions, plan.tflite_io) == (("onnx",), ("fp32", "fp16", "int8"), "float32")
    assert plan.describe() == "onnx x fp32,fp16,int8"
    # a target's other converter settings (backend keys with no runtime option) travel in the plan
    plan = conversion_plan(target=load_target("x86-vnni"))
    assert plan.settings == {"onnx_weight_bits": "8", "openvino_inference_precision": "auto"}
    assert plan.describe() == "openvino,onnx x int8,fp32, onnx_weight_bits 8, openvino_inference_precision auto"


@pytest.mark.parametrize("case", sorted(OUTPUT_FILES), ids="-".join)
def test_stdout_is_only_for_json(case, demo_package):
    """'-' means stdout for --json and --summary-json; any other output named '-' is a usage error
    (before, `bundle -o -` wrote a file called '-'), also before any work."""
    command, dest = case
    proc = run_cli(*OUTPUT_FILES[case](demo_package, "-"))
    if dest in commands()[command].get_default("stdout_outputs"):
        assert dest in ("json", "summary_json")
        return
    flag = "--" + dest.replace("_", "-")
    assert_one_line_error(proc, f"{flag} -: only --json and --summary-json write to stdout", status=2)


def test_a_chart_name_opencv_cannot_write_is_refused_before_the_run(demo_package, tmp_path):
    out = tmp_path / "chart.txt"
    proc = run_cli(*OUTPUT_FILES[("validate", "plot")](demo_package, str(out)))
    assert_one_line_error(proc, f"{out}: --plot writes .png or .jpg or .jpeg files", status=2)
    assert not out.exists()
