"""ONNX INT8 (QDQ, per-channel weights) with the decode tail in float, by one of three quantisers:

- ``nncf``: NNCF's ONNX backend, MIXED preset (symmetric weights, asymmetric activations) with
  fast bias correction, the first Convs in float where that measures better (``NNCF_FLOAT_FIRST_CONVS``);
  int8 activations (S8S8) and no quantiser between a Conv and its activation, so ONNX Runtime runs
  those Convs in float: accurate, often slower than FP32.
- ``nncf-u8s8``: NNCF's calibration with per-tensor activations, rewritten by ``qdq_fuse.fuse_for_ort``
  into the uint8 graph ONNX Runtime fuses into ``QLinearConv`` (a quantiser after each Conv): fast, and
  nearly as accurate; under a budget it misses by a little, leading Convs go back to float.
- ``ort``: ONNX Runtime's ``quantize_static``, uint8 activations (U8S8) with plain min/max ranges: as fast,
  less accurate on models whose Convs feed a LeakyRelu (docs/formats-and-int8.md); by name only.
- ``auto`` (the default): ``nncf`` and ``nncf-u8s8``, each measured against FP32 on held-out images and timed
  on this host (in a fresh process) when it is the CPU the package is for; the fastest one whose accuracy is
  within ``RECIPE_COSINE_SLACK`` of the best (or meets the budget) ships, and the manifest records both
  measurements and why (``quantization.recipe``).

The "tail" is every node between the last convolutions and the graph outputs (reshape, concat,
sigmoid, softmax-integral...): quantising it would put 0..1 scores and 0..reg_max distances
through 8-bit steps for no speed gain, so it is excluded by walking the graph back from the
outputs to the first Conv on each path.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_runtime.deploy.hostinfo import physical_cores
from edge_runtime.speed import REPEATS as SPEED_REPEATS
from edge_runtime.speed import time_files_in_fresh_process

from .accuracy import CosineAgreement, float_prefix_search, run_nncf_search
from .convert_job import (
    ConvertJob,
    ConvertResult,
    choose_candidate,
    host_is_target,
    int8_weights_saturate,
    saturation_unmeasured,
    time_or_warn,
)
from .qdq_fuse import cpu_session, equalise_depthwise_inputs, fuse_for_ort

CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}
QUANTIZERS = ("auto", "nncf", "nncf-u8s8", "ort")
AUTO_QUANTIZERS = ("nncf", "nncf-u8s8")
# without a budget ``auto`` keeps the faster recipe only if its mean cosine with FP32 is within this of the
# more accurate one's: NanoDet-Plus-m's fused U8S8 graph (0.9928 vs 0.9954) is in, ort's (0.905) was out
RECIPE_COSINE_SLACK = 0.003
# a U8S8 graph's float-prefix search runs only this close under a budget: leading Convs in float gave
# ort's YOLO-FastestV2 graph 0.985 -> 0.990; its NanoDet-Plus-m graph (0.905) is out of any prefix's reach
ORT_SEARCH_GAP = 0.02
# the NNCF graph keeps the Convs this many convolutions deep from the input in float (as OpenVINO's INT8
# keeps 2) when that measures better: on NanoDet-Plus-m 416 the mAP drop on voc-indoor-85 went 0.94 -> 0.56
# -> 0.03 points for depth 0, 2, 3 (label-free mAP vs FP32 on the sample photos 94.0 -> 97.2 -> 98.0 %), at
# the same speed; YOLO-Fastest 1.1 lost by it (mean cosine 0.992 -> 0.990), so each model is measured
NNCF_FLOAT_FIRST_CONVS = 3
# the fused U8S8 graph keeps one convolution more in float, without measuring both: depth 3 -> 4 took
# YOLO-FastestV2's mean cosine 0.9896 -> 0.9915 and its speed 0.72x -> 1.00x FP32 (a float Conv between
# integer ones costs two layout changes); NanoDet-Plus-m's (depthwise inputs equalised) 0.9927 at both
FUSED_FLOAT_FIRST_CONVS = 4


def decode_tail_nodes(model: onnx.ModelProto, stop_types: tuple[str, ...] = ("Conv",)) -> list[str]:
    """Names of the nodes reachable backwards from the outputs without crossing a ``stop_types`` node."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tail: dict[str, onnx.NodeProto] = {}
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.op_type in stop_types or node.name in tail:
            continue
        tail[node.name] = node
        stack.extend(node.input)
    return list(tail)


class _TensorReader(CalibrationDataReader):
    def __init__(self, input_name: str, tensors: list[np.ndarray]) -> None:
        self._items = iter([{input_name: t} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def activation_types(model: onnx.ModelProto) -> str:
    """'U8S8', 'S8S8' or 'U8S8+S8S8': the integer types of a QDQ graph's quantised activations (int8
    weights). NNCF quantises a tensor that cannot be negative (after a Relu) to uint8 even in its int8
    recipe, so YOLO-FastestV2's NNCF graph mixes the two."""
    zero_point_type = {t.name: t.data_type for t in model.graph.initializer}
    found = {zero_point_type.get(n.input[2]) for n in model.graph.node if n.op_type == "QuantizeLinear"
             and len(n.input) > 2}
    names = ((onnx.TensorProto.UINT8, "U8S8"), (onnx.TensorProto.INT8, "S8S8"))
    return "+".join(name for kind, name in names if kind in found) or "none"


def float_convs(model: onnx.ModelProto) -> list[str]:
    """Convolutions of a QDQ model that read a float input (no DequantizeLinear in front)."""
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and producer.get(n.input[0]) != "DequantizeLinear"]


def _runner(model: onnx.ModelProto, input_name: str, outputs: list[str]):
    session = cpu_session(model)
    return lambda tensor: session.run(outputs, {input_name: tensor})


def _nncf_settings(per_tensor_activations: bool, seven_bit_weights: bool) -> tuple[dict, dict]:
    """``nncf.quantize`` keywords (MIXED preset, fast bias correction, 7-bit weights by NNCF's overflow fix)
    and their record."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    advanced = {"overflow_fix": OverflowFix.ENABLE} if seven_bit_weights else {}
    if per_tensor_activations:
        advanced["activations_quantization_params"] = QuantizationParameters(per_channel=False)
    settings = {"preset": nncf.QuantizationPreset.MIXED, "fast_bias_correction": True,
                "advanced_parameters": AdvancedQuantizationParameters(**advanced) if advanced else None}
    info = {"tool": f"nncf {nncf.__version__}", "preset": "mixed", "fast_bias_correction": True,
            "calibration_method": "minmax (nncf)", "weight_bits": 7 if seven_bit_weights else 8}
    return settings, info


def _quantize_nncf(job: ConvertJob, model: onnx.ModelProto, excluded: list[str], out: Path,
                   head: tuple[str, ...] | list[str] = ()) -> tuple[dict, float | None]:
    """NNCF's QDQ graph (with its accuracy-aware search under a budget); returns its record and, under a
    budget, the budget's metric of what it saved (None without one). ``head``: leading Convs that may stay
    in float: quantised both ways, the better by the budget's metric (else cosine on held-out images) is
    kept; it helped NanoDet-Plus-m and YOLO-FastestV2 and cost YOLO-Fastest 1.1, so it is measured per model
    (not at all without held-out images: all quantised, as before)."""
    import nncf

    name = job.manifest.input.name
    outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
    # its Convs run in float on ONNX Runtime: 7 bits only for an x86 target this host cannot measure
    settings, info = _nncf_settings(per_tensor_activations=False,
                                    seven_bit_weights=saturation_unmeasured(job.options))
    dataset = nncf.Dataset(job.calibration.tensors, lambda t: {name: t})

    def quantize(ignored: list[str]) -> onnx.ModelProto:
        return nncf.quantize(model, dataset, subset_size=len(job.calibration),
                             ignored_scope=nncf.IgnoredScope(names=ignored), **settings)

    quantized = quantize(excluded)
    metric = job.accuracy.metric if job.accuracy is not None else job.agreement
    measured = None  # the budget's metric of ``quantized`` when the comparison below took it
    if head and metric is not None:
        with_head = quantize(excluded + list(head))
        plain, floated = metric(_runner(quantized, name, outputs)), metric(_runner(with_head, name, outputs))
        kept = bool(floated > plain)
        job.progress(f"onnx int8: nncf, first {len(head)} Convs in float: {metric.name} {floated:.4f} against "
                     f"{plain:.4f} all quantised: {'kept' if kept else 'not kept'}")
        if kept:
            quantized, excluded = with_head, excluded + list(head)
        measured = (floated if kept else plain) if job.accuracy is not None else None
        info["float_first_convs"] = {"convs": list(head), "kept": kept, "metric": metric.name,
                                     "with": round(float(floated), 5), "without": round(float(plain), 5)}
    settings["ignored_scope"] = nncf.IgnoredScope(names=excluded)
    budget, after = job.accuracy, None
    if budget is not None:
        job.progress(f"onnx int8: accuracy-aware, {budget.metric.name} >= {budget.target:.4f} on "
                     f"{len(budget.metric.images)} held-out images")
        before = after = budget.metric(_runner(quantized, name, outputs)) if measured is None else measured
        plain_float = set(float_convs(quantized))
        if before < budget.target:  # met as quantised: NNCF's search would quantise again to the same model
            quantized = run_nncf_search(model, budget, name, job.calibration.tensors,
                                        lambda proto: _runner(proto, name, outputs), **settings)
            after = budget.metric(_runner(quantized, name, outputs))
        info["accuracy_control"] = budget.describe(before, after, sorted(set(float_convs(quantized)) - plain_float))
    onnx.save(quantized, str(out))
    return info, after


def _quantize_nncf_u8s8(job: ConvertJob, model: onnx.ModelProto, excluded: list[str], out: Path,
                        head: list[str]) -> tuple[dict, float | None]:
    """NNCF's calibration (per-tensor activations, depthwise inputs equalised first) rewritten into ONNX Runtime's
    fused U8S8 form (``qdq_fuse``), ``head`` in float; under a budget, ``_search_near_budget`` beyond ``head``.
    Returns its record and, under a budget, the budget's metric of what it saved (None without one)."""
    import nncf

    name = job.manifest.input.name
    outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
    # integer U8S8 kernels, as ort's graph: 7 bits wherever the target's CPU (else this one) saturates
    # u8 x s8 pairs, so an x86 AVX2 device computes what an arm64 or VNNI CPU does
    settings, info = _nncf_settings(per_tensor_activations=True, seven_bit_weights=_reduce_range(job))
    dataset = nncf.Dataset(job.calibration.tensors, lambda t: {name: t})
    equalised, info["equalised_depthwise_inputs"] = equalise_depthwise_inputs(model, job.calibration.tensors, name)

    built: dict[tuple[str, ...], tuple[onnx.ModelProto, dict]] = {}  # the search's graphs: its last is kept

    def build(float_convs: list[str]) -> onnx.ModelProto:
        key = tuple(float_convs)
        if key not in built:
            quantized = nncf.quantize(equalised, dataset, subset_size=len(job.calibration),
                                      ignored_scope=nncf.IgnoredScope(names=excluded + head + float_convs), **settings)
            built[key] = fuse_for_ort(quantized, job.calibration.tensors, name)
        fused, info["fused"] = built[key]
        return fused

    fused = build([])
    info["float_first_convs"] = {"convs": list(head), "kept": True}
    budget, after = job.accuracy, None
    if budget is not None:
        before = budget.metric(_runner(fused, name, outputs))
        levels = [[c for c in level if c not in head] for level in conv_levels(model)]
        float_layers, after = _search_near_budget(job, "nncf-u8s8", before,
                                                  lambda convs: _runner(build(convs), name, outputs),
                                                  [level for level in levels if level])
        fused = build(float_layers)
        info["accuracy_control"] = budget.describe(before, after, float_layers)
    onnx.save(fused, str(out))
    return info, after


def _quantize_static(job: ConvertJob, prepared: Path, excluded: list[str], out: Path, reduce_range: bool) -> dict:
    opts = job.options
    method = opts.get("calib_method", "minmax")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calib_method must be one of {', '.join(CALIBRATION_METHODS)}")
    extra_options: dict = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if method == "percentile":
        extra_options["CalibPercentile"] = float(opts.get("calib_percentile", 99.999))
    quantize_static(str(prepared), str(out), _TensorReader(job.manifest.input.name, job.calibration.tensors),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CALIBRATION_METHODS[method], nodes_to_exclude=excluded,
                    extra_options=extra_options)
    return {"tool": f"onnxruntime {onnxruntime.__version__}", "calibration_method": method,
            "reduce_range": reduce_range, "weight_bits": 7 if reduce_range else 8}


def _depths(model: onnx.ModelProto, counted: Callable[[onnx.NodeProto], bool] = lambda node: True
            ) -> dict[str, int]:
    """Each node's depth from the input: the most ``counted`` nodes on a path from the input up to it, itself
    included (every node: its depth in nodes, from 1; ONNX lists nodes in topological order)."""
    producer = {out: node.name for node in model.graph.node for out in node.output}
    depth: dict[str, int] = {}
    for node in model.graph.node:
        below = max((depth[producer[i]] for i in node.input if i in producer), default=0)
        depth[node.name] = below + bool(counted(node))
    return depth


def conv_levels(model: onnx.ModelProto) -> list[list[str]]:
    """The Convs grouped by depth from the input."""
    depth = _depths(model)
    levels: dict[int, list[str]] = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            levels.setdefault(depth[node.name], []).append(node.name)
    return [levels[d] for d in sorted(levels)]


def first_convs(model: onnx.ModelProto, depth: int) -> list[str]:
    """Convs at most ``depth`` convolutions deep from the input (counting themselves, on the deepest path),
    as OpenVINO's ``first_convs`` counts them."""
    level = _depths(model, lambda node: node.op_type == "Conv")
    return [n.name for n in model.graph.node if n.op_type == "Conv" and level[n.name] <= depth]


def prefix_nodes(model: onnx.ModelProto, convs: list[str]) -> list[str]:
    """Every node no deeper than the deepest of ``convs``: the float prefix they end. Leaving only the Convs
    out of quantisation would still quantise the ops between them (a channel shuffle's Reshape, Transpose,
    Gather), so a Conv of the prefix would read quantised inputs."""
    if not convs:
        return []
    depth = _depths(model)
    deepest = max(depth[name] for name in convs)
    return [node.name for node in model.graph.node if depth[node.name] <= deepest]


def _search_near_budget(job: ConvertJob, key: str, before: float, build: Callable[[list[str]], Any],
                        levels: list[list[str]]) -> tuple[list[str], float]:
    """A U8S8 graph's budget search: when ``before`` (its metric) missed the budget by at most ``ORT_SEARCH_GAP``,
    the fewest leading ``levels`` of Convs in float that meet it (``float_prefix_search``, as TFLite's; ``build``
    makes the runner of a graph with those in float); else none, ``before`` kept."""
    budget = job.accuracy
    if before >= budget.target - 1e-9:
        return [], before
    if budget.target - before > ORT_SEARCH_GAP:
        job.progress(f"onnx int8: {key} {budget.metric.name} {before:.4f}, more than {ORT_SEARCH_GAP} under the "
                     "budget: no float-layer search")
        return [], before
    job.progress(f"onnx int8: {key} {budget.metric.name} {before:.4f} < {budget.target:.4f}: searching leading "
                 "Convs to keep in float")
    return float_prefix_search(build, levels, budget, job.progress)


def _quantize_ort(job: ConvertJob, prepared: Path, model: onnx.ModelProto, excluded: list[str], out: Path
                  ) -> tuple[dict, float | None]:
    """``quantize_static`` (U8S8) of ``prepared`` (loaded: ``model``); under a budget, ``_search_near_budget``.
    Returns its record and, under a budget, the budget's metric of what it saved (None without one)."""
    reduce_range = _reduce_range(job)  # once: the search quantises again up to a few times
    info = _quantize_static(job, prepared, excluded, out, reduce_range)
    budget = job.accuracy
    if budget is None:
        return info, None
    name, outputs = job.manifest.input.name, list(job.manifest.artifact("onnx", "fp32").outputs)
    before = budget.metric(_runner(onnx.load(str(out)), name, outputs))
    trial = out.with_name(f"{out.stem}-trial.onnx")

    def build(float_convs: list[str]):
        _quantize_static(job, prepared, excluded + prefix_nodes(model, float_convs), trial, reduce_range)
        return _runner(onnx.load(str(trial)), name, outputs)

    float_layers, after = _search_near_budget(job, "ort", before, build, conv_levels(model))
    if float_layers:
        _quantize_static(job, prepared, excluded + prefix_nodes(model, float_layers), out, reduce_range)
    return {**info, "accuracy_control": budget.describe(before, after, float_layers)}, after


def _reduce_range(job: ConvertJob) -> bool:
    """7-bit weights for the U8S8 graph: the option wins, else where the target's CPU saturates
    (``int8_weights_saturate``)."""
    if "onnx_reduce_range" in job.options:
        return bool(job.options["onnx_reduce_range"])
    return int8_weights_saturate(job.options)


def _choose_recipe(job: ConvertJob, fp32: Path, candidates: dict[str, tuple[Path, float | None]],
                   activations: dict[str, str]) -> tuple[str, dict]:
    """The recipe ``auto`` ships, and the record of why. ``candidates``: key -> (graph, the budget's metric
    of it when the quantiser measured one); ``activations``: key -> its graph's ``activation_types``. Each
    candidate's accuracy against FP32 (the budget's metric, else cosine on held-out images) and, when this
    host is the package's CPU, its speed against FP32 timed in a fresh process (``edge_runtime.speed``)."""
    name = job.manifest.input.name
    outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
    paths = {"fp32": fp32, **{key: path for key, (path, _) in candidates.items()}}
    runs = {key: _runner(onnx.load(str(path)), name, outputs) for key, path in paths.items()}  # one session each
    budget, images = job.accuracy, "held-out"
    metric = budget.metric if budget is not None else job.agreement
    if metric is None:  # no held-out images: a spread of the calibration ones, said so in the record
        metric = CosineAgreement(runs["fp32"], job.calibration.tensors[:: max(1, len(job.calibration) // 8)][:8])
        images = "calibration"
    value = {key: known if known is not None else metric(runs[key]) for key, (_, known) in candidates.items()}
    value = {key: v if np.isfinite(v) else -1.0 for key, v in value.items()}  # a NaN graph (a zero scale) loses
    measured, host = host_is_target(job.options)
    speed: dict[str, float] = {}
    timing = None
    if measured:
        # in a fresh interpreter, as convert's speed record: this process's sessions (the quantisers', the
        # references') share the cores and once read the U8S8 graph at 1.21x FP32 where bench measured 1.06x
        threads = physical_cores()
        job.progress(f"onnx int8: timing {', '.join(candidates)} against FP32 on this host, {threads} threads, "
                     "in a fresh process")
        timed = time_or_warn("onnx int8 recipes", lambda: time_files_in_fresh_process(
            fp32, {key: path for key, (path, _) in candidates.items()}, metric.images[0], threads,
            what="onnx int8 recipes"))
        if timed is not None:
            speed = {key: timed[key]["vs_fp32"] for key in candidates}
            timing = {"threads": threads, "how": f"median latency on one {images} image in a fresh process, "
                      f"{SPEED_REPEATS} repeats taking turns with FP32, the median of their ratios"}
    if budget is not None:
        floor, rule = budget.target, f"meets the budget ({metric.name} >= {budget.target:.4f})"
    else:
        floor = max(value.values()) - RECIPE_COSINE_SLACK
        rule = f"is within {RECIPE_COSINE_SLACK} of the best"
    chosen, why = choose_candidate(value, speed, floor, rule, metric.name, host,
                                   f"{host} is not target {job.options.get('target')}" if not measured
                                   else "the timing failed")
    record = {"chosen": chosen, "activations": activations[chosen], "why": why, "host": host,
              "metric": metric.name, "measured_on": f"{len(metric.images)} {images} images",
              "candidates": {key: {"activations": activations[key], metric.name: round(value[key], 5),
                                   **({"speed_vs_fp32": round(speed[key], 3)} if speed else {})}
                             for key in candidates}}
    if timing:
        record["timing"] = timing
    return chosen, record


def quantize_onnx_int8(job: ConvertJob) -> ConvertResult:
    """Options: ``onnx_quantizer`` (auto | nncf | nncf-u8s8 | ort, default auto), ``calib_method`` for ort
    (minmax | entropy | percentile), ``onnx_keep_tail_float`` (default True), ``onnx_reduce_range`` (7-bit
    weights for ort and nncf-u8s8; default from the target or host, ``_reduce_range``), ``onnx_float_first_convs``
    (the nncf graph's Convs at most this many convolutions deep kept in float where that measures better,
    default ``NNCF_FLOAT_FIRST_CONVS``; the nncf-u8s8 graph's always, default ``FUSED_FLOAT_FIRST_CONVS``;
    0: none)."""
    quantizer = job.options.get("onnx_quantizer") or "auto"
    if quantizer not in QUANTIZERS:
        raise ValueError(f"onnx_quantizer must be one of {', '.join(QUANTIZERS)}")
    out_name = "model_int8.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(job.fp32_onnx), str(prepared), skip_symbolic_shape=False)
        model = onnx.load(str(prepared))
        excluded = decode_tail_nodes(model) if job.options.get("onnx_keep_tail_float", True) else []
        keys = list(AUTO_QUANTIZERS) if quantizer == "auto" else [quantizer]
        job.progress(f"onnx int8: {', '.join(keys)} on {len(job.calibration)} images, "
                     f"{len(excluded)} tail nodes in float")
        made: dict[str, tuple[Path, dict]] = {}
        metric_of: dict[str, float | None] = {}
        head = first_convs(model, int(job.options.get("onnx_float_first_convs", NNCF_FLOAT_FIRST_CONVS)))
        fused_head = first_convs(model, int(job.options.get("onnx_float_first_convs", FUSED_FLOAT_FIRST_CONVS)))
        for key in keys:
            path = Path(tmp) / f"{key}.onnx"
            if key == "nncf":
                info, metric_of[key] = _quantize_nncf(job, model, excluded, path, head)
            elif key == "nncf-u8s8":
                info, metric_of[key] = _quantize_nncf_u8s8(job, model, excluded, path, fused_head)
            else:
                info, metric_of[key] = _quantize_ort(job, prepared, model, excluded, path)
            made[key] = path, {"quantizer": key, "activations": activation_types(onnx.load(str(path))), **info}
        chosen, recipe = quantizer, None
        if len(made) > 1:
            chosen, recipe = _choose_recipe(job, job.fp32_onnx,
                                            {key: (path, metric_of[key]) for key, (path, _) in made.items()},
                                            {key: made_info["activations"] for key, (_, made_info) in made.items()})
            for key, (_, made_info) in made.items():
                recipe["candidates"][key].update({k: made_info[k] for k in ("tool", "reduce_range") if k in made_info})
            job.progress(f"onnx int8: {chosen} ({recipe['activations']}), {recipe['why']}")
        path, info = made[chosen]
        # job.out_dir is convert's fresh staging folder: the file reaches the package by os.replace
        shutil.move(path, job.out_dir / out_name)
    info.update({"format": "QDQ", "per_channel": True, "float_nodes": excluded})
    if recipe is not None:
        info["recipe"] = recipe
    return ConvertResult(file=out_name, outputs=list(job.manifest.artifact("onnx", "fp32").outputs),
                         extra={"quantization": info})
