"""Quantization-aware fine-tuning: the weights learn to sit well on the INT8 grid they will be exported to.

The model keeps its structure (so the result is a plain checkpoint that ``load_model`` reads and
``export`` folds as usual); for the fine-tuning it is instrumented in place:

- every BatchNorm that follows a convolution (``fuse.conv_bn_pairs``) is frozen to its running
  statistics, so conv + BN is the affine map export will fold;
- each convolution's weight is fake-quantised *as folded*: FQ(w * s) / s with s = gamma /
  sqrt(var + eps), per output channel, symmetric, [-127, 127] (or [-64, 64] with ``reduce_range``,
  ONNX Runtime's 7-bit weights for CPUs without VNNI): the grid the folded INT8 weights land on;
- each convolution's input is fake-quantised per tensor, asymmetric uint8, with the range the
  minmax calibrator finds (global min / max over the calibration images, zero included).

Gradients pass the rounding straight through (``torch.fake_quantize_*``). Afterwards the
instrumentation is removed and the INT8 model is made by the project's ONNX static quantiser with
the same settings (``onnx_quantizer=ort``, minmax, per-channel symmetric weights), which re-measures
the activation ranges of the fine-tuned model on the same calibration images: QAT changes the
weights only, so the QAT and PTQ artifacts differ in nothing but them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .fuse import conv_bn_pairs
from .hooks import run_with_hooks

ACT_QMAX = 255  # uint8 activations


def weight_qmax(reduce_range: bool) -> int:
    """ONNX Runtime's symmetric int8 weight range: [-127, 127], or [-64, 64] with reduce_range."""
    return 64 if reduce_range else 127


class FoldedWeightFakeQuant(nn.Module):
    """Parametrisation of a conv weight: FQ(w * s) / s, where ``s`` (per output channel) is the scale
    the following BatchNorm multiplies by, so the *folded* weight is what gets rounded."""

    def __init__(self, bn_scale: Callable[[], torch.Tensor] | None, qmax: int) -> None:
        super().__init__()
        self.bn_scale = bn_scale  # a function, not a module: the BN's parameters stay where they are
        self.qmax = qmax

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (weight.dim() - 1)
        s = self.bn_scale().reshape(shape) if self.bn_scale is not None else torch.ones_like(weight[:, :1, :1, :1])
        folded = weight * s
        absmax = folded.detach().abs().amax(dim=tuple(range(1, weight.dim()))).clamp_min(1e-8)
        scale = (absmax / self.qmax).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(folded, scale, zero, 0, -self.qmax, self.qmax) / s


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """Asymmetric uint8 (scale, zero point) of the range [low, high], widened to hold 0 (as ORT does)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / ACT_QMAX, 1e-8)
    return scale, int(round(-low / scale))


@dataclass
class QatInstrumentation:
    """What :func:`prepare_qat` attached to a model, and the activation ranges it observed."""

    model: nn.Module
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # conv name -> input (min, max)
    handles: list[Any] = field(default_factory=list)
    convs: list[str] = field(default_factory=list)

    def remove(self) -> nn.Module:
        """Strip the fake quantisation (the latent float weights stay) and unfreeze BN."""
        for handle in self.handles:
            handle.remove()
        for name in self.convs:
            parametrize.remove_parametrizations(self.model.get_submodule(name), "weight", leave_parametrized=False)
        self.handles.clear()
        self.convs.clear()
        return self.model


def _bn_scale(bn: nn.BatchNorm2d) -> Callable[[], torch.Tensor]:
    return lambda: bn.weight / torch.sqrt(bn.running_var + bn.eps)


def _freeze_bn(module: nn.Module, args: Any) -> None:
    module.training = False  # running statistics, no updates: the affine map export folds


def calibration_batches(tensors: list[np.ndarray], batch: int = 16) -> list[torch.Tensor]:
    """Preprocessed (1, 3, H, W) calibration images as the (<= batch, 3, H, W) batches QAT calibrates on."""
    return [torch.from_numpy(np.concatenate(tensors[i:i + batch])) for i in range(0, len(tensors), batch)]


def prepare_qat(model: nn.Module, calibration: list[torch.Tensor], reduce_range: bool = True,
                ) -> QatInstrumentation:
    """Instrument ``model`` in place for quantization-aware training and calibrate its activation
    ranges on ``calibration`` (preprocessed (1|N, 3, H, W) batches). Undo with ``.remove()``."""
    model.eval()
    pairs = dict(conv_bn_pairs(model, calibration[0]))
    state = QatInstrumentation(model)
    observed: dict[str, list[float]] = {}

    def observe(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            x = args[0].detach()
            low, high = observed.setdefault(name, [float("inf"), float("-inf")])
            observed[name] = [min(low, float(x.min())), max(high, float(x.max()))]
        return hook

    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    run_with_hooks(model, calibration, [m.register_forward_pre_hook(observe(n)) for n, m in convs])

    qmax = weight_qmax(reduce_range)
    for name, conv in convs:
        if name not in observed:  # never called on these inputs: nothing to calibrate it with
            continue
        state.ranges[name] = (observed[name][0], observed[name][1])
        scale, zero = activation_qparams(*state.ranges[name])
        state.handles.append(conv.register_forward_pre_hook(
            lambda module, args, scale=scale, zero=zero: (
                torch.fake_quantize_per_tensor_affine(args[0], scale, zero, 0, ACT_QMAX), *args[1:])))
        bn = model.get_submodule(pairs[name]) if name in pairs else None
        parametrize.register_parametrization(conv, "weight",
                                             FoldedWeightFakeQuant(_bn_scale(bn) if bn is not None else None, qmax))
        state.convs.append(name)
        if bn is not None:
            state.handles.append(bn.register_forward_pre_hook(_freeze_bn))
    return state


def qat_fine_tune(model: nn.Module, model_name: str, data: Any, calibration: list[torch.Tensor], steps: int,
                  lr: float = 5e-4, reduce_range: bool = True, teacher: nn.Module | None = None,
                  **train_options: Any) -> dict[str, Any]:
    """Calibrate, fine-tune ``model`` in place under fake quantisation with the shared loop
    (``converters.compress.train.fine_tune``; ``data`` a ``TrainingData``), then strip the fake
    quantisation. Returns the loop's summary plus the QAT settings, for the checkpoint's history.

    ``lr``: a quarter of fine_tune's default: the weights start trained and need only settle on the
    grid; at 2e-3 the demo model's first hundred steps lost more mAP than they won back.
    """
    from .train import fine_tune

    state = prepare_qat(model, calibration, reduce_range)
    try:
        summary = fine_tune(model, model_name, data, steps, lr=lr, teacher=teacher, **train_options)
    finally:
        state.remove()
    model.eval()
    return {"step": "qat", **summary, "lr": lr, "reduce_range": reduce_range,
            "weights": f"per-channel symmetric int8 [-{weight_qmax(reduce_range)}, {weight_qmax(reduce_range)}]",
            "activations": "per-tensor asymmetric uint8, minmax on the calibration images",
            "calibration_batches": len(calibration), "fake_quantised_convs": len(state.ranges)}


def export_qat_int8(checkpoint: str | Path, model_name: str, out: str | Path, calib: str | Path,
                    calib_size: int = 100, reduce_range: bool = True, val_size: int = 24,
                    progress: Callable[[str], None] = lambda msg: None) -> Any:
    """A package of a QAT checkpoint: FP32 ONNX plus ``model_int8.onnx`` quantised with the settings
    QAT trained for (ORT static, minmax, per-channel), checked against FP32 like every artifact.
    Returns the manifest; the INT8 artifact records the checkpoint's QAT history under ``qat``."""
    from edge_runtime.manifest import Artifact

    from ..checkpoints import read_checkpoint
    from ..convert import convert_package
    from ..export_onnx import export_package

    export_package(model_name, checkpoint, out, progress=progress)
    manifest = convert_package(out, ["onnx"], ["int8"], calib=calib, calib_size=calib_size, val_size=val_size,
                               options={"onnx_quantizer": "ort", "calib_method": "minmax",
                                        "onnx_reduce_range": reduce_range}, progress=progress)
    meta = read_checkpoint(checkpoint)[1] or {}
    history = [h for h in meta.get("history", []) if h.get("step") == "qat"]
    art = manifest.artifact("onnx", "int8")
    manifest = manifest.with_artifact(Artifact(**{**art.__dict__, "extra": {
        **art.extra, "qat": history[-1] if history else None}}))
    manifest.save()
    return manifest


def compare_with_ptq(out: str | Path, steps: int = 300, calib_count: int = 100, calib_size: int = 64,
                     val_count: int = 200, reduce_range: bool = True) -> list[dict[str, Any]]:
    """Demo model: FP32, PTQ INT8 (NNCF, the default; ORT minmax) and QAT INT8 packages under ``out``,
    each with its mAP on ``val_count`` held-out generated images, cosine with FP32 on held-out
    calibration-folder images and the median ONNX Runtime latency (1 thread, interleaved)."""
    import shutil

    from edge_runtime.backends import open_backend
    from edge_runtime.manifest import load_manifest
    from edge_runtime.timing import interleaved_times

    from ..calibration import CalibrationSet
    from ..checkpoints import load_model
    from ..convert import ArtifactRefused, convert_package
    from ..demo_data import write_split
    from ..demo_model import MODEL, evaluate_package
    from ..export_onnx import export_package
    from ..models import get_spec
    from .compressed_checkpoint import save_compressed
    from .data import load_training_data

    out = Path(out)
    torch.set_num_threads(1)
    calib_dir = write_split(out / "shapes", "train", calib_count).parent / "train"  # training images
    spec = get_spec(MODEL)
    packages = {}
    for name, quantizer in (("ptq-nncf", "nncf"), ("ptq-ort-minmax", "ort")):
        packages[name] = out / name
        export_package(MODEL, None, packages[name])
        try:
            convert_package(packages[name], ["onnx"], ["int8"], calib=calib_dir, calib_size=calib_size,
                            options={"onnx_quantizer": quantizer, "calib_method": "minmax",
                                     "onnx_reduce_range": reduce_range}, keep_failed=True,
                            measure_speed=False,  # timed below, interleaved with the others
                            int8_min_cosine=0)  # plain PTQ, no budget search: the baseline QAT is compared with
        except ArtifactRefused:  # kept, marked failed: a poor PTQ baseline is what this comparison measures
            pass
    model, num_classes = load_model(spec, spec.weights)
    calibration = CalibrationSet(calib_dir, spec.input_spec(spec.default_imgsz), calib_size)
    batches = calibration_batches(calibration.tensors)
    data = load_training_data(MODEL, "demo", count=2000, workers=1)
    summary = qat_fine_tune(model, MODEL, data, batches, steps, reduce_range=reduce_range)
    checkpoint = save_compressed(model, out / "qat.ckpt", MODEL, num_classes, history=[summary])
    packages["qat-ort-minmax"] = out / "qat-ort-minmax"
    shutil.rmtree(packages["qat-ort-minmax"], ignore_errors=True)
    export_qat_int8(checkpoint, MODEL, packages["qat-ort-minmax"], calib_dir, calib_size, reduce_range)

    rows = [{"model": "fp32", "package": packages["ptq-nncf"], "precision": "fp32"}]
    rows += [{"model": f"int8 {name}", "package": pkg, "precision": "int8"} for name, pkg in packages.items()]
    sample = {"input": calibration.tensors[0]}
    runners = []
    for row in rows:
        manifest = load_manifest(row["package"])
        art = manifest.artifact("onnx", row["precision"])
        row.update(evaluate_package(row["package"], val_count, precision=row["precision"], progress=False))
        row["cosine_vs_fp32"] = art.extra.get("fp32_agreement", {}).get("cosine_mean", 1.0)
        backend = open_backend(manifest.artifact_path(art), "onnx", 1)
        runners.append(lambda backend=backend: backend.run(sample))
    for row, times in zip(rows, interleaved_times(runners, rounds=30, inner=5)):
        row["ort_ms"] = float(np.median(times))
        row["package"] = str(row["package"])
    (out / "compare.json").write_text(json.dumps({"rows": rows, "qat": summary}, indent=1, default=str))
    return rows


def main(argv: list[str] | None = None) -> None:
    """PTQ vs QAT on the demo model: ``python -m converters.compress.qat --out /tmp/qat-compare``."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--val", type=int, default=200)
    args = p.parse_args(argv)
    for row in compare_with_ptq(args.out, args.steps, val_count=args.val):
        print(f"{row['model']:<20} mAP {row['map']:.4f} AP50 {row['map50']:.4f} cosine {row['cosine_vs_fp32']:.5f} "
              f"ORT {row['ort_ms']:.3f} ms")


if __name__ == "__main__":
    main()
