"""FP32 ONNX -> OpenVINO IR (.xml + .bin): FP32, FP16 (compressed weights) and INT8 (NNCF PTQ).

INT8 uses NNCF post-training quantisation on the FP32 ``ov.Model`` with the package's calibration
tensors (made by the runtime's own preprocessing). The decode tail - every op between the last
convolutions and the outputs (sigmoid, softmax, the distribution integral MatMul, reshapes, concats,
the obj x cls multiply) - stays in float: found by walking the graph back from the outputs, by op
type, so no node names are hard-coded.

The first convolutions (at most ``ov_float_first_convs`` convolutions deep from the input: the stem
and the convolutions reading its output, 3 layers in both models) also stay in float, at first. NNCF's
accuracy-aware search reverted exactly these first on NanoDet-Plus-m; on 66 held-out COCO photos
they raised the worst per-image score-map cosine vs FP32 from 0.943 to 0.978 (NanoDet-Plus-m 416)
and from 0.797 to 0.849 (YOLO-FastestV2), the mean from 0.988 to 0.994 and from 0.979 to 0.985.
Beyond that the INT8 error is spread over the whole network (no single quantiser is worth more
than +0.0004 cosine), so more float layers buy little per layer. ``ov_quantize_stem`` quantises the stem
after NNCF instead (``quantize_image_convs``), on the image's own grid (every 8-bit pixel exactly; weights
per channel, 8 bits, 7 where the CPU saturates u8 x s8 pairs): what the stem cost in cosine was NNCF's
range for the image and the bias correction made for it, not the stem's weights. Off by default: the
cosine stays, the mAP drop grows (docs/formats-and-int8.md).

Before conversion the ShuffleNetV2 channel shuffles are folded away (``shuffle_fold``: each unit's
convolution reads a Concat of Slices of the tensors its channels come from; exact, checked like any
artifact). After NNCF (and after its accuracy-aware search, on its result), ``quantize_concat_inputs``
puts a FakeQuantize on every float input of the Concats outside the decode tail, and moves the ones
NNCF put after each Slice onto the sliced tensor, so that the data movement between units runs in u8.
An INT8 IR records the ``INFERENCE_PRECISION_HINT`` its float parts run in
(``inference_precision_hint``: where the CPU computes bf16 natively, bf16 or f32, whichever the IR runs
faster with when this host is the package's CPU (``quantization.inference_precision_timed``), else bf16;
see docs/formats-and-int8.md);
``convert`` verifies it with that hint and the runtime backend compiles with it on CPUs that have BF16
(f32 elsewhere). FP32 and FP16 IRs record nothing and run in f32: bf16 would cost them their 0.999
worst-image cosine floor. The opt-in bf16 precision is the FP16 IR's files recording bf16, checked so
against its own floor (0.98), made only on a CPU with BF16 (``bf16_unavailable``).

Options (``job.options``):
  ``ov_preset``                "auto" (default: both below, measured by ``_choose_preset``; "mixed" without
                               held-out images), "mixed" (symmetric weights, asymmetric activations) or
                               "performance" (symmetric both)
  ``ov_ignore_tail``           keep the decode tail in float (default True)
  ``ov_float_first_convs``     depth (in convolutions from the input) kept in float, default 2; 0 = none
  ``ov_fast_bias_correction``  NNCF's fast bias correction (default True; False runs the slower full one)
  ``ov_smooth_quant``          SmoothQuant alpha for convolutions (default off). 0.5 halved NanoDet-Plus-m's
                               detection disagreements with FP32 on 100 COCO photos (25 -> 12 of 453) but
                               not YOLO-FastestV2's, and lowered worst-image cosines; 0.3/0.7 gave ~20
  ``ov_overflow_fix``          "first_layer", "enable" or "disable". NNCF's 7-bit weights avoid int16
                               saturation in AVX2 int8 kernels on CPUs without VNNI; "disable" is only safe on
                               VNNI/AMX CPUs (it gave score cosine 0.54 on an AVX2-only CPU). Default
                               "first_layer"; with ``ov_quantize_stem`` "disable" where the target's CPU does
                               not saturate (``int8_weights_saturate``: NNCF's first layer is then not the stem)
  ``ov_quantize_concat_inputs`` the Concat pass above (default True)
  ``ov_fold_shuffles``         fold the channel shuffles away before converting (default True)
  ``ov_quantize_stem``         quantise the convolutions that read the image on the pixel grid (default False:
                               same cosine, 1.02-1.12x faster, but 0.25-0.55 mAP points more drop on
                               voc-indoor-85, docs/formats-and-int8.md; with a budget, left in float when it is
                               missed with and met without)
  ``openvino_inference_precision``  the INT8 IR's hint: "auto" (default: on a CPU with AVX512-BF16 or AMX-BF16
                               the faster of bf16 and f32 when this host is the package's CPU, else bf16;
                               f32 without BF16), "bf16" or "f32"; a target profile's key of the same name
"""

from __future__ import annotations

import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime.backends.openvino import RECORDED_PRECISIONS, cpu_has_bf16
from edge_runtime.deploy.hostinfo import physical_cores
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.manifest import InputSpec, sha256_file
from edge_runtime.speed import time_files_in_fresh_process
from edge_runtime.versions import package_version

from .accuracy import Runner, run_nncf_search
from .convert_job import (
    ConvertJob,
    ConvertResult,
    choose_candidate,
    host_is_target,
    int8_weights_saturate,
    saturation_unmeasured,
    time_or_warn,
)
from .shuffle_fold import FoldResult, fold_channel_shuffles

# ops whose output is a "feature map" the tail starts from; the walk back from the outputs stops there
_PRODUCERS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
_SKIP = {"Constant", "Parameter", "Result"}
_SLICES = ("Slice", "StridedSlice")
INFERENCE_PRECISIONS = ("auto", *RECORDED_PRECISIONS)
# "auto" on a BF16 CPU that is the package's times the INT8 IR in both: which is faster depends on the model
# (AMX Xeon: NanoDet-Plus-m 3 % faster in f32, YOLO-FastestV2 6-9 % in bf16; docs/formats-and-int8.md)
BF16_MIN_SPEEDUP = 1.02
OV_PRESETS = ("mixed", "performance")
# ``ov_preset`` "auto" without a budget keeps the faster preset only if its mean cosine with FP32 is within this
# of the more accurate one's. None: on the AMX Xeon "performance" ran NanoDet-Plus-m's IR 1.07-1.09x as fast as
# "mixed" at cosine 0.9901 against 0.9926, and lost a confident person on a fixture photo and a point of
# label-free mAP on the sample photos (its mAP drop on voc-indoor-85 was smaller, 0.15 against 0.22). Under a
# budget the faster one that meets it ships.
PRESET_COSINE_SLACK = 0.0


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


def int8_inference_precision(choice: str | None) -> str:
    """The hint an INT8 IR is verified and run with before any timing: ``choice`` ("auto"/None: bf16 when this
    CPU has it)."""
    choice = str(choice or "auto").lower()
    if choice not in INFERENCE_PRECISIONS:
        raise EdgeRuntimeError(f"openvino_inference_precision {choice!r} is not one of "
                               f"{', '.join(INFERENCE_PRECISIONS)}")
    if choice == "auto":
        return "bf16" if cpu_has_bf16() else "f32"
    return choice


def bf16_unavailable() -> str | None:
    """Why this host cannot make a bf16 IR (None: it can): convert checks it in bf16, which needs BF16 here."""
    if cpu_has_bf16():
        return None
    return ("this CPU has neither AVX512-BF16 nor AMX-BF16, so a bf16 IR cannot be checked here; convert it on "
            "a CPU that has them")


def _time_irs(irs: dict[str, tuple[Any, str]], tensor: np.ndarray, what: str) -> dict[str, dict[str, float]]:
    """Each IR of ``irs`` (key -> (``ov.Model``, the ``INFERENCE_PRECISION_HINT`` to compile it with)) after the
    first timed against the first, on this CPU with the physical cores' threads, in a fresh process taking turns
    (``edge_runtime.speed``; one model given twice is saved once). Returns key -> {"ms", "fp32_ms", "vs_fp32"}."""
    import openvino as ov

    baseline, *others = irs
    with tempfile.TemporaryDirectory(prefix="edge-runtime-irs-") as tmp:
        files: dict[str, Path] = {}
        for key, (model, _) in irs.items():
            files[key] = next((files[k] for k in files if irs[k][0] is model), Path(tmp) / f"{key}.xml")
            if not files[key].exists():
                ov.save_model(model, str(files[key]), compress_to_fp16=False)
        return time_files_in_fresh_process(
            files[baseline], {key: files[key] for key in others}, tensor, physical_cores(), "openvino",
            {("fp32" if key == baseline else key): {"inference_precision": hint} for key, (_, hint) in irs.items()},
            what=what)


def time_hints(model: Any, tensor: np.ndarray) -> dict[str, float]:
    """Median ms per inference of ``model`` on this CPU under each hint (``_time_irs``): in convert's process,
    with its other sessions alive, the two read alike (YOLO-FastestV2's INT8 IR 3.39 / 3.42 ms) where alone bf16
    ran 1.2x as fast (1.95 / 2.34)."""
    timed = _time_irs({"f32": (model, "f32"), "bf16": (model, "bf16")}, tensor, "openvino int8 hints")["bf16"]
    return {"f32": round(timed["fp32_ms"], 3), "bf16": round(timed["ms"], 3), "bf16_vs_f32": round(timed["vs_fp32"], 3)}


def _timed_hint(model: Any, job: ConvertJob, host: str) -> tuple[str, dict[str, Any]]:
    """bf16 or f32 for the float parts of ``model``, whichever runs it faster on this host (the package's CPU);
    bf16 only when at least ``BF16_MIN_SPEEDUP`` faster, since f32 is the more exact (so f32 when the timing
    fails, with one warning line). Timed on the quantised model (the first preset's) before the preset choice
    and any accuracy search (which moves layers to float); the record's ``shipped`` says what the budget left."""
    job.progress("openvino int8: timing the float parts in bf16 and in f32 on this host, in a fresh process")
    ms = time_or_warn("openvino int8 hints", lambda: time_hints(model, job.calibration.tensors[0]))
    if ms is None:
        return "f32", {"chosen": "f32", "why": "not timed (the timing failed): f32, the more exact"}
    speedup = ms.pop("bf16_vs_f32")  # the median of per-repeat ratios
    hint = "bf16" if speedup >= BF16_MIN_SPEEDUP else "f32"
    why = (f"bf16 ran {speedup:.2f}x as fast as f32 on {host}" +
           ("" if hint == "bf16" else f"; bf16 ships only from {BF16_MIN_SPEEDUP:.2f}x, f32 being the more exact"))
    job.progress(f"openvino int8: {why}: {hint}")
    return hint, {"chosen": hint, "why": why, "ms": ms, "bf16_vs_f32": round(speedup, 3)}


def quantize_concat_inputs(model: Any, tensors: list[np.ndarray], input_name: str) -> int:
    """Put a FakeQuantize (256 levels, the input's min..max over ``tensors``) on every float input of
    the Concats outside the decode tail that NNCF left partly or wholly float, after moving the quantizers
    NNCF put after Slices onto the sliced tensors (``_quantize_slice_sources``); returns how many of both.

    NNCF quantises the inputs of convolutions and moves the quantizers up through data-movement ops
    only while every consumer wants them: in a ShuffleNetV2 unit the channel split feeds a conv (the
    branch) and the next Concat (the pass-through half), so its quantizer stops below the split and
    the Concat -> ShuffleChannels (or Gather) -> Split chain runs in f32 on full-size tensors. With
    both Concat inputs quantized, the CPU plugin's low-precision pass runs that chain in u8."""
    import openvino as ov
    import openvino.opset13 as ops

    tail = set(decode_tail(model))
    moved = _quantize_slice_sources(model)
    sources = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Concat" or op.get_friendly_name() in tail:
            continue
        for port in op.inputs():
            src = port.get_source_output()
            node = src.get_node()
            if node.get_type_name() in _SLICES:  # a slice of a quantised tensor is quantised
                node = node.input(0).get_source_output().get_node()
            if node.get_type_name() not in ("FakeQuantize", "Constant"):
                sources.append((port, src))
    if not sources:
        return moved
    # ranges: run the model with the sources as extra outputs (a copy: add_outputs changes the model)
    probe = model.clone()
    by_name = {op.get_friendly_name(): op for op in probe.get_ordered_ops()}
    extra = [by_name[src.get_node().get_friendly_name()].output(src.get_index()) for _, src in sources]
    probe.add_outputs(extra)
    compiled = ov.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    first = len(compiled.outputs) - len(extra)
    lows = np.full(len(extra), np.inf)
    highs = np.full(len(extra), -np.inf)
    for tensor in tensors:
        request.infer({input_name: tensor})
        for i in range(len(extra)):
            value = request.get_output_tensor(first + i).data
            lows[i] = min(lows[i], float(value.min()))
            highs[i] = max(highs[i], float(value.max()))
    for (port, src), low, high in zip(sources, lows, highs):
        low = min(low, 0.0)  # zero must be exact (padding, the LeakyRelu's kink)
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        fq = ops.fake_quantize(src, lo, hi, lo, hi, 256)
        fq.set_friendly_name(f"{src.get_node().get_friendly_name()}/concat_fq")
        port.replace_source_output(fq.output(0))
    model.validate_nodes_and_infer_types()
    return moved + len(sources)


def _quantize_slice_sources(model: Any) -> int:
    """Where NNCF put a FakeQuantize after each Slice that feeds a Concat (the folded shuffles' pieces),
    quantise the sliced tensor once instead, on the union of those ranges, so the Slices run in u8 too;
    returns how many tensors."""
    import openvino.opset13 as ops

    groups: dict[tuple[str, int], list[tuple[Any, Any]]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        piece = op.input(0).get_source_output().get_node()
        readers = [t.get_node().get_type_name() for t in op.output(0).get_target_inputs()]
        if piece.get_type_name() not in _SLICES or readers != ["Concat"] or \
                len(piece.output(0).get_target_inputs()) != 1:  # the Slice feeds only this quantizer
            continue
        source = piece.input(0).get_source_output()
        groups.setdefault((source.get_node().get_friendly_name(), source.get_index()), []).append((op, piece))
    for items in groups.values():
        source = items[0][1].input(0).get_source_output()
        low = min(float(np.min(fq.input(1).get_source_output().get_node().get_data())) for fq, _ in items)
        high = max(float(np.max(fq.input(2).get_source_output().get_node().get_data())) for fq, _ in items)
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        fq_source = ops.fake_quantize(source, lo, hi, lo, hi, items[0][0].get_levels())
        fq_source.set_friendly_name(f"{source.get_node().get_friendly_name()}/slice_fq")
        for fq, piece in items:
            piece.input(0).replace_source_output(fq_source.output(0))
            for reader in list(fq.output(0).get_target_inputs()):
                reader.replace_source_output(piece.output(0))
    if groups:
        model.validate_nodes_and_infer_types()
    return len(groups)


_IMAGE_CONVS = ("Convolution", "GroupConvolution")


def _image_readers(model: Any, input_name: str) -> list[Any]:
    """The input ports of the convolutions that read the image (the Parameter ``input_name``) directly."""
    return [port for param in model.get_parameters() if input_name in param.output(0).get_names()
            for port in param.output(0).get_target_inputs() if port.get_node().get_type_name() in _IMAGE_CONVS]


def image_convs(model: Any, input_name: str) -> list[str]:
    """Friendly names of the convolutions that read the image (the input ``input_name``) directly."""
    return [port.get_node().get_friendly_name() for port in _image_readers(model, input_name)]


def quantize_image_convs(model: Any, spec: InputSpec, weight_bits: int) -> dict[str, Any]:
    """Quantise the convolutions that read the image (the stem) on the image's own grid; returns the record
    (``{}`` when there is none to quantise: NNCF did, or the weights are not plain constants).

    The input is (pixel - mean) / std with 8-bit pixels, so 256 levels from (0 - mean) / std to
    (255 - mean) / std hold every input exactly when the channels share mean and std (else one range spans
    them all, ``every_pixel_exact`` false). NNCF's range for it (the mean of each photo's max) clips the
    brightest pixels and puts the others between levels, and its bias correction then moves the stem's bias
    for that error. Weights: symmetric per output channel, ``weight_bits`` bits (7 where the CPU saturates
    u8 x s8 pairs in 16 bits, ``int8_weights_saturate``); the bias stays as trained."""
    import openvino.opset13 as ops

    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    low, high = (0.0 - mean) / std, (255.0 - mean) / std
    # one range for all channels: the CPU plugin runs a convolution in int8 only behind a per-tensor
    # quantizer (per channel it computes in float); exact when every channel has the same mean and std
    exact = bool(np.allclose(low, low[0]) and np.allclose(high, high[0]))
    low, high = float(low.min()), float(high.max())
    readers = [port for port in _image_readers(model, spec.name)
               if port.get_node().input(1).get_source_output().get_node().get_type_name() == "Constant"]
    if not readers:
        return {}
    lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
    pixels = ops.fake_quantize(readers[0].get_source_output(), lo, hi, lo, hi, 256)
    pixels.set_friendly_name(f"{readers[0].get_source_output().get_node().get_friendly_name()}/pixel_fq")
    # the CPU plugin takes int8 weights as 255 levels; b < 8 bits: the same levels over a range widened so
    # that the weights use only the middle 2^b - 1 of them
    widen = 127 / (2 ** (weight_bits - 1) - 1)
    names = []
    for port in readers:
        conv = port.get_node()
        port.replace_source_output(pixels.output(0))
        weights = conv.input(1).get_source_output()
        values = np.array(weights.get_node().get_data(), np.float32)
        # per output channel: (O, I, kh, kw), or (G, O/G, I/G, kh, kw) for a grouped convolution
        lead = 2 if conv.get_type_name() == "GroupConvolution" else 1
        top = np.abs(values).reshape(int(np.prod(values.shape[:lead])), -1).max(axis=1)
        top = np.maximum(top, np.finfo(np.float32).tiny) * widen
        top = top.reshape(*values.shape[:lead], *[1] * (values.ndim - lead)).astype(np.float32)
        w_lo, w_hi = ops.constant(-top), ops.constant(top)
        quantized = ops.fake_quantize(weights, w_lo, w_hi, w_lo, w_hi, 255)
        quantized.set_friendly_name(f"{conv.get_friendly_name()}/weights_fq")
        conv.input(1).replace_source_output(quantized.output(0))
        names.append(conv.get_friendly_name())
    model.validate_nodes_and_infer_types()
    return {"convs": names, "weight_bits": weight_bits, "input_levels": 256,
            "input_range": [round(low, 6), round(high, 6)], "every_pixel_exact": exact}


def _runner(compiled: Any, input_name: str, outputs: list[str]) -> Runner:
    request = compiled.create_infer_request()
    ports = [compiled.output(name) for name in outputs]

    def run(tensor: np.ndarray) -> list[np.ndarray]:
        result = request.infer({input_name: tensor})
        return [result[port] for port in ports]
    return run


def _choose_preset(candidates: dict[str, Any], job: ConvertJob, input_name: str, hint: str
                   ) -> tuple[str, dict[str, Any], float]:
    """Which NNCF preset's INT8 IR ships (``ov_preset`` "auto"): ``candidates`` maps each preset to its IR as it
    would ship (the passes applied). Each is measured against FP32 under ``hint`` (the budget's metric, else
    cosine on held-out images) and, when this host is the package's CPU, timed against the other in a fresh
    process; the fastest that meets the budget (without one: within ``PRESET_COSINE_SLACK`` of the best, so the
    more accurate) ships, untimed the more accurate. Symmetric activations ("performance") ran faster with
    oneDNN; which is the more accurate depends on the model (docs/formats-and-int8.md). Returns (preset, record,
    its measured value)."""
    import openvino as ov

    outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
    budget = job.accuracy
    metric = budget.metric if budget is not None else job.agreement
    value = {}
    for name, candidate in candidates.items():
        compiled = ov.compile_model(candidate, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        value[name] = float(metric(_runner(compiled, input_name, outputs)))
        value[name] = value[name] if np.isfinite(value[name]) else -1.0
    if budget is not None:
        floor, rule = budget.target, f"meets the budget ({metric.name} >= {budget.target:.4f})"
    else:
        floor = max(value.values()) - PRESET_COSINE_SLACK
        rule = f"is within {PRESET_COSINE_SLACK} of the best" if PRESET_COSINE_SLACK else "is the best"
    here, host = host_is_target(job.options)
    speed: dict[str, float] = {}
    baseline, *others = candidates
    qualify = sum(v >= floor - 1e-9 for v in value.values())
    if here and qualify > 1:  # timed only where the speed decides
        job.progress(f"openvino int8: timing the presets {', '.join(candidates)} on this host, {physical_cores()} "
                     "threads, in a fresh process")
        timed = time_or_warn("openvino int8 presets", lambda: _time_irs(
            {name: (candidate, hint) for name, candidate in candidates.items()}, job.calibration.tensors[0],
            "openvino int8 presets"))
        if timed is not None:
            speed = {baseline: 1.0, **{name: timed[name]["vs_fp32"] for name in others}}
    untimed = f"{host} is not target {job.options.get('target')}" if not here else \
        "the timing failed" if qualify > 1 else f"only one preset's {metric.name} {rule}" if qualify else "none qualify"
    chosen, why = choose_candidate(value, speed, floor, rule, metric.name, host, untimed)
    job.progress(f"openvino int8: preset {chosen}, {why}")
    record = {"chosen": chosen, "why": why, "host": host, "metric": metric.name, "hint": hint,
              "measured_on": f"{len(metric.images)} held-out images",
              "candidates": {name: {metric.name: round(value[name], 6),
                                    **({f"speed_vs_{baseline}": round(speed[name], 3)} if speed else {})}
                             for name in candidates}}
    return chosen, record, value[chosen]


def _quantize(model: Any, job: ConvertJob, input_name: str, hint: str, timed_on: str | None
              ) -> tuple[Any, dict[str, Any], str]:
    """NNCF PTQ with the preset ``ov_preset`` names ("auto": both, ``_choose_preset``), the accuracy-aware search
    when ``job.accuracy`` is set, then the Concat pass; a budget
    is measured with the CPU hint ``hint`` (one this CPU computes), or with the faster of bf16 and f32 on the
    quantised model when ``timed_on`` names this host (the package's CPU). NNCF's search scores its
    candidates in f32, so a result that meets the budget there and misses it in bf16 ships with the hint f32.
    Returns the model, its record and the hint it was measured with."""
    import nncf
    import openvino as ov

    if job.calibration is None or not len(job.calibration):
        raise EdgeRuntimeError("OpenVINO INT8 needs calibration images (--calib)")
    preset_name = str(job.options.get("ov_preset") or "auto").lower()
    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    if preset_name not in ("auto", *presets):
        raise EdgeRuntimeError(f"ov_preset {preset_name!r} is not one of auto, {', '.join(presets)}")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    ignore_tail = bool(job.options.get("ov_ignore_tail", True))
    float_depth = int(job.options.get("ov_float_first_convs", 2))
    fast_bc = bool(job.options.get("ov_fast_bias_correction", True))
    concat_pass = bool(job.options.get("ov_quantize_concat_inputs", True))
    stem_pass = bool(job.options.get("ov_quantize_stem", False))
    stem_bits = (7 if int8_weights_saturate(job.options) else 8) if stem_pass else 0
    smooth_quant = job.options.get("ov_smooth_quant")
    # NNCF's 7-bit first layer avoids AVX2's u8 x s8 saturation. With the stem quantised apart, NNCF's first
    # layer is the next one, which on a CPU that accumulates in 32 bits needs no fix. Where the package's CPU
    # saturates and this one does not, 7 bits everywhere: what convert measures is then what the device computes
    overflow_default = "enable" if saturation_unmeasured(job.options) else \
        "disable" if stem_pass and stem_bits == 8 else "first_layer"
    overflow_name = str(job.options.get("ov_overflow_fix", overflow_default)).lower()
    fixes = {"first_layer": OverflowFix.FIRST_LAYER, "enable": OverflowFix.ENABLE, "disable": OverflowFix.DISABLE}
    if overflow_name not in fixes:
        raise EdgeRuntimeError(f"ov_overflow_fix {overflow_name!r} is not one of {', '.join(fixes)}")
    tensors = job.calibration.tensors
    tail = decode_tail(model) if ignore_tail else []
    # the stem is quantised on the pixel grid after NNCF (quantize_image_convs), so NNCF leaves it alone
    head = list(dict.fromkeys(first_convs(model, float_depth) + (image_convs(model, input_name) if stem_pass else [])))
    ignored = tail + head
    advanced = {"overflow_fix": fixes[overflow_name]}
    extra_args: dict[str, Any] = {}
    if smooth_quant is not None and float(smooth_quant) >= 0:
        # NNCF runs SmoothQuant only for ModelType.TRANSFORMER; on convolutions it migrates
        # per-channel activation outliers into the weights (alpha = how much)
        extra_args["model_type"] = nncf.ModelType.TRANSFORMER
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(convolution=float(smooth_quant), matmul=-1)
    dataset = nncf.Dataset(tensors, lambda tensor: {input_name: tensor})
    settings = {"fast_bias_correction": fast_bc,
                "ignored_scope": nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
                "advanced_parameters": AdvancedQuantizationParameters(**advanced), **extra_args}
    # "auto": both presets, measured, where held-out images can measure them; else mixed, the earlier default
    metric = job.accuracy.metric if job.accuracy is not None else job.agreement
    tried_presets = list(OV_PRESETS) if preset_name == "auto" and metric is not None else \
        ["mixed" if preset_name == "auto" else preset_name]
    job.progress(f"openvino int8: NNCF PTQ on {len(tensors)} calibration images, preset "
                 f"{' and '.join(tried_presets)}, {len(tail)} tail ops and {len(head)} first convolutions in float")
    bases = {name: nncf.quantize(model, dataset, subset_size=len(tensors), preset=presets[name], **settings)
             for name in tried_presets}

    def finish(quantized: Any, with_stem: bool, with_pass: bool) -> tuple[Any, dict[str, Any], int]:
        """A copy of NNCF's ``quantized`` with the stem pass and/or the Concat pass: (model, stem record, added)."""
        done = quantized.clone()
        stem = quantize_image_convs(done, job.manifest.input, stem_bits) if with_stem else {}
        return done, stem, quantize_concat_inputs(done, tensors, input_name) if with_pass else 0

    def passes(built: tuple[Any, dict[str, Any], int]) -> tuple[bool, bool]:
        """What the two passes changed on a built model: (stem quantised, Concat inputs quantised)."""
        return bool(built[1]), built[2] > 0

    info: dict[str, Any] = {}
    firsts = {name: finish(bases[name], stem_pass, concat_pass) for name in bases}
    if timed_on is not None:  # the hint first: the presets differ in the int8 parts, the hint is for the float ones
        hint, info["inference_precision_timed"] = _timed_hint(firsts[tried_presets[0]][0], job, timed_on)
    chosen_preset, measured = tried_presets[0], None  # measured: the chosen IR's value by the budget's metric
    if preset_name == "auto" and len(bases) == 1:
        info["preset_choice"] = {"chosen": chosen_preset, "why": "no held-out images to measure the presets on: "
                                 "mixed, the default before the choice"}
    if len(bases) > 1:
        chosen_preset, info["preset_choice"], measured = _choose_preset({k: v[0] for k, v in firsts.items()},
                                                                        job, input_name, hint)
    base = bases[chosen_preset]
    settings["preset"] = presets[chosen_preset]  # the accuracy-aware search re-quantises with it
    budget = job.accuracy
    first = firsts[chosen_preset]
    built = {passes(first): first}  # by what the passes changed, so that equal models are built once
    quantized, stem, added = first
    if budget is not None:
        outputs = list(job.manifest.artifact("onnx", "fp32").outputs)

        def measure(candidate: Any, precision: str = hint) -> float:
            compiled = ov.compile_model(candidate, "CPU", {"INFERENCE_PRECISION_HINT": precision})
            return budget.metric(_runner(compiled, input_name, outputs))

        job.progress(f"openvino int8: accuracy-aware, {budget.metric.name} >= {budget.target:.4f} on "
                     f"{len(budget.metric.images)} held-out images, {hint}")
        # "before": the recipe without the search, with its passes (as the preset choice measured it)
        before = measure(quantized) if measured is None else measured
        plain_float = set(float_convs(base))
        searched_again = before < budget.target  # met as quantised: the search would quantise again to the same
        tried: dict[tuple[bool, bool, str], float] = {(*passes(first), hint): before}
        if searched_again:
            base = run_nncf_search(model, budget, input_name, tensors,
                                   lambda compiled: _runner(compiled, input_name, outputs), **settings)
            first = finish(base, stem_pass, concat_pass)
            built, tried = {passes(first): first}, {}
        searched_float = sorted(set(float_convs(base)) - plain_float)
        # fastest first: both passes and the hint, then without the stem pass, then without the Concat pass,
        # then each in f32 (NNCF scored its search in f32); the first that meets the budget ships, else the
        # most accurate (then refused)
        top = passes(first)
        variants = list(dict.fromkeys((*v, precision) for precision in dict.fromkeys((hint, "f32"))
                                      for v in (top, (False, top[1]), (False, False))))
        for variant in variants:
            if variant not in tried:
                if variant[:2] not in built:
                    built[variant[:2]] = finish(base, *variant[:2])
                tried[variant] = measure(built[variant[:2]][0], variant[2])
            if tried[variant] >= budget.target - 1e-9:
                break
        met = [v for v in tried if tried[v] >= budget.target - 1e-9]
        chosen = met[0] if met else max(tried, key=tried.get)
        after = tried[chosen]
        quantized, stem, added = built[chosen[:2]]
        if first[1] and not stem:
            job.progress("openvino int8: with the stem quantised the budget is missed: left in float")
            info["stem_left_out"] = first[1]["convs"]
        if first[2] and not added:
            job.progress("openvino int8: with the Concat pass the budget is missed: left out")
            info["concat_inputs_left_out"] = first[2]
        if chosen[2] != hint:
            job.progress(f"openvino int8: {hint} misses the budget, f32 gives {after:.4f}: recorded and run in f32")
            info["inference_precision_left_out"] = hint
            hint = chosen[2]
        info["accuracy_control"] = budget.describe(before, after, searched_float)
    if "inference_precision_timed" in info:  # the faster hint, unless the budget sent it back to f32
        info["inference_precision_timed"]["shipped"] = hint
    if stem:
        job.progress(f"openvino int8: {len(stem['convs'])} stem convolution(s) quantised on the pixel grid, "
                     f"{stem['weight_bits']}-bit weights")
    job.progress(f"openvino int8: {added} Concat inputs and sliced tensors quantised")
    return quantized, {**info, "tool": "nncf.quantize", "preset": chosen_preset, "ignore_tail": ignore_tail,
                       "ignored_tail_ops": len(tail), "float_first_convs": float_depth,
                       "float_convs": [name for name in head if name not in (stem or {}).get("convs", [])],
                       "fast_bias_correction": fast_bc, "smooth_quant": smooth_quant,
                       "overflow_fix": overflow_name,
                       "weight_bits": 7 if overflow_name == "enable" and stem_bits in (0, 7) else 8,
                       "subset_size": len(tensors),
                       "concat_inputs_quantized": added, "stem_quantized": stem or None}, hint


def _fold_shuffles(job: ConvertJob) -> FoldResult:
    if not bool(job.options.get("ov_fold_shuffles", True)):
        return FoldResult(None, reason="ov_fold_shuffles off")
    try:
        folded = fold_channel_shuffles(onnx.load(str(job.fp32_onnx)))
    except Exception as error:  # a graph the fold does not understand converts as it is
        job.progress(f"openvino: channel shuffles not folded ({type(error).__name__}: {error})")
        return FoldResult(None, reason=f"fold failed: {type(error).__name__}")
    if folded.model is not None:
        job.progress(f"openvino: {folded.shuffles} channel shuffles folded into {folded.counts.get('slices', 0)} "
                     f"slices and {folded.counts.get('concats', 0)} concats")
    return folded


def convert_openvino(job: ConvertJob) -> ConvertResult:
    import openvino as ov

    t0 = time.perf_counter()
    outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
    folded = _fold_shuffles(job)
    if folded.model is None:
        model = ov.convert_model(str(job.fp32_onnx))
    else:  # convert_model reads files only; the graph holds its weights, so the file can go at once
        with tempfile.TemporaryDirectory() as tmp:
            onnx_file = Path(tmp) / "folded.onnx"
            onnx.save(folded.model, str(onnx_file))
            model = ov.convert_model(str(onnx_file))
    _fix_output_names(model, outputs, job.fp32_onnx)
    input_name = model.inputs[0].get_any_name()
    if input_name != job.manifest.input.name:
        raise EdgeRuntimeError(f"{job.fp32_onnx}: OpenVINO reads input {input_name!r}, "
                               f"the manifest says {job.manifest.input.name!r}")
    versions = {d: v for d in ("openvino", "nncf") if (v := package_version(d))}
    extra: dict[str, Any] = {"converter": {"tool": "openvino.convert_model", **versions}, "graph": folded.record()}
    if job.precision == "int8":
        choice = job.options.get("openvino_inference_precision")
        hint = int8_inference_precision(choice)
        if hint == "bf16" and not cpu_has_bf16():  # what is recorded is what was verified here
            job.progress("openvino int8: inference precision bf16 asked for, but this CPU has no BF16 to "
                         "verify it with: recorded and run in f32")
            hint = "f32"
        # "auto" with BF16 here: timed when this host is the package's CPU, else bf16 as the CPU has it
        here, host = host_is_target(job.options)
        timed_on = host if here and hint == "bf16" and str(choice or "auto").lower() == "auto" else None
        model, extra["quantization"], hint = _quantize(model, job, input_name, hint, timed_on)
        _fix_output_names(model, outputs, job.fp32_onnx)
        extra["inference_precision_hint"] = hint  # verified with it by convert, run with it by the backend
    elif job.precision == "bf16":  # the FP16 IR's files, checked (by convert) and run with the float ops in bf16
        if (why := bf16_unavailable()) is not None:  # convert skips it before; a direct call is refused
            raise EdgeRuntimeError(f"openvino bf16: {why}")
        extra["inference_precision_hint"] = "bf16"
    elif job.precision not in ("fp32", "fp16"):
        raise EdgeRuntimeError(f"openvino: unknown precision {job.precision!r}")
    xml = job.out_dir / f"model_openvino_{job.precision}.xml"
    # FP16 and BF16: weights stored as f16 (decompressed at load; bf16 rounds them further when it computes);
    # FP32 and INT8 keep float constants in f32 (job.out_dir is convert's fresh staging folder: the files reach
    # the package by os.replace)
    ov.save_model(model, str(xml), compress_to_fp16=job.precision in ("fp16", "bf16"))
    bin_path = xml.with_suffix(".bin")
    extra.update({"weights_file": bin_path.name, "weights_sha256": sha256_file(bin_path),
                  "weights_compression": {"fp32": "none", "fp16": "fp16", "bf16": "fp16",
                                             "int8": "int8 (NNCF)"}[job.precision],
                  "convert_seconds": round(time.perf_counter() - t0, 2)})
    return ConvertResult(file=xml.name, outputs=outputs, extra=extra)
