"""Quantization-aware fine-tuning for ONNX Runtime's fast U8S8 graph, measured against the original FP32.

    python bench/qat_u8s8.py PKG --weights CKPT --calib ../shared/fixtures/images/calib-coco-val2017 \\
        --steps 400 --class-gain 5 --labels ../shared/fixtures/datasets/voc-indoor-85

PKG is the FP32 package exported from CKPT (``edge-runtime export --model M --weights CKPT -o PKG``).
The model is fine-tuned under fake quantisation on the grid of ``quantize_static``'s U8S8 QDQ graph:
the BatchNorm-folded weights per channel on [-127, 127]; per tensor on uint8, every Conv's input and
every LeakyReLU's input (ONNX Runtime quantises a Conv's output before a LeakyRelu, which it cannot
fuse, where a Relu folds into the Conv's range). The activation ranges are learnt (LSQ, Esser et al.
2020), starting from the shrunken min/max range that errs least in mean square (after the LeakyReLU
for its inputs). The loss is distillation from the FP32 model (``converters.compress.distill``) with the
class term multiplied by ``--class-gain``, on the images of ``--calib`` that are not held out, with
flips. The fine-tuned weights are exported and quantised to U8S8 with the learnt ranges as
``TensorQuantOverrides`` (matched to the ONNX tensors by module name); the other tensors keep
minmax ranges. Reported against the original FP32 ONNX: cosine on the held-out photos (as
``convert``'s ``fp32_agreement``), speed (interleaved), and with ``--labels`` the mAP drop, beside
plain U8S8 post-training quantisation of the original weights.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from int8_probe import (  # bench/, beside this script
    fp32_cosines,
    heading,
    image_sets,
    mse_range,
    probe_arguments,
    quantize_u8s8,
)
from int8_vs_fp32 import accuracy
from torch import nn
from torch.nn.utils import parametrize

from converters.calibration import CalibrationSet
from converters.checkpoints import load_model
from converters.compress import families
from converters.compress.compressed_checkpoint import save_compressed
from converters.compress.data import TrainingData
from converters.compress.fuse import conv_bn_pairs
from converters.compress.hooks import run_with_hooks
from converters.compress.qat import FoldedWeightFakeQuant, _bn_scale, _freeze_bn, calibration_batches
from converters.compress.train import fine_tune
from converters.export_onnx import export_package
from converters.models import get_spec
from edge_runtime.backends import open_backend
from edge_runtime.manifest import Manifest, load_manifest
from edge_runtime.timing import interleaved_times

SAMPLED = 20000  # values sampled per calibration batch and tensor to choose a starting range from
LSQ_GRADIENT_SCALE = 1 / np.sqrt(SAMPLED * 255)  # LSQ's 1/sqrt(N * Qp), one N for every tensor (as measured)


def instrument(model: nn.Module, batches: list[torch.Tensor]) -> tuple[list, dict[str, nn.Module], list[str]]:
    """Fake-quantise ``model`` in place as above. Returns the hook handles, the modules carrying learnt
    ranges (``lsq_scale``, ``lsq_zero``) by name, and the parametrised convs."""
    model.eval()
    pairs = dict(conv_bn_pairs(model, batches[0]))
    called: set[str] = set()
    run_with_hooks(model, batches[:1], [m.register_forward_pre_hook(lambda mod, a, n=n: called.add(n))
                                        for n, m in model.named_modules() if isinstance(m, nn.Conv2d)])
    targets = {n: (m, isinstance(m, nn.LeakyReLU)) for n, m in model.named_modules()
               if n in called or isinstance(m, nn.LeakyReLU)}
    rng = np.random.default_rng(0)
    samples: dict[str, list[np.ndarray]] = {}

    def observe(name: str):
        def hook(module: nn.Module, args) -> None:
            flat = args[0].detach().flatten().numpy()
            samples.setdefault(name, []).append(flat[rng.integers(0, flat.size, SAMPLED)])
        return hook
    run_with_hooks(model, batches, [m.register_forward_pre_hook(observe(n)) for n, (m, _) in targets.items()])
    handles, learnt = [], {}
    for name, (module, leaky) in targets.items():
        if name not in samples:
            continue
        slope = module.negative_slope if leaky else 1.0
        lo, hi = mse_range(np.concatenate(samples[name]), (lambda v: np.where(v >= 0, v, slope * v)) if leaky
                           else (lambda v: v))
        scale = (hi - lo) / 255
        module.register_parameter("lsq_scale", nn.Parameter(torch.tensor([scale])))
        module.register_parameter("lsq_zero", nn.Parameter(torch.tensor([float(round(-lo / scale))])))
        handles.append(module.register_forward_pre_hook(
            lambda mod, args: (torch._fake_quantize_learnable_per_tensor_affine(
                args[0], mod.lsq_scale, mod.lsq_zero, 0, 255, LSQ_GRADIENT_SCALE), *args[1:])))
        learnt[name] = module
    for name in sorted(called):
        conv = model.get_submodule(name)
        bn = model.get_submodule(pairs[name]) if name in pairs else None
        parametrize.register_parametrization(conv, "weight", FoldedWeightFakeQuant(
            _bn_scale(bn) if bn is not None else None, 127))
        if bn is not None:
            handles.append(bn.register_forward_pre_hook(_freeze_bn))
    return handles, learnt, sorted(called)


def strip(model: nn.Module, handles: list, learnt: dict[str, nn.Module], convs: list[str]
          ) -> dict[str, tuple[float, float]]:
    """Remove the instrumentation; returns each learnt range (low, high) by module name."""
    for handle in handles:
        handle.remove()
    for name in convs:
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=False)
    ranges = {}
    for name, module in learnt.items():
        scale = float(module.lsq_scale.detach().abs())
        zero = float(module.lsq_zero.detach().clamp(0, 255).round())
        ranges[name] = (-zero * scale, (255 - zero) * scale)
        del module.lsq_scale, module.lsq_zero
    return ranges


def module_name(node_name: str) -> str:
    """The torch module an exported node came from: '/model/backbone/stage2/stage2.0/branch2/branch2.2/LeakyRelu'
    -> 'backbone.stage2.0.branch2.2' (a Sequential's child scope repeats its parent's name)."""
    parts, previous = [], None
    for scope in node_name.split("/")[2:-1]:
        parts.append(scope[len(previous) + 1:] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    return ".".join(parts)


def tensor_overrides(fp32: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> dict:
    """``TensorQuantOverrides``: each learnt range on its Conv's / LeakyRelu's input tensor (the union where
    two modules read one tensor)."""
    found: dict[str, tuple[float, float]] = {}
    for node in fp32.graph.node:
        key = module_name(node.name)
        if node.op_type in ("Conv", "LeakyRelu") and key in ranges:
            lo, hi = ranges[key]
            old = found.get(node.input[0], (lo, hi))
            found[node.input[0]] = (min(lo, old[0]), max(hi, old[1]))
    return {t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in found.items()}


def with_int8(manifest: Manifest, model: onnx.ModelProto, out: Path) -> Path:
    """A copy of ``manifest``'s package (its FP32 ONNX) listing ``model`` as its ONNX INT8 artifact."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fp32 = manifest.artifact("onnx", "fp32")
    shutil.copy(manifest.artifact_path(fp32), out / fp32.file)
    onnx.save(model, str(out / "model_int8.onnx"))
    sha = hashlib.sha256((out / "model_int8.onnx").read_bytes()).hexdigest()
    copied = dataclasses.replace(manifest, root=out, artifacts=(fp32,))
    copied.with_artifact(dataclasses.replace(fp32, file="model_int8.onnx", precision="int8", sha256=sha,
                                             extra={})).save()
    return out


def main() -> None:
    ap = probe_arguments(__doc__, rounds=15, per_round=5)
    ap.add_argument("--weights", required=True, help="the checkpoint PKG was exported from")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--class-gain", type=float, default=5.0, help="weight of the class term of the distillation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", default=None, help="labelled photos (ground-truth/ + images/): mAP drop vs FP32")
    ap.add_argument("--keep", default=None, help="folder to keep the two INT8 packages in")
    args = ap.parse_args()
    manifest = load_manifest(args.package)
    spec = get_spec(manifest.name)
    calibration, held_out = image_sets(manifest, args)
    training = CalibrationSet(args.calib, manifest.input, 10 ** 6, exclude=held_out.used, progress=False)
    fp32_art = manifest.artifact("onnx", "fp32")
    fp32_path = manifest.artifact_path(fp32_art)
    name = manifest.input.name
    cosines = fp32_cosines(manifest, held_out, args.threads)
    ptq = quantize_u8s8(fp32_path, name, calibration.tensors)

    model, num_classes = load_model(spec, args.weights)
    teacher = copy.deepcopy(model).eval()
    handles, learnt, convs = instrument(model, calibration_batches(calibration.tensors, 8))
    data = TrainingData(np.concatenate(training.tensors).astype(np.float16),
                        [np.zeros((0, 5), np.float32)] * len(training.tensors), "photos", vertical_flips=False)
    hooks = families.FAMILY_HOOKS[spec.family]
    distill = hooks.distill

    def weighted(student, soft, temperature, reg_max):
        parts = distill(student, soft, temperature, reg_max)
        return {k: v * args.class_gain if k == "kd_cls" else v for k, v in parts.items()}
    families.FAMILY_HOOKS[spec.family] = dataclasses.replace(hooks, distill=weighted)
    try:
        summary = fine_tune(model, manifest.name, data, args.steps, lr=args.lr, batch=args.batch, teacher=teacher,
                            seed=args.seed, threads=args.threads)
    finally:
        families.FAMILY_HOOKS[spec.family] = hooks
        ranges = strip(model, handles, learnt, convs)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_compressed(model, Path(tmp) / "qat.ckpt", manifest.name, num_classes, history=[summary])
        qat_package = export_package(manifest.name, checkpoint, Path(tmp) / "qat", imgsz=manifest.input.size_hw[0])
        qat_fp32_path = qat_package.artifact_path(qat_package.artifact("onnx", "fp32"))
        overrides = tensor_overrides(onnx.load(str(qat_fp32_path)), ranges)
        qat = quantize_u8s8(qat_fp32_path, name, calibration.tensors, overrides)
        qat_float = open_backend(qat_fp32_path, "onnx", args.threads)
        float_cosines = cosines(lambda t: qat_float.run({name: t}))

    runs = {"fp32": open_backend(fp32_path, "onnx", args.threads)}
    keep = Path(args.keep or tempfile.mkdtemp())
    packages = {"ptq": with_int8(manifest, ptq, keep / "ptq-u8s8"), "qat": with_int8(manifest, qat, keep / "qat-u8s8")}
    for key, package in packages.items():
        runs[key] = open_backend(package / "model_int8.onnx", "onnx", args.threads)
    feed = {name: held_out.tensors[0]}
    samples = interleaved_times([lambda b=b: b.run(feed) for b in runs.values()], args.rounds, args.per_round)
    median = {key: float(np.median(s)) for key, s in zip(runs, samples)}
    found = {key: [cosines(lambda t, b=runs[key]: b.run({name: t}))] for key in packages}
    if args.labels:
        for key, package in packages.items():
            found[key].append(accuracy(str(package), args.labels, None, args.threads)[("onnx", "int8")])
    print(heading(manifest, args, "onnxruntime", len(held_out)))
    print(f"QAT: {summary['steps']} steps on {len(training)} photos, loss {summary['first_loss']:.3f} -> "
          f"{summary['last_loss']:.3f}, {len(ranges)} learnt ranges ({len(overrides)} ONNX tensors), "
          f"class gain {args.class_gain:g}; the fine-tuned float model vs FP32: cosine mean "
          f"{np.mean(float_cosines):.4f}, worst {np.min(float_cosines):.4f}")
    print("\n| U8S8 graph | speed vs FP32 | cosine mean | cosine worst | mAP drop (pts) |")
    print("|---|---:|---:|---:|---:|")
    for key, label in (("ptq", "post-training, minmax"), ("qat", "QAT, learnt ranges")):
        c, drop = found[key][0], (found[key][1]["map_drop_points"] if len(found[key]) > 1 else None)
        print(f"| {label} | {median['fp32'] / median[key]:.2f}x | {np.mean(c):.4f} | {np.min(c):.4f} | "
              f"{'' if drop is None else f'{drop:+.2f}'} |")


if __name__ == "__main__":
    main()
