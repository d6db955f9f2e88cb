"""The host's converters, keyed by artifact format: how ``convert`` makes each format from FP32 ONNX.

Format and precision names come from the device's backend registry (``edge_runtime.backends``):
this table only says, per registered format, which function writes each precision and which host
libraries those functions need. A format the registry knows without an entry here is refused with
one clear line. Light on purpose (no torch, tqdm or OpenCV): ``demo`` reads it on a device install.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from edge_runtime.backends import all_precisions, formats, precisions
from edge_runtime.errors import UsageError

# the artifact export writes: every conversion starts from it, none makes it
REFERENCE = ("onnx", "fp32")


@dataclass(frozen=True)
class FormatConverter:
    """``functions``: precision -> "module:function" (``ConvertJob -> ConvertResult``), imported on use.
    ``toolchain``: modules those functions need, ``precision_toolchain`` more for one precision with the
    default options (``demo`` builds a format x precision only where all import).
    ``unsupported``: precision -> why this format has no converter for it (a warning, then skipped).
    ``host_checks``: precision -> "module:function" returning why this host cannot make it (None: it can;
    a warning, then skipped), asked before any work."""

    functions: dict[str, str]
    toolchain: tuple[str, ...]
    unsupported: dict[str, str] = field(default_factory=dict)
    precision_toolchain: dict[str, tuple[str, ...]] = field(default_factory=dict)
    host_checks: dict[str, str] = field(default_factory=dict)

    def unavailable_here(self, precision: str) -> str | None:
        """Why this host cannot make ``precision`` in this format (``host_checks``), or None."""
        check = self.host_checks.get(precision)
        if check is None:
            return None
        module, func = check.split(":")
        return getattr(importlib.import_module(module), func)()

    def missing_libraries(self, precision: str) -> list[str]:
        """The modules ``precision``'s conversion needs that are not installed here."""
        needed = self.toolchain + self.precision_toolchain.get(precision, ())
        return [m for m in needed if importlib.util.find_spec(m) is None]


CONVERTERS: dict[str, FormatConverter] = {
    "onnx": FormatConverter({"int8": "converters.quantize_onnx:quantize_onnx_int8"}, ("onnxruntime",), {
        "fp16": "ONNX Runtime's CPU provider has no FP16 kernels for most ops and inserts casts "
                "(slower than FP32); use openvino or tflite for FP16"},
        precision_toolchain={"int8": ("nncf",)}),  # the default quantiser (--onnx-quantizer nncf)
    "openvino": FormatConverter(dict.fromkeys(precisions("openvino"), "converters.convert_openvino:convert_openvino"),
                                ("openvino", "nncf"),
                                host_checks={"bf16": "converters.convert_openvino:bf16_unavailable"}),
    "tflite": FormatConverter(dict.fromkeys(precisions("tflite"), "converters.tflite:convert_tflite"),
                              ("onnx2tf", "tensorflow")),
    "ncnn": FormatConverter(dict.fromkeys(("fp32", "fp16"), "converters.convert_ncnn:convert_ncnn"), ("pnnx", "onnx"), {
        "int8": "ncnn quantises with its ncnn2table/ncnn2int8 tools, which no wheel installs "
                "(the ncnn backend runs an INT8 .param/.bin made with them)"}),
}


def convertible_formats() -> tuple[str, ...]:
    """The registered formats this host has a converter for, in registry order: what ``convert`` makes
    when no format is named."""
    return tuple(f for f in formats() if f in CONVERTERS)


def check_formats(wanted: list[str]) -> None:
    """An error naming the first problem: a format no backend runs, or one this host cannot convert to."""
    bad = [f for f in wanted if f not in formats()]
    if bad:
        raise UsageError(f"unknown format {bad}; choose from {', '.join(formats())}")
    missing = [f for f in wanted if f not in CONVERTERS]
    if missing:
        have = ", ".join(convertible_formats())
        raise UsageError(f"no converter for format {', '.join(missing)} (the device runs it, but this host "
                         f"cannot make it; convertible: {have})")


def check_precisions(wanted: list[str]) -> None:
    bad = [p for p in wanted if p not in all_precisions()]
    if bad:
        raise UsageError(f"unknown precision {bad}; choose from {', '.join(all_precisions())}")


def skip_reason(fmt: str, precision: str) -> str:
    """Why ``fmt`` ``precision`` is not converted (its backend does not run it, or no converter writes it)."""
    if precision not in precisions(fmt):
        return f"the {fmt} backend does not run {precision}"
    return CONVERTERS[fmt].unsupported.get(precision, f"no converter writes {fmt} {precision}")
