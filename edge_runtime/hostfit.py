"""Whether an artifact's recorded accuracy holds on the CPU that runs it.

convert measures every artifact against FP32 on the converting CPU and records that CPU beside the figures
(``fp32_agreement.measured_on``). Some INT8 kernels compute differently on another kind of CPU; this module
names those cases, so that ``--backend auto`` leaves such an artifact out and a named one runs with a warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends import BACKENDS
from .deploy.hostinfo import cpu_summary, host_int8_saturates, int8_saturates
from .manifest import Artifact

if TYPE_CHECKING:
    from .deploy.targets import Target

RECONVERT = "reconvert it on this CPU or with --target x86 (7-bit weights)"
# devices that never run an artifact on the CPU (AUTO, MULTI, HETERO and providers such as OpenVINO's may);
# a named device that is missing falls back to the CPU in the backends, which this rule does not see
_NOT_CPU = ("GPU", "NPU", "CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
            "QNNExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")


def describe_cpu(record: dict[str, Any]) -> str:
    """'AMD EPYC (x86_64)' from a ``cpu_summary()`` or ``measured_on`` record."""
    return f"{record.get('cpu') or 'unknown CPU'} ({record.get('arch') or '?'})"


def recorded_cpu(art: Artifact) -> dict[str, Any] | None:
    """The CPU convert checked ``art`` on (``fp32_agreement.measured_on``), None when not recorded."""
    agreement = art.extra.get("fp32_agreement")
    measured = agreement.get("measured_on") if isinstance(agreement, dict) else None
    return measured if isinstance(measured, dict) else None


def _weight_bits(quantization: Any) -> int | None:
    """The INT8 weights' width as recorded, or as the older records imply it (ONNX Runtime's ``reduce_range``,
    OpenVINO's ``overflow_fix``); None when nothing says."""
    if not isinstance(quantization, dict):
        return None
    if quantization.get("weight_bits") in (7, 8):
        return quantization["weight_bits"]
    if isinstance(quantization.get("reduce_range"), bool):
        return 7 if quantization["reduce_range"] else 8
    if quantization.get("overflow_fix") in ("first_layer", "disable"):
        return 8
    stem = quantization.get("stem_quantized")
    eight_bit_stem = isinstance(stem, dict) and stem.get("weight_bits") == 8
    return 7 if quantization.get("overflow_fix") == "enable" and not eight_bit_stem else None


def host_mismatch(art: Artifact, host: dict[str, Any] | None = None, options: dict[str, Any] | None = None
                  ) -> str | None:
    """Why ``art``'s recorded accuracy does not hold on this CPU, None when it does (``host``: ``cpu_summary()``'s
    form, default this CPU): an INT8 artifact of a backend whose CPU kernels saturate on x86 without VNNI/AMX
    (``Backend.int8_saturates_without_vnni``), without 7-bit weights, measured on a CPU that does not saturate
    or on an unrecorded one, run on one that does (measured in docs/formats-and-int8.md). A CPU whose flags
    were not read is not judged. ``options`` naming a device that is not the CPU skip the rule."""
    here = host_int8_saturates() if host is None else int8_saturates(str(host.get("arch", "")), host.get("flags"))
    if not here or not _cpu_int8(art, options):
        return None
    host = host if host is not None else cpu_summary()
    return _mismatch(art, f"this CPU ({describe_cpu(host)}) has no VNNI/AMX")


def target_mismatch(art: Artifact, target: Target) -> str | None:
    """``host_mismatch`` for the CPUs a target profile stands for: why ``art``'s record does not hold on every
    one of them (``Target.int8_saturates``: the x86 profile's CPUs without VNNI/AMX), None when it does."""
    if not target.int8_saturates or not _cpu_int8(art, target.backend_options(art.format)):
        return None
    return _mismatch(art, f"target {target.name}'s CPUs may have no VNNI/AMX")


def _cpu_int8(art: Artifact, options: dict[str, Any] | None) -> bool:
    """Whether ``art`` is INT8 of a backend whose CPU kernels saturate without VNNI/AMX, run on the CPU
    (``options`` naming another device: not)."""
    cls = BACKENDS.get(art.format)
    if cls is None or art.precision != "int8" or not cls.int8_saturates_without_vnni:
        return False
    device = str((options or {}).get("device") or "CPU")
    return device.split(".")[0] not in _NOT_CPU


def _mismatch(art: Artifact, saturating_cpu: str) -> str | None:
    """Why ``art`` does not hold on ``saturating_cpu`` (a CPU that saturates, in words), None when it does."""
    bits = _weight_bits(art.extra.get("quantization"))
    if bits == 7:
        return None
    measured = recorded_cpu(art)
    if measured is not None and isinstance(measured.get("flags"), list) and \
            int8_saturates(str(measured.get("arch", "")), measured["flags"]):
        return None  # measured on a CPU that saturates too: the record holds here
    where = "an unrecorded CPU" if measured is None else \
        describe_cpu(measured) + ("" if isinstance(measured.get("flags"), list) else ", its flags unread")
    return (f"INT8 with {'8-bit' if bits == 8 else 'unrecorded-width'} weights measured on {where}; "
            f"{saturating_cpu}, where {BACKENDS[art.format].name}'s INT8 kernels saturate")
