"""Whether an artifact's recorded accuracy holds on the CPU that runs it.

convert measures every artifact against FP32 on the converting CPU and records that CPU beside the figures
(``fp32_agreement.measured_on``). Some INT8 kernels compute differently on another kind of CPU; this module
names those cases, so that ``--backend auto`` leaves such an artifact out and a named one runs with a warning.
"""

from __future__ import annotations

from typing import Any

from .backends import BACKENDS
from .deploy.hostinfo import cpu_summary, int8_saturates
from .manifest import Artifact


def _cpu(record: dict[str, Any]) -> str:
    return f"{record.get('cpu') or 'unknown CPU'} ({record.get('arch') or '?'})"


def host_mismatch(art: Artifact, host: dict[str, Any] | None = None, options: dict[str, Any] | None = None
                  ) -> str | None:
    """Why ``art``'s recorded accuracy does not hold on this CPU (``host``: ``cpu_summary()``'s form, default
    this one), None when it does: an INT8 artifact of a backend whose CPU kernels saturate on x86 without
    VNNI/AMX (``Backend.int8_saturates_without_vnni``), with 8-bit weights, measured on a CPU that does not
    saturate (or on an unrecorded one), run on one that does (measured in docs/formats-and-int8.md).
    ``options`` naming a device other than the CPU (an execution provider, an OpenVINO GPU/NPU) skip the rule."""
    cls = BACKENDS.get(art.format)
    if cls is None or art.precision != "int8" or not cls.int8_saturates_without_vnni:
        return None
    if (options or {}).get("device") not in (None, "CPU", "CPUExecutionProvider"):
        return None
    host = host if host is not None else cpu_summary()
    if not int8_saturates(str(host.get("arch", "")), list(host.get("flags") or ())):
        return None
    quantization = art.extra.get("quantization")
    if isinstance(quantization, dict) and quantization.get("weight_bits") == 7:
        return None
    agreement = art.extra.get("fp32_agreement")
    measured = agreement.get("measured_on") if isinstance(agreement, dict) else None
    if isinstance(measured, dict) and isinstance(measured.get("flags"), list) and \
            int8_saturates(str(measured.get("arch", "")), measured["flags"]):
        return None  # measured on a CPU that saturates too: the record holds here
    where = _cpu(measured) if isinstance(measured, dict) else "an unrecorded CPU"
    return (f"INT8 with 8-bit weights measured on {where}; this CPU ({_cpu(host)}) has no VNNI/AMX, where "
            f"{cls.name}'s INT8 kernels saturate")


RECONVERT = "reconvert it on this CPU or with --target x86 (7-bit weights)"
