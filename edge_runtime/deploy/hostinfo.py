"""What this host is: physical cores, the CPU features that decide speed, the board and the
accelerator libraries present, read from /proc and a few library folders. ``detect_host`` takes a
root folder so tests (and offline checks of a device's image) can point it at a copied tree."""

from __future__ import annotations

import os
import platform
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backends.base import DeviceListing

_X86_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
              "amx_int8", "amx_bf16", "amx_fp16")
_ARM_FLAGS = ("neon", "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve")
_INTERESTING_FLAGS = _X86_FLAGS + _ARM_FLAGS
# cpu_summary keeps its original list and order: autoselect caches per host by these flags, so a
# longer list would make every cached choice re-measure for no gain
_SUMMARY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c", "fma",
                  "asimd", "asimddp", "asimdhp", "fphp", "neon")
# what makes INT8 / FP16 arithmetic faster than FP32 rather than merely smaller
_X86_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8")
_X86_FP16 = ("avx512_fp16", "amx_fp16")
_ARM_INT8 = ("asimddp",)
_ARM_FP16 = ("asimdhp", "fphp")

# "CPU part" for implementer 0x41 (Arm Ltd), as in Linux arch/arm64/include/asm/cputype.h
_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
              "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
              "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
              "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd49": "Neoverse-N2",
              "0xd4f": "Neoverse-V2"}

# library -> the target profile it enables; checked in this order (most specific accelerator first)
NPU_LIBRARIES = {"libedgetpu.so.1": "edgetpu", "libvx_delegate.so": "npu-vx", "libQnnHtp.so": "ort-qnn"}
_LIBRARY_DIRS = ("usr/lib", "usr/lib/aarch64-linux-gnu", "usr/lib/x86_64-linux-gnu", "usr/local/lib", "usr/lib64")
_X86_ARCHES = ("x86_64", "i386", "i686")
_MACHINE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}  # Windows / macOS spellings


# --- /proc/cpuinfo ------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """cpuinfo as blank-line separated blocks of ``key: value`` (one per processor, plus ARM's
    trailing Hardware/Revision/Model block)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not key:
            if current:
                blocks.append(current)
            current = {}
        elif sep:
            current[key] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _core_count(blocks: list[dict[str, str]]) -> int:
    """Physical cores listed (x86 names them by physical/core id; ARM lists one block per core)."""
    processors = [b for b in blocks if "processor" in b]
    cores = {(b["physical id"], b["core id"]) for b in processors if "physical id" in b and "core id" in b}
    return len(cores) or len(processors)


def _flags(blocks: list[dict[str, str]]) -> set[str]:
    found: set[str] = set()
    for block in blocks:
        found.update(block.get("flags", "").split())
        found.update(block.get("Features", "").split())
    return found


def _arm_cores(blocks: list[dict[str, str]]) -> list[str]:
    """Core names, one per processor block whose part we know (Arm-designed cores only)."""
    return [_ARM_PARTS[b["CPU part"].lower()] for b in blocks
            if b.get("CPU part", "").lower() in _ARM_PARTS and b.get("CPU implementer", "0x41").lower() == "0x41"]


def _cpu_name(blocks: list[dict[str, str]]) -> str:
    """x86 "model name"; ARM core names ("Cortex-A72", or "4x Cortex-A55 + 4x Cortex-A76" on big.LITTLE)."""
    if not any("CPU part" in b for b in blocks):  # x86 (32-bit ARM kernels also write a vague "model name")
        return next((b["model name"] for b in blocks if b.get("model name")), "")
    counts = Counter(_arm_cores(blocks))
    if len(counts) == 1:
        return next(iter(counts))
    if counts:
        return " + ".join(f"{n}x {name}" for name, n in counts.items())
    for block in blocks:
        for key in ("model name", "Hardware"):
            if block.get(key):
                return block[key]
    return ""


def _infer_machine(blocks: list[dict[str, str]]) -> str:
    """The architecture a cpuinfo belongs to, for roots other than the running system."""
    for block in blocks:
        if "CPU implementer" in block:
            return "armv7l" if block.get("CPU architecture") == "7" else "aarch64"
        if "vendor_id" in block or "flags" in block:
            return "x86_64"
    return ""


def _board(root: Path, blocks: list[dict[str, str]]) -> str:
    """Device-tree model ("Raspberry Pi 4 Model B Rev 1.4"), else cpuinfo's Model line, else ''."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        model = _read_text(root / rel).replace("\x00", "").strip()
        if model:
            return model
    return next((b["Model"] for b in blocks if b.get("Model")), "")


@lru_cache(maxsize=1)
def _host_blocks() -> tuple[dict[str, str], ...]:
    return tuple(_cpuinfo_blocks(_read_text(Path("/proc/cpuinfo"))))


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores (hyper-threads share a core's SIMD units, so they rarely help inference)."""
    listed = _core_count(list(_host_blocks()))
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(listed, logical)) if listed else max(1, logical)


@lru_cache(maxsize=1)
def cpu_summary() -> dict[str, object]:
    """Model name (with the board when known), architecture, core counts and the SIMD flags that
    matter, for benchmark headers."""
    blocks = list(_host_blocks())
    cpu = _cpu_name(blocks) or platform.processor() or platform.machine()
    board = _board(Path("/"), blocks)
    flags = _flags(blocks)
    return {"cpu": f"{board} ({cpu})" if board else cpu, "arch": platform.machine(), "board": board,
            "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
            "flags": [f for f in _SUMMARY_FLAGS if f in flags]}


def int8_saturates(arch: str, flags: list[str] | tuple[str, ...] | None) -> bool | None:
    """Whether this CPU's INT8 convolutions (ONNX Runtime's and OpenVINO's x86 kernels) multiply u8 x s8
    pairs with 16-bit saturation: x86 without VNNI or AMX, where AVX2/AVX-512BW's vpmaddubsw adds two
    products into an int16 that full 8-bit weights can overflow. ARM's widening multiplies and dot
    products, VNNI and AMX accumulate in 32 bits. None: an x86 CPU whose flags were not read (``flags``
    None: no /proc/cpuinfo, e.g. Windows or macOS)."""
    if not is_x86(arch):
        return False
    return None if flags is None else not any(f in flags for f in _X86_INT8)


def is_x86(arch: str) -> bool:
    return _MACHINE_ALIASES.get(arch.lower(), arch) in _X86_ARCHES


def _flags_read() -> bool:
    return any("flags" in block or "Features" in block for block in _host_blocks())


def host_int8_saturates() -> bool | None:
    """``int8_saturates`` for this CPU."""
    return measured_on()["int8_saturates"]


def measured_on() -> dict[str, Any]:
    """This CPU as a converter records it beside a measurement (``fp32_agreement.measured_on``; ``flags``
    null when they could not be read): the runtime compares it with the CPU it runs on
    (``hostfit.host_mismatch``, which decides from ``arch`` and ``flags``; ``int8_saturates`` is for people)."""
    summary = cpu_summary()
    flags = list(summary["flags"]) if _flags_read() else None
    return {"cpu": summary["cpu"], "arch": summary["arch"], "flags": flags,
            "int8_saturates": int8_saturates(str(summary["arch"]), flags)}


# --- host detection ---------------------------------------------------------------------------

@dataclass
class HostInfo:
    """What ``detect_host`` found. ``backend_devices``: per backend that lists devices, its
    ``DeviceListing.key`` (``ort_providers``, ``openvino_devices``) -> the devices its library sees,
    None when it is not installed or the root is not the running system; each is also an attribute
    and a top-level key of ``to_dict``. ``matching_targets`` lists every profile that fits, best
    first, and ``suggested_target`` is its first entry."""

    arch: str
    cpu: str
    board: str
    cores: int
    flags: list[str]
    int8_fast: bool
    fp16_fast: bool
    npu_libraries: list[str]
    backend_devices: dict[str, list[str] | None]
    matching_targets: list[str]
    suggested_target: str | None

    def __getattr__(self, name: str) -> list[str] | None:
        devices = self.__dict__.get("backend_devices", {})
        if name in devices:
            return devices[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def is_x86(self) -> bool:
        return self.arch in _X86_ARCHES

    @property
    def is_arm(self) -> bool:
        return self.arch == "aarch64" or self.arch.startswith("arm")

    def describe(self) -> list[str]:
        """Human-readable lines, ending with the suggested target."""
        lines = [f"CPU: {self.cpu or 'unknown'} ({self.arch or 'unknown arch'}), {self.cores} cores"]
        if self.board:
            lines.append(f"Board: {self.board}")
        lines.append(f"SIMD flags: {' '.join(self.flags) or 'none read'}")
        lines.extend(self._precision_lines())
        libs = ", ".join(self.npu_libraries) or "none found"
        lines.append(f"NPU/delegate libraries: {libs}")
        for listing in _device_listings():
            found = self.backend_devices.get(listing.key)
            listed = ", ".join(found) if found is not None else \
                f"not checked ({listing.library} not installed, or not this system)"
            lines.append(f"{listing.label}: {listed}")
        if self.suggested_target:
            others = [t for t in self.matching_targets if t != self.suggested_target]
            lines.append(f"Suggested target: {self.suggested_target}"
                         + (f" (also fits: {', '.join(others)})" if others else ""))
        else:
            lines.append("Suggested target: none of the shipped profiles fits this architecture")
        return lines

    def _precision_lines(self) -> list[str]:
        present = [f for f in self.flags if f in _X86_INT8 + _ARM_INT8]
        if self.int8_fast:
            int8 = f"INT8: fast integer dot products ({', '.join(present)}): INT8 artifacts should beat FP32"
        elif self.is_arm:
            int8 = (f"{self.cpu or 'This CPU'} has no dot-product instructions: "
                    "INT8 rarely beats FP32 here; let bench decide")
        elif self.is_x86:
            int8 = "No VNNI/AMX: INT8 rarely beats FP32 here; let bench decide"
        else:
            return []
        half = [f for f in self.flags if f in _X86_FP16 + _ARM_FP16]
        fp16 = (f"FP16 arithmetic: yes ({', '.join(half)}), FP16 can run at twice the FP32 rate where the "
                "backend uses it" if self.fp16_fast else
                "FP16 arithmetic: no (FP16 artifacts only halve the file; they compute in FP32)")
        return [int8, fp16]

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output; each backend's device list is a top-level key."""
        flat: dict[str, object] = {}
        for key, value in asdict(self).items():
            if key == "backend_devices":
                flat.update(value)
            else:
                flat[key] = value
        return flat


def _device_listings() -> list[DeviceListing]:
    """The registered backends' device listings, in registry order."""
    from ..backends import BACKENDS  # the registry imports this module: imported on use

    return [cls.device_listing for cls in BACKENDS.values() if cls.device_listing is not None]


def _backend_devices() -> dict[str, list[str] | None]:
    from ..backends import BACKENDS

    return {cls.device_listing.key: cls.list_devices() for cls in BACKENDS.values() if cls.device_listing}


def _npu_libraries(root: Path) -> list[str]:
    """Paths (as seen on that system) of the accelerator libraries present, in NPU_LIBRARIES order."""
    found = []
    for name in NPU_LIBRARIES:
        for folder in _LIBRARY_DIRS:
            if (root / folder / name).is_file():  # follows symlinks: a dangling one does not count
                found.append(f"/{folder}/{name}")
                break
    return found


def _matching_targets(arch: str, cores: list[str], board: str, int8_fast: bool, libraries: list[str],
                      devices: dict[str, list[str] | None]) -> list[str]:
    """Profiles that fit, best first: an accelerator, then the board, then the CPU family."""
    names = {Path(p).name for p in libraries}
    found = [target for lib, target in NPU_LIBRARIES.items() if lib in names]
    for listing in _device_listings():  # a device a backend's library sees (OpenVINO NPU, ORT QNN)
        for device in devices.get(listing.key) or []:
            target = listing.suggests.get(device)
            if target and target not in found:
                found.append(target)
    pi = re.search(r"Raspberry Pi (?:Compute Module )?(\d)", board)
    if pi and pi.group(1) in ("4", "5"):
        found.append(f"rpi{pi.group(1)}")
    elif "Raspberry Pi" in board and cores:  # a board name we do not parse: go by the core
        found += {"Cortex-A72": ["rpi4"], "Cortex-A76": ["rpi5"]}.get(cores[0], [])
    if arch == "x86_64":
        found += ["x86-vnni", "x86"] if int8_fast else ["x86"]
    elif arch == "aarch64":
        found.append("arm64")
    return found


def detect_host(root: Path = Path("/"), machine: str | None = None) -> HostInfo:
    """Inspect the system under ``root``: cpuinfo, device-tree model, accelerator libraries and,
    on the running system only, ONNX Runtime providers and OpenVINO devices. ``machine`` overrides
    the architecture (default: platform.machine() for "/", inferred from cpuinfo otherwise)."""
    root = Path(root)
    live = root.resolve() == Path("/")
    blocks = list(_host_blocks()) if live else _cpuinfo_blocks(_read_text(root / "proc" / "cpuinfo"))
    arch = machine or (platform.machine() if live else _infer_machine(blocks))
    arch = _MACHINE_ALIASES.get(arch.lower(), arch)
    flags = _flags(blocks)
    x86 = arch in _X86_ARCHES
    int8_fast = any(f in flags for f in (_X86_INT8 if x86 else _ARM_INT8))
    fp16_fast = any(f in flags for f in (_X86_FP16 if x86 else _ARM_FP16))
    board = _board(root, blocks)
    libraries = _npu_libraries(root)
    devices = _backend_devices() if live else {listing.key: None for listing in _device_listings()}
    cores = _arm_cores(blocks)
    matching = _matching_targets(arch, cores, board, int8_fast, libraries, devices)
    return HostInfo(arch=arch, cpu=_cpu_name(blocks) or (platform.processor() if live else ""), board=board,
                    cores=physical_cores() if live else _core_count(blocks),
                    flags=[f for f in _INTERESTING_FLAGS if f in flags], int8_fast=int8_fast, fp16_fast=fp16_fast,
                    npu_libraries=libraries, backend_devices=devices,
                    matching_targets=matching, suggested_target=matching[0] if matching else None)
