"""Host side: a checkpoint -> a package folder (FP32 ONNX + manifest.json) -> more artifacts, each checked.

``Converter`` is the front door; its work is done by ``export_onnx.export_package`` and
``convert.convert_package``, imported on use so that ``import converters`` stays light (torch, onnx and
TensorFlow load only for the step that needs them).

>>> pkg = Converter.export(model="demo-shapes", out="pkg/")         # bundled weights
>>> pkg.to("openvino", precision="fp16")                            # verified against FP32, listed
>>> pkg.to("tflite", precision="int8", calib="calib_images/")
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import UsageError

if TYPE_CHECKING:
    from edge_runtime.deploy.targets import Target
    from edge_runtime.manifest import Manifest

__all__ = ["Converter"]

MIN_OPSET = 13


def _names(value: str | Sequence[str] | None) -> list[str]:
    """A comma-separated string or a list of names -> the list; None -> []."""
    if value is None:
        return []
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)


class Converter:
    """A package folder on the host: ``export`` writes one from a checkpoint, ``to`` adds artifacts to it."""

    def __init__(self, package: str | Path) -> None:
        self.package = Path(package)

    @classmethod
    def export(cls, model: str, out: str | Path, weights: str | Path | None = None, *, imgsz: int | None = None,
               classes: str | Path | None = None, resize: str | None = None, opset: int = 17,
               simplify: bool = True, force: bool = False,
               progress: Callable[[str], None] = lambda msg: None) -> Converter:
        """Export ``model`` (a name from ``edge-runtime export --help``) with ``weights`` (a checkpoint,
        "official" / "official:NAME" for the downloaded, sha256-checked official one, None for the bundled
        weights of demo-shapes) to FP32 ONNX + manifest.json in ``out``, which must be new or empty unless
        ``force``. Returns the Converter of the new package."""
        from edge_runtime.fsutil import require_new_folder

        out = require_new_folder(out, force, "pick a new folder, or force=True / --force to write into it")
        if opset < MIN_OPSET:
            raise UsageError(f"opset {opset}: use {MIN_OPSET} or newer")
        from .export_onnx import export_package

        try:
            if isinstance(weights, str) and weights.split(":")[0] == "official":
                from .official import fetch, resolve

                entry = resolve(weights, model, imgsz)
                progress(f"official weights {entry.name}: {entry.description}")
                weights = fetch(entry, progress=sys.stderr.isatty())[0]
            export_package(model, weights, out, imgsz=imgsz, classes=classes, resize=resize, opset=opset,
                           simplify=simplify, progress=progress)
        except ValueError as exc:  # unknown model or weights name and similar argument errors
            raise UsageError(str(exc)) from None
        return cls(out)

    def to(self, formats: str | Sequence[str] | None = None, precision: str | Sequence[str] | None = None,
           calib: str | Path | None = None, *, target: str | Target | None = None, tflite_io: str | None = None,
           calib_method: str = "minmax", onnx_quantizer: str = "auto", ov_preset: str = "auto",
           openvino_inference_precision: str | None = None, progress: Callable[[str], None] = lambda msg: None,
           **convert_options: Any) -> Manifest:
        """Add ``formats`` x ``precision`` (names or comma-separated lists of onnx/openvino/tflite and
        fp32/fp16/bf16/int8) to the package, each checked against FP32 ONNX; INT8 needs ``calib`` (image
        folder, video or COCO json). ``target`` (profile name, .toml path or Target) supplies what is left None:
        its backends, precisions, TFLite I/O type and OpenVINO INT8 inference precision; with neither, every
        format and every precision but the opt-in ones (OpenVINO bf16, ``default_precisions``).
        ``openvino_inference_precision``: the hint an OpenVINO INT8 IR is verified and run with ("auto": on a
        BF16 CPU the faster of bf16 and f32, "bf16", "f32"; None: the target's, else "auto"). ``ov_preset``: NNCF's
        preset for OpenVINO INT8 ("auto": mixed and performance both measured, the faster one that meets the
        budget ships, without one the more accurate; "mixed"; "performance"). ``onnx_quantizer``: ONNX INT8's
        recipe ("auto": nncf and nncf-u8s8 both measured; "nncf"; "nncf-u8s8"; "ort"; ``quantize_onnx``).
        ``convert_options`` go to ``convert.convert_package`` as they are (calib_size, int8_min_cosine,
        val_images, val_size, max_map_drop, val_data, val_format, class_map, keep_failed, measure_speed).

        Returns the updated manifest; raises ``convert.ArtifactRefused`` (which holds it) when an artifact
        failed its check, after the others were added."""
        from edge_runtime.backends import default_precisions
        from edge_runtime.deploy.targets import conversion_plan, runnable_target

        from .convert import convert_package
        from .convert_job import target_options
        from .formats import convertible_formats

        profile = runnable_target(target) if target is not None else None
        formats = _names(formats) or ([] if profile else list(convertible_formats()))
        plan = conversion_plan(formats, _names(precision) or ([] if profile else list(default_precisions())),
                               tflite_io, profile)
        if profile is not None:
            progress(f"target {profile.name}: {plan.describe()}")
        options = {**plan.settings, "calib_method": calib_method, "onnx_quantizer": onnx_quantizer,
                   "ov_preset": ov_preset, "tflite_io": plan.tflite_io}
        if openvino_inference_precision is not None:
            options["openvino_inference_precision"] = openvino_inference_precision
        if profile is not None:  # the ONNX recipe times candidates only on the target's own CPU
            options.update(target_options(profile))
        try:
            return convert_package(self.package, list(plan.formats), list(plan.precisions), calib=calib,
                                   options=options, progress=progress, **convert_options)
        except ValueError as exc:  # an unknown format, precision, calib_method ... as one line
            raise UsageError(str(exc)) from None

    @property
    def manifest(self) -> Manifest:
        """The package's manifest as it is on disk now."""
        from edge_runtime.manifest import load_manifest

        return load_manifest(self.package)

    def __repr__(self) -> str:
        return f"Converter({str(self.package)!r})"
