"""Low-rank factorisation, kept only where it runs faster: which layers to factorise, measured.

The factorisations themselves (``svd``, ``tucker2``) and the plan format are in
``converters.compress.factorization``.

``ratio`` is the fraction of a layer's MACs the factorised layer may keep (0.5 = at most half), not
a fraction of singular-value energy: the point is speed, and an energy target says nothing about
cost (on the trained demo model half the energy of most 1x1 convolutions already needs a rank past
the break-even point, where the pair does more work than the original). The output error the rank
costs is measured on the layer's real inputs and bounded instead (``max_error``).

A factorisation is kept only if it is measured faster: the original and the factorised layer are
each exported alone to ONNX with the layer's real input shape(s) and timed on the runtime's backends
(ONNX Runtime, OpenVINO on request), interleaved, median of rounds; it must beat the original by
``margin`` on every backend asked for.
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edge_runtime.timing import format_table, interleaved_times

from .factorization import Plan, factorizable, factorized_layer
from .hooks import run_with_hooks


def _output_pixels(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(output positions, input positions) of one call on an input of ``shape``."""
    if isinstance(module, nn.Linear):
        rows = math.prod(shape[:-1])
        return rows, rows
    h, w = shape[2:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return shape[0] * out_h * out_w, shape[0] * h * w


def layer_macs(module: nn.Module, entry: dict[str, Any] | None, shapes: list[tuple[int, ...]]) -> int:
    """MACs of ``module`` over its calls on ``shapes``, as it is (``entry`` None) or factorised."""
    out_ch, in_ch = module.weight.shape[:2]
    area = math.prod(module.weight.shape[2:])
    total = 0
    for shape in shapes:
        out_px, in_px = _output_pixels(module, shape)
        if entry is None:
            total += out_px * out_ch * in_ch * area
        elif entry["kind"] == "svd":
            total += out_px * entry["rank"] * (in_ch + out_ch)
        else:
            r_out, r_in = entry["ranks"]
            total += in_px * in_ch * r_in + out_px * (r_in * r_out * area + r_out * out_ch)
    return total


def entry_for_ratio(module: nn.Module, shapes: list[tuple[int, ...]], ratio: float) -> dict[str, Any] | None:
    """The largest-rank factorisation of ``module`` whose MACs are at most ``ratio`` of its own;
    None when even rank 1 does not fit. Tucker-2 keeps the same fraction of both modes."""
    kind = factorizable(module)
    budget = ratio * layer_macs(module, None, shapes)
    out_ch, in_ch = module.weight.shape[:2]
    if kind == "svd":
        options = [{"kind": "svd", "rank": r} for r in range(min(out_ch, in_ch), 0, -1)]
    elif kind == "tucker2":
        options = [{"kind": "tucker2", "ranks": [max(1, round(f * out_ch)), max(1, round(f * in_ch))]}
                   for f in np.linspace(1.0, 0.0, 101)[:-1]]
    else:
        return None
    return next((e for e in options if layer_macs(module, e, shapes) <= budget), None)


@dataclass
class LayerReport:
    """What was measured for one factorisable layer and what was decided."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    input_shapes: list[tuple[int, ...]]
    entry: dict[str, Any] | None  # the factorisation tried (None: no rank saves MACs)
    macs_before: int
    macs_after: int | None
    rel_error: float | None  # ||y_factorised - y|| / ||y|| on the layer's real inputs
    # backend -> median ms (original, factorised) and the median per-round ratio factorised / original
    times_ms: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    kept: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "weight_shape": list(self.weight_shape),
                "input_shapes": [list(s) for s in self.input_shapes],
                "times_ms": {b: list(t) for b, t in self.times_ms.items()}}


def layer_inputs(model: nn.Module, example: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every factorisable module's inputs (one per call) when ``model`` runs on ``example``."""
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(name: str) -> Callable[..., None]:
        return lambda module, args: seen.setdefault(name, []).append(args[0].detach())

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if factorizable(m)]
    run_with_hooks(model, [example], handles)
    return seen


def relative_error(original: nn.Module, factorised: nn.Module, inputs: list[torch.Tensor]) -> float:
    """||factorised(x) - original(x)|| / ||original(x)|| over all ``inputs``."""
    with torch.no_grad():
        num = sum(float((factorised(x) - original(x)).square().sum()) for x in inputs)
        den = sum(float(original(x).square().sum()) for x in inputs)
    return math.sqrt(num / max(den, 1e-30))


def _backend_runner(layer: nn.Module, shape: tuple[int, ...], backend: str, folder: Path, tag: str,
                    threads: int) -> Callable[[], Any]:
    """``layer`` exported alone to ONNX on an input of ``shape``, loaded by the runtime's ``backend``
    (its session settings), run by the backend's ``timing_runner`` (outputs into buffers made once)."""
    from edge_runtime.backends import open_backend

    from ..export_onnx import write_onnx

    path = folder / f"{tag}.onnx"
    dummy = torch.randn(shape)
    write_onnx(layer.eval(), dummy, path, ("output",), simplify=False)
    return open_backend(path, backend, threads).timing_runner({"input": dummy.numpy()})


def plan_factorization(model: nn.Module, example: torch.Tensor, ratio: float = 0.5,
                       backends: tuple[str, ...] = ("onnx",), margin: float = 0.1, max_error: float = 0.3,
                       rounds: int = 15, inner: int = 20, threads: int = 1,
                       progress: Callable[[str], None] = lambda msg: None) -> tuple[Plan, list[LayerReport]]:
    """Measure every factorisable layer of ``model`` (eval mode) and plan the ones worth keeping.

    ``example``: a batch of preprocessed images; the layers' real inputs (for the error) come from
    it and the timing uses its first image's shapes (batch 1, as deployed). A layer is kept when its
    factorisation at ``ratio`` of its MACs has relative output error <= ``max_error`` and runs at
    least ``margin`` faster than the original on each of ``backends``. The model is not changed:
    pass the plan to :func:`apply_factorization`.
    """
    model.eval()
    inputs = layer_inputs(model, example)
    plan: Plan = {}
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, calls in inputs.items():
            module = model.get_submodule(name)
            shapes = [(1, *x.shape[1:]) for x in calls]
            entry = entry_for_ratio(module, shapes, ratio)
            report = LayerReport(name, factorizable(module), tuple(module.weight.shape), shapes, entry,
                                 layer_macs(module, None, shapes), None, None)
            reports.append(report)
            if entry is None:
                report.reason = f"no rank keeps <= {ratio:.0%} of the MACs"
                continue
            factorised = factorized_layer(module, entry).eval()
            report.macs_after = layer_macs(module, entry, shapes)
            report.rel_error = relative_error(module, factorised, calls)
            if report.rel_error > max_error:
                report.reason = f"error {report.rel_error:.3f} > {max_error}"
                continue
            progress(f"timing {name} {list(module.weight.shape)} -> {entry}")
            for backend in backends:
                rounds_ms = np.zeros((2, rounds))
                for s, shape in enumerate(shapes):  # a module called twice (shared head) costs both calls
                    runners = [_backend_runner(layer, shape, backend, Path(tmp), f"{name}-{tag}-{s}", threads)
                               for layer, tag in ((module, "original"), (factorised, "factorised"))]
                    rounds_ms += interleaved_times(runners, rounds, inner)
                    # free the sessions now: an OpenVINO model left for the collector kept worker
                    # threads busy and tripled the next layer's ONNX Runtime times
                    del runners
                    gc.collect()
                # the median of per-round ratios: each pair ran back to back, under the same load
                report.times_ms[backend] = (float(np.median(rounds_ms[0])), float(np.median(rounds_ms[1])),
                                            float(np.median(rounds_ms[1] / rounds_ms[0])))
            slow = [b for b, t in report.times_ms.items() if t[2] > 1 - margin]
            report.kept = not slow
            report.reason = (f"faster by >= {margin:.0%}" if report.kept else
                             f"not {margin:.0%} faster on {', '.join(slow)}")
            if report.kept:
                plan[name] = entry
    return plan, reports


def format_reports(reports: list[LayerReport]) -> str:
    """One row per layer: shape, factorisation, MACs, error, median times per backend, decision."""
    backends = sorted({b for r in reports for b in r.times_ms})
    headers = ["layer", "weight", "input", "factorisation", "MACs before", "after", "rel err",
               *[f"{b} ms orig/fact (ratio)" for b in backends], "kept", "why"]
    rows = []
    for r in reports:
        entry = r.entry or {}
        rank = entry.get("rank", entry.get("ranks", "-"))
        rows.append([r.name, "x".join(map(str, r.weight_shape)), "x".join(map(str, r.input_shapes[0][1:])),
                     f"{r.kind} {rank}", r.macs_before, r.macs_after or "-",
                     "-" if r.rel_error is None else f"{r.rel_error:.3f}",
                     *[f"{t[0]:.4f}/{t[1]:.4f} ({t[2]:.2f})" if (t := r.times_ms.get(b)) else "-"
                       for b in backends],
                     "yes" if r.kept else "no", r.reason])
    return format_table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    """Measure the factorisations of one model: ``python -m converters.compress.lowrank --model demo-shapes``."""
    from ..checkpoints import load_model
    from ..models import get_spec

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default=None, help="checkpoint [bundled weights, else random init]")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of each layer's MACs to keep [0.5]")
    p.add_argument("--backends", default="onnx", help="comma-separated: onnx,openvino [onnx]")
    p.add_argument("--images", default=None, help="folder of images for the layers' real inputs [random input]")
    p.add_argument("--max-error", type=float, default=0.3)
    p.add_argument("--margin", type=float, default=0.1)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = get_spec(args.model)
    weights = args.weights or spec.weights
    model = load_model(spec, weights)[0] if weights else spec.build(80).eval()
    size = spec.default_imgsz
    if args.images:
        from edge_runtime.manifest import InputSpec

        from ..calibration import CalibrationSet

        input_spec = InputSpec("input", (1, 3, size, size), "NCHW", "float32", spec.color, spec.mean, spec.std,
                               spec.resize)
        example = torch.from_numpy(np.concatenate(CalibrationSet(args.images, input_spec, 8).tensors))
    else:
        example = torch.randn(2, 3, size, size)
    plan, reports = plan_factorization(model, example, args.ratio, tuple(args.backends.split(",")), args.margin,
                                       args.max_error, progress=print)
    print(format_reports(reports))
    print(f"kept {len(plan)} of {len(reports)} factorisable layers; plan: {plan}")


if __name__ == "__main__":
    main()
