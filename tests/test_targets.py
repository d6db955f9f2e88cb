"""Target profiles (targets/*.toml) and host detection on fake root folders written here."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.backends import ALL_PRECISIONS, formats
from edge_runtime.deploy.hostinfo import cpu_summary, detect_host, physical_cores
from edge_runtime.deploy.targets import (
    Target,
    all_targets,
    available_targets,
    efficiency,
    load_target,
    targets_table,
)
from edge_runtime.errors import EdgeRuntimeError

SHIPPED = ["arm64", "edgetpu", "npu-vx", "openvino-npu", "ort-qnn", "rknn-lite", "rpi4", "rpi5", "x86",
           "x86-vnni"]
REPO_TARGETS = Path(__file__).resolve().parents[1] / "targets"

# --- real-looking /proc/cpuinfo texts -----------------------------------------------------------

_PI_TAIL = "Hardware\t: BCM2835\nRevision\t: {rev}\nSerial\t\t: 10000000a1b2c3d4\nModel\t\t: {model}\n"


def _arm_cpuinfo(features: str, part: str, variant: str, revision: str, tail: str = "", cores: int = 4) -> str:
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: " + features + "\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: " + variant + "\nCPU part\t: " + part + "\n"
             "CPU revision\t: " + revision + "\n\n")
    return "".join(block.format(i=i) for i in range(cores)) + tail


PI4_CPUINFO = _arm_cpuinfo("fp asimd evtstrm crc32 cpuid", "0xd08", "0x0", "3",
                           _PI_TAIL.format(rev="c03114", model="Raspberry Pi 4 Model B Rev 1.4"))
PI5_CPUINFO = _arm_cpuinfo("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                           "lrcpc dcpop asimddp", "0xd0b", "0x4", "1",
                           _PI_TAIL.format(rev="d04170", model="Raspberry Pi 5 Model B Rev 1.0"))

_X86_BASE_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
                   "sse2 ht syscall nx lm constant_tsc pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt "
                   "aes xsave avx f16c rdrand lahf_lm abm bmi1 avx2 smep bmi2 erms")


def _x86_cpuinfo(model: str, extra_flags: str = "", cores: int = 2, threads_per_core: int = 2) -> str:
    blocks = []
    for i in range(cores * threads_per_core):
        blocks.append(f"processor\t: {i}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
                      f"model name\t: {model}\nphysical id\t: 0\nsiblings\t: {cores * threads_per_core}\n"
                      f"core id\t\t: {i % cores}\ncpu cores\t: {cores}\n"
                      f"flags\t\t: {_X86_BASE_FLAGS} {extra_flags}\nbogomips\t: 5187.81\n"
                      "power management:\n\n")
    return "".join(blocks)


def _fake_root(tmp_path: Path, cpuinfo: str, model: str | None = None) -> Path:
    (tmp_path / "proc").mkdir(parents=True)
    (tmp_path / "proc" / "cpuinfo").write_text(cpuinfo)
    if model is not None:  # the kernel writes the device-tree model NUL-terminated
        (tmp_path / "proc" / "device-tree").mkdir()
        (tmp_path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    return tmp_path


# --- profiles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads(name: str) -> None:
    target = load_target(name)
    assert target.name == name and target.threads >= 1 and target.backends and target.precisions
    assert (REPO_TARGETS / f"{name}.toml").read_text().lstrip().startswith("#"), "each profile says why"
    assert set(target.precisions) <= set(ALL_PRECISIONS)
    assert target.status == "future" or set(target.backends) <= set(formats())
    assert set(target.peak_gflops) <= set(target.precisions)


def test_shipped_profile_choices() -> None:
    rpi4, rpi5 = load_target("rpi4"), load_target("rpi5")
    assert (rpi4.cpu, rpi4.threads, rpi4.backends, rpi4.precisions) == (
        "cortex-a72", 4, ("onnx", "tflite", "ncnn"), ("fp32", "int8"))
    assert rpi4.peak_gflops == {"fp32": 48.0}
    assert rpi5.cpu == "cortex-a76" and rpi5.peak_gflops["fp32"] == 154 and rpi5.peak_gflops["fp16"] == 307
    assert load_target("x86-vnni").precisions[0] == "int8"
    assert load_target("x86-vnni").backends == ("openvino", "onnx")
    tpu = load_target("edgetpu")
    assert (tpu.backends, tpu.precisions, tpu.tflite_io, tpu.delegate) == (
        ("tflite",), ("int8",), "uint8", "libedgetpu.so.1")
    assert tpu.backend_options("tflite") == {"delegate": "libedgetpu.so.1", "delegate_options": {}}
    assert tpu.tflite_compiler == "edgetpu_compiler"  # convert runs it on the INT8 model, not an option
    assert tpu.backend_options("onnx") == {}
    vx = load_target("npu-vx")
    assert (vx.delegate, vx.tflite_io) == ("libvx_delegate.so", "uint8")
    npu = load_target("openvino-npu")
    assert npu.openvino_device == "NPU" and npu.backend_options("openvino") == {"device": "NPU"}
    qnn = load_target("ort-qnn")
    assert qnn.backend_options("onnx") == {"device": "QNNExecutionProvider",
                                           "provider_options": {"backend_path": "libQnnHtp.so"}}
    rknn = load_target("rknn-lite")
    assert rknn.status == "future" and "not supported yet" in rknn.notes
    with pytest.raises(EdgeRuntimeError, match="documentation only .*RKNN toolkit not supported yet"):
        rknn.require_runnable()
    rpi4.require_runnable()
    assert {t.name for t in all_targets()} >= set(SHIPPED)


def test_user_profile_loads_by_path(tmp_path: Path) -> None:
    path = tmp_path / "myboard.toml"
    path.write_text('# my board: an A55 with an external delegate\n'
                    'name = "myboard"\narch = "aarch64"\nthreads = 2\n'
                    'backends = ["tflite", "onnx"]\nprecisions = ["int8"]\n'
                    'delegate = "/opt/vendor/libmy_delegate.so"\ndelegate_options = { cache = "/tmp/c" }\n')
    target = load_target(str(path))
    assert target == Target(name="myboard", arch="aarch64", description="", threads=2,
                            backends=("tflite", "onnx"), precisions=("int8",),
                            delegate="/opt/vendor/libmy_delegate.so", delegate_options={"cache": "/tmp/c"})
    assert target.status == "supported" and target.peak_gflops == {} and target.cpu == ""


def test_user_profile_in_config_dir_is_found_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~/.config/edge-runtime/targets is searched: a new device needs a file, no code."""
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".config" / "edge-runtime" / "targets"
    folder.mkdir(parents=True)
    (folder / "jetson-cpu.toml").write_text('name = "jetson-cpu"\narch = "aarch64"\ncpu = "cortex-a78ae"\n'
                                            'threads = 6\nbackends = ["onnx"]\nprecisions = ["fp32"]\n')
    assert available_targets()["jetson-cpu"] == folder / "jetson-cpu.toml"
    assert load_target("jetson-cpu").cpu == "cortex-a78ae"
    assert "jetson-cpu" in targets_table(all_targets())
    # found by its file name, so a different name inside would be unreachable: an error
    (folder / "typo.toml").write_text('name = "tpyo"\narch = "aarch64"\nbackends = ["onnx"]\nprecisions = ["fp32"]\n')
    with pytest.raises(EdgeRuntimeError, match=r"typo\.toml: name 'tpyo' must match the file name"):
        load_target("typo")


def test_profile_installed_with_pip_user_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pip install --user`` puts the wheel's data files (share/edge-runtime/targets) under the user
    scheme's data folder, the user base (PYTHONUSERBASE, ~/.local): searched after sys.prefix."""
    import site
    import sysconfig

    assert sysconfig.get_path("data", sysconfig.get_preferred_scheme("user")) == site.getuserbase()  # pip's rule
    monkeypatch.setattr(site, "USER_BASE", str(tmp_path))
    folder = tmp_path / "share" / "edge-runtime" / "targets"
    folder.mkdir(parents=True)
    (folder / "user-board.toml").write_text('name = "user-board"\narch = "aarch64"\nbackends = ["onnx"]\n'
                                            'precisions = ["fp32"]\n')
    assert available_targets()["user-board"] == folder / "user-board.toml"
    assert load_target("user-board").arch == "aarch64"


def test_old_style_profile_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.toml"
    path.write_text('name = "legacy"\narch = "x86_64"\ndescription = "old"\nthreads = "physical"\n'
                    'backends = ["onnx"]\nprecisions = ["fp32"]\n')
    assert load_target(str(path)).threads == physical_cores()


@pytest.mark.parametrize("body, message", [
    ('name = "bad"\narch = "x86_64"\nbackends = ["onnx"]\nprecisions = ["fp32"]\nthreds = 4\n',
     "unknown key 'threds' (known: name, arch, description, threads,"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["onnx"]\nprecisions = ["fp32"]\nthreads = "four"\n',
     "'threads' must be a positive integer or \"physical\", got 'four'"),
    ('name = "bad"\narch = "x86_64"\nbackends = "onnx"\nprecisions = ["fp32"]\n',
     "'backends' must be a non-empty list of strings"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["onnx"]\nprecisions = ["fp32"]\npeak_gflops = { fp32 = "a lot" }\n',
     "peak_gflops.fp32 must be a positive number"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["onnx"]\nprecisions = ["fp32"]\ndelegate = "libx.so"\n',
     "'delegate' is set but 'tflite' is not in backends"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["onxx"]\nprecisions = ["fp32"]\n',
     "unknown backend 'onxx' (known: onnx, openvino, tflite, ncnn)"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["tflite"]\nprecisions = ["int8"]\ntflite_io = "u8"\n',
     "'tflite_io' must be one of float32, int8, uint8, got 'u8'"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["openvino"]\nprecisions = ["int8"]\n'
     'openvino_inference_precision = "f16"\n', "'openvino_inference_precision' must be one of auto, bf16, f32, got 'f16'"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["onnx"]\nprecisions = ["int8"]\nopenvino_inference_precision = "bf16"\n',
     "'openvino_inference_precision' is set but 'openvino' is not in backends"),
    ('name = "bad"\narch = "x86_64"\nbackends = ["onnx"]\nprecisions = ["fp32"]\nstatus = "maybe"\n',
     "'status' must be one of supported, future"),
    ('arch = "x86_64"\nbackends = ["onnx"]\nprecisions = ["fp32"]\n', "missing required key 'name'"),
    ('name = "bad"\narch = x86_64\n', "not a valid target profile"),
])
def test_bad_profile_is_a_one_line_error_naming_the_file(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(EdgeRuntimeError) as err:
        load_target(str(path))
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text, text


def test_unknown_target_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(EdgeRuntimeError, match=r"no such profile \(known: .*rpi4"):
        load_target("rpi3")
    with pytest.raises(EdgeRuntimeError, match="file not found"):
        load_target(str(tmp_path / "nope.toml"))


def test_targets_table_lists_every_profile() -> None:
    targets = [load_target(str(p)) for p in available_targets().values()]
    lines = targets_table(targets).splitlines()
    assert lines[0].split() == ["target", "arch", "cpu", "threads", "backends", "precisions",
                                "delegate/EP/device", "status"]
    assert len(lines) == 2 + len(targets)
    names = [line.split()[0] for line in lines[2:]]
    assert set(names) >= set(SHIPPED)
    row = {line.split()[0]: line for line in lines[2:]}
    assert "libedgetpu.so.1" in row["edgetpu"] and "QNNExecutionProvider" in row["ort-qnn"]
    assert row["rknn-lite"].rstrip().endswith("future") and "cortex-a72" in row["rpi4"]


def test_efficiency_is_percent_of_peak() -> None:
    assert efficiency(0.9e9, 10.0, 180.0) == pytest.approx(100.0)  # 1.8 GFLOP in 10 ms = 180 GFLOP/s
    assert efficiency(0.9e9, 20.0, 180.0) == pytest.approx(50.0)
    # a 0.24 GMAC detector at 25 ms on a Pi 4: 19.2 GFLOP/s of 48 = 40 %
    assert efficiency(0.24e9, 25.0, load_target("rpi4").peak_gflops["fp32"]) == pytest.approx(40.0)
    with pytest.raises(ValueError):
        efficiency(1e9, 0.0, 100.0)


# --- host detection ----------------------------------------------------------------------------

def test_detect_raspberry_pi_4(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, PI4_CPUINFO, "Raspberry Pi 4 Model B Rev 1.4")
    host = detect_host(root, machine="aarch64")
    assert (host.arch, host.cpu, host.board, host.cores) == (
        "aarch64", "Cortex-A72", "Raspberry Pi 4 Model B Rev 1.4", 4)
    assert host.suggested_target == "rpi4" and host.matching_targets == ["rpi4", "arm64"]
    assert host.int8_fast is False and host.fp16_fast is False
    assert host.flags == ["asimd"] and host.npu_libraries == []
    assert host.ort_providers is None and host.openvino_devices is None  # a fake root: not queried
    lines = host.describe()
    assert ("Cortex-A72 has no dot-product instructions: INT8 rarely beats FP32 here; let bench decide"
            in lines)
    assert "Board: Raspberry Pi 4 Model B Rev 1.4" in lines and lines[-1].startswith("Suggested target: rpi4")
    assert host.to_dict()["suggested_target"] == "rpi4"


def test_detect_raspberry_pi_5_arch_from_cpuinfo(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, PI5_CPUINFO, "Raspberry Pi 5 Model B Rev 1.0")
    host = detect_host(root)  # machine inferred from the cpuinfo of a non-running root
    assert (host.arch, host.cpu, host.suggested_target) == ("aarch64", "Cortex-A76", "rpi5")
    assert host.int8_fast is True and host.fp16_fast is True
    assert {"asimddp", "asimdhp", "fphp"} <= set(host.flags)
    assert not any("rarely beats FP32" in line for line in host.describe())


def test_detect_pi_board_from_cpuinfo_model_without_device_tree(tmp_path: Path) -> None:
    host = detect_host(_fake_root(tmp_path, PI4_CPUINFO), machine="aarch64")
    assert host.board == "Raspberry Pi 4 Model B Rev 1.4" and host.suggested_target == "rpi4"


def test_detect_generic_arm_and_big_little(tmp_path: Path) -> None:
    a55 = _arm_cpuinfo("fp asimd atomics fphp asimdhp cpuid asimddp", "0xd05", "0x2", "0", cores=4)
    a76 = _arm_cpuinfo("fp asimd atomics fphp asimdhp cpuid asimddp", "0xd0b", "0x4", "0", cores=4)
    root = _fake_root(tmp_path, a55 + a76, "Radxa ROCK 5B")
    host = detect_host(root, machine="aarch64")
    assert host.cpu == "4x Cortex-A55 + 4x Cortex-A76" and host.cores == 8
    assert host.suggested_target == "arm64" and host.int8_fast


def test_detect_x86_with_avx512_vnni(tmp_path: Path) -> None:
    cpuinfo = _x86_cpuinfo("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "avx512f avx512_vnni")
    host = detect_host(_fake_root(tmp_path, cpuinfo), machine="x86_64")
    assert host.suggested_target == "x86-vnni" and host.matching_targets == ["x86-vnni", "x86"]
    assert host.int8_fast and not host.fp16_fast and host.cores == 2  # 4 hyper-threads on 2 cores
    assert host.cpu == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz" and host.board == ""


def test_detect_plain_avx2_x86(tmp_path: Path) -> None:
    host = detect_host(_fake_root(tmp_path, _x86_cpuinfo("Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz")),
                       machine="AMD64")  # the Windows spelling is normalised
    assert (host.arch, host.suggested_target, host.int8_fast) == ("x86_64", "x86", False)
    assert "avx2" in host.flags and "avx512_vnni" not in host.flags
    assert "No VNNI/AMX: INT8 rarely beats FP32 here; let bench decide" in host.describe()


def test_detect_edgetpu_library(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, PI4_CPUINFO, "Raspberry Pi 4 Model B Rev 1.4")
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "libedgetpu.so.1").write_bytes(b"\x7fELF")
    host = detect_host(root, machine="aarch64")
    assert host.npu_libraries == ["/usr/lib/libedgetpu.so.1"]
    assert host.suggested_target == "edgetpu" and host.matching_targets == ["edgetpu", "rpi4", "arm64"]
    assert any("libedgetpu.so.1" in line for line in host.describe())


def test_detect_vx_delegate_in_multiarch_dir(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, _arm_cpuinfo("fp asimd evtstrm crc32 cpuid", "0xd03", "0x0", "4"),
                      "NXP i.MX8MPlus EVK board")
    (root / "usr" / "lib" / "aarch64-linux-gnu").mkdir(parents=True)
    (root / "usr" / "lib" / "aarch64-linux-gnu" / "libvx_delegate.so").write_bytes(b"\x7fELF")
    host = detect_host(root)
    assert host.cpu == "Cortex-A53" and host.suggested_target == "npu-vx"
    assert "Cortex-A53 has no dot-product instructions: INT8 rarely beats FP32 here; let bench decide" \
        in host.describe()


def test_every_suggestion_is_a_shipped_profile(tmp_path: Path) -> None:
    cases = {"pi4": (PI4_CPUINFO, "aarch64"), "pi5": (PI5_CPUINFO, "aarch64"),
             "vnni": (_x86_cpuinfo("x", "avx512_vnni"), "x86_64"), "avx2": (_x86_cpuinfo("x"), "x86_64")}
    for name, (cpuinfo, machine) in cases.items():
        host = detect_host(_fake_root(tmp_path / name, cpuinfo), machine=machine)
        assert set(host.matching_targets) <= set(SHIPPED), host.matching_targets


def test_detect_running_host_and_cpu_summary() -> None:
    host = detect_host()
    assert host.arch and host.cores == physical_cores() and host.describe()
    assert host.suggested_target is None or host.suggested_target in available_targets()
    summary = cpu_summary()
    assert summary["physical_cores"] == physical_cores() and isinstance(summary["flags"], list)
