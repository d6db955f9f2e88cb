"""FP32 ONNX -> OpenVINO IR (.xml + .bin): FP32, FP16 (compressed weights) and INT8 (NNCF PTQ).

INT8 uses NNCF post-training quantisation on the FP32 ``ov.Model`` with the package's calibration
tensors (made by the runtime's own preprocessing). The decode tail - every op between the last
convolutions and the outputs (sigmoid, softmax, the distribution integral MatMul, reshapes, concats,
the obj x cls multiply) - stays in float: found by walking the graph back from the outputs, by op
type, so no node names are hard-coded.

The first convolutions (at most ``ov_float_first_convs`` convolutions deep from the input: the stem
and the convolutions reading its output, 3 layers in both models) also stay in float. NNCF's
accuracy-aware search reverted exactly these first on NanoDet-Plus-m; on 66 held-out COCO photos
they raised the worst per-image score-map cosine vs FP32 from 0.943 to 0.978 (NanoDet-Plus-m 416)
and from 0.797 to 0.849 (YOLO-FastestV2), the mean from 0.988 to 0.994 and from 0.979 to 0.985.
Beyond that the INT8 error is spread over the whole network (no single quantiser is worth more
than +0.0004 cosine), so more float layers buy little per layer.

Options (``job.options``):
  ``ov_preset``                "mixed" (default; symmetric weights, asymmetric activations) or "performance"
  ``ov_ignore_tail``           keep the decode tail in float (default True)
  ``ov_float_first_convs``     depth (in convolutions from the input) kept in float, default 2; 0 = none
  ``ov_fast_bias_correction``  NNCF's fast bias correction (default True; False runs the slower full one)
  ``ov_smooth_quant``          SmoothQuant alpha for convolutions (default off). 0.5 halved NanoDet-Plus-m's
                               detection disagreements with FP32 on 100 COCO photos (25 -> 12 of 453) but
                               not YOLO-FastestV2's, and lowered worst-image cosines; 0.3/0.7 gave ~20
  ``ov_overflow_fix``          "first_layer" (default), "enable" or "disable". NNCF's 7-bit weights avoid
                               int16 saturation in AVX2 int8 kernels on CPUs without VNNI; "disable" is only
                               safe on VNNI/AMX CPUs (it gave score cosine 0.54 on an AVX2-only CPU)
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.manifest import sha256_file
from edge_runtime.versions import package_version

from .accuracy import Runner, run_nncf_search
from .convert_job import ConvertJob, ConvertResult

# ops whose output is a "feature map" the tail starts from; the walk back from the outputs stops there
_PRODUCERS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
_SKIP = {"Constant", "Parameter", "Result"}
_CPU_F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # what the runtime backend pins on CPU


def _is_bias_add(node: Any) -> bool:
    """Add/Multiply of a convolution output and a constant: NNCF treats it as part of the convolution."""
    if node.get_type_name() not in ("Add", "Multiply"):
        return False
    kinds = [i.get_source_output().get_node().get_type_name() for i in node.inputs()]
    return len(kinds) == 2 and "Constant" in kinds and any(k in _PRODUCERS for k in kinds)


def decode_tail(model: Any) -> list[str]:
    """Friendly names of the ops on the paths from the last convolutions to the model's outputs."""
    seen: set[int] = set()
    tail: list[str] = []
    queue = deque(result.input_value(0).get_node() for result in model.get_results())
    while queue:
        node = queue.popleft()
        if node.get_instance_id() in seen:
            continue
        seen.add(node.get_instance_id())
        kind = node.get_type_name()
        if kind in _PRODUCERS or _is_bias_add(node):
            continue
        if kind not in _SKIP:
            tail.append(node.get_friendly_name())
        if kind != "Parameter":
            queue.extend(i.get_source_output().get_node() for i in node.inputs())
    return tail


def first_convs(model: Any, depth: int) -> list[str]:
    """Friendly names of the convolutions at most ``depth`` convolutions deep from the model's inputs."""
    if depth <= 0:
        return []
    level: dict[int, int] = {}  # node instance id -> convolutions on the deepest path from an input
    found = []
    for op in model.get_ordered_ops():  # topological order: every input is seen before its consumers
        below = max((level.get(i.get_source_output().get_node().get_instance_id(), 0) for i in op.inputs()),
                    default=0)
        here = below + (1 if op.get_type_name() in _PRODUCERS else 0)
        level[op.get_instance_id()] = here
        if op.get_type_name() in _PRODUCERS and here <= depth:
            found.append(op.get_friendly_name())
    return found


def _fix_output_names(model: Any, names: list[str], where: Path) -> None:
    """Make output i carry exactly the tensor name ``names[i]`` (OpenVINO may attach aliases)."""
    outputs = list(model.outputs)
    have = [set(o.get_names()) for o in outputs]
    if len(outputs) != len(names):
        raise EdgeRuntimeError(f"{where}: OpenVINO model has {len(outputs)} outputs, the ONNX artifact lists {names}")
    for name, out, names_here in zip(names, outputs, have):
        if name not in names_here:
            # ONNX output order is kept by the frontend; a missing name would mean a renamed graph
            raise EdgeRuntimeError(f"{where}: OpenVINO output names {[sorted(h) for h in have]} "
                                   f"lack {name!r} from the ONNX artifact")
        if names_here != {name}:
            out.get_tensor().set_names({name})


def float_convs(model: Any) -> list[str]:
    """Convolutions of an NNCF-quantised model that read a float input (no FakeQuantize in front)."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _PRODUCERS
            and op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"]


def _runner(compiled: Any, input_name: str, outputs: list[str]) -> Runner:
    request = compiled.create_infer_request()
    ports = [compiled.output(name) for name in outputs]

    def run(tensor: np.ndarray) -> list[np.ndarray]:
        result = request.infer({input_name: tensor})
        return [result[port] for port in ports]
    return run


def _quantize(model: Any, job: ConvertJob, input_name: str) -> tuple[Any, dict[str, Any]]:
    import nncf
    import openvino as ov

    if job.calibration is None or not len(job.calibration):
        raise EdgeRuntimeError("OpenVINO INT8 needs calibration images (--calib)")
    preset_name = str(job.options.get("ov_preset", "mixed")).lower()
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    if preset_name not in presets:
        raise EdgeRuntimeError(f"ov_preset {preset_name!r} is not one of {', '.join(presets)}")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    ignore_tail = bool(job.options.get("ov_ignore_tail", True))
    float_depth = int(job.options.get("ov_float_first_convs", 2))
    fast_bc = bool(job.options.get("ov_fast_bias_correction", True))
    smooth_quant = job.options.get("ov_smooth_quant")
    overflow_name = str(job.options.get("ov_overflow_fix", "first_layer")).lower()
    fixes = {"first_layer": OverflowFix.FIRST_LAYER, "enable": OverflowFix.ENABLE, "disable": OverflowFix.DISABLE}
    if overflow_name not in fixes:
        raise EdgeRuntimeError(f"ov_overflow_fix {overflow_name!r} is not one of {', '.join(fixes)}")
    tensors = job.calibration.tensors
    tail = decode_tail(model) if ignore_tail else []
    head = first_convs(model, float_depth)
    ignored = tail + head
    advanced = {"overflow_fix": fixes[overflow_name]}
    extra_args: dict[str, Any] = {}
    if smooth_quant is not None and float(smooth_quant) >= 0:
        # NNCF runs SmoothQuant only for ModelType.TRANSFORMER; on convolutions it migrates
        # per-channel activation outliers into the weights (alpha = how much)
        extra_args["model_type"] = nncf.ModelType.TRANSFORMER
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(convolution=float(smooth_quant), matmul=-1)
    dataset = nncf.Dataset(tensors, lambda tensor: {input_name: tensor})
    job.progress(f"openvino int8: NNCF PTQ on {len(tensors)} calibration images, preset {preset_name}, "
                 f"{len(tail)} tail ops and {len(head)} first convolutions kept in float")
    settings = {"preset": presets[preset_name], "fast_bias_correction": fast_bc,
                "ignored_scope": nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
                "advanced_quantization_parameters": AdvancedQuantizationParameters(**advanced), **extra_args}
    quantized = nncf.quantize(model, dataset, subset_size=len(tensors), **{
        k.replace("advanced_quantization_parameters", "advanced_parameters"): v for k, v in settings.items()})
    info: dict[str, Any] = {}
    if job.accuracy is not None:
        budget = job.accuracy
        outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
        job.progress(f"openvino int8: accuracy-aware, {budget.metric.name} >= {budget.target:.4f} on "
                     f"{len(budget.metric.images)} held-out images")
        before = after = budget.metric(_runner(ov.compile_model(quantized, "CPU", _CPU_F32), input_name, outputs))
        plain_float = set(float_convs(quantized))
        if before < budget.target:  # met as quantised: NNCF's search would quantise again to the same model
            quantized = run_nncf_search(model, budget, input_name, tensors,
                                        lambda compiled: _runner(compiled, input_name, outputs), **settings)
            after = budget.metric(_runner(ov.compile_model(quantized, "CPU", _CPU_F32), input_name, outputs))
        info["accuracy_control"] = budget.describe(before, after, sorted(set(float_convs(quantized)) - plain_float))
    return quantized, {**info, "tool": "nncf.quantize", "preset": preset_name, "ignore_tail": ignore_tail,
                       "ignored_tail_ops": len(tail), "float_first_convs": float_depth, "float_convs": head,
                       "fast_bias_correction": fast_bc, "smooth_quant": smooth_quant,
                       "overflow_fix": overflow_name, "subset_size": len(tensors)}


def convert_openvino(job: ConvertJob) -> ConvertResult:
    import openvino as ov

    t0 = time.perf_counter()
    outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
    model = ov.convert_model(str(job.fp32_onnx))
    _fix_output_names(model, outputs, job.fp32_onnx)
    input_name = model.inputs[0].get_any_name()
    if input_name != job.manifest.input.name:
        raise EdgeRuntimeError(f"{job.fp32_onnx}: OpenVINO reads input {input_name!r}, "
                               f"the manifest says {job.manifest.input.name!r}")
    extra: dict[str, Any] = {"converter": {"tool": "openvino.convert_model", **{d: v for d in ("openvino", "nncf") if (v := package_version(d))}}}
    if job.precision == "int8":
        model, extra["quantization"] = _quantize(model, job, input_name)
        _fix_output_names(model, outputs, job.fp32_onnx)
    elif job.precision not in ("fp32", "fp16"):
        raise EdgeRuntimeError(f"openvino: unknown precision {job.precision!r}")
    xml = job.out_dir / f"model_openvino_{job.precision}.xml"
    # FP16: weights stored as f16 (decompressed at load); FP32 and INT8 keep float constants in f32
    # (job.out_dir is convert's fresh staging folder: the files reach the package by os.replace)
    ov.save_model(model, str(xml), compress_to_fp16=job.precision == "fp16")
    bin_path = xml.with_suffix(".bin")
    extra.update({"weights_file": bin_path.name, "weights_sha256": sha256_file(bin_path),
                  "weights_compression": {"fp32": "none", "fp16": "fp16", "int8": "int8 (NNCF)"}[job.precision],
                  "convert_seconds": round(time.perf_counter() - t0, 2)})
    return ConvertResult(file=xml.name, outputs=outputs, extra=extra)
