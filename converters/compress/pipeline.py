"""``edge-runtime compress``: the compression steps in their order, ending in one compressed checkpoint.

    load -> prune (channels) -> low-rank (measured per layer) -> fine-tune (task loss and / or
    distillation) -> QAT (fake-quant fine-tune) -> magnitude sparsity (size report) -> save

Each step is optional; every step that ran leaves an entry in the checkpoint's history, which
``export`` carries on like any other checkpoint (``converters.compress.compressed_checkpoint``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_runtime.coco import COCO_CLASSES
from edge_runtime.errors import EdgeRuntimeError, UsageError

from ..checkpoints import load_checkpoint, load_model
from ..models import get_spec
from .compressed_checkpoint import save_compressed


@dataclass
class CompressOptions:
    prune: float | None = None  # fraction of each prunable channel group to remove
    method: str = "l1"  # l1 | taylor | group
    low_rank: float | None = None  # MAC ratio a factorised layer may keep
    low_rank_backends: tuple[str, ...] = ("onnx",)  # a factorisation must be faster on each of these
    distill: bool = False
    teacher: str | Path | None = None  # teacher checkpoint [the uncompressed model]
    teacher_model: str | None = None  # the teacher's model name [the student's]
    data: str | Path | None = None  # "demo" (generated shapes) or a labelled folder / labels file
    images: int = 2000  # training images read
    steps: int | None = None
    epochs: float | None = None
    lr: float = 2e-3
    batch: int = 16
    temperature: float = 1.0
    qat: bool = False
    qat_steps: int | None = None
    calib: str | Path | None = None
    calib_size: int = 64
    sparsity: float | None = None  # unstructured magnitude pruning: size report only
    imgsz: int | None = None
    seed: int = 0
    threads: int = 1


def _steps(options: CompressOptions, images: int) -> int:
    if options.steps is not None:
        return options.steps
    if options.epochs is not None:
        return max(1, math.ceil(options.epochs * images / options.batch))
    return 0


def _check(model_name: str, options: CompressOptions) -> None:
    """Argument problems found before any minute of work (usage errors: exit status 2)."""
    trains = options.steps or options.epochs or options.qat or options.method == "taylor" and options.prune
    if (trains or options.distill) and options.data is None:
        raise UsageError("fine-tuning, distillation, QAT and taylor pruning need --data (a labelled folder, "
                         "or 'demo' for the generated shapes)")
    if options.qat and options.calib is None:
        raise UsageError("--qat needs --calib (images to calibrate the activation ranges on)")
    if options.low_rank and options.data is None and options.calib is None:
        raise UsageError("--low-rank measures each layer's error on real images: give --data or --calib")
    from .train import task_loss

    if (options.steps or options.epochs or options.qat) and task_loss(model_name) is None and not options.distill:
        family = get_spec(model_name).family
        raise UsageError(f"{model_name}: the {family} family has no task loss in this project, so fine-tuning "
                         f"it is distillation: add --distill (the uncompressed model, or --teacher, teaches)")
    for name, value in (("--prune", options.prune), ("--low-rank", options.low_rank), ("--sparsity", options.sparsity)):
        if value is not None and not 0 < value < 1:
            raise UsageError(f"{name} must lie in (0, 1), got {value}")


def _calibration(model_name: str, imgsz: int, options: CompressOptions) -> list[torch.Tensor]:
    from ..calibration import CalibrationSet
    from .qat import calibration_batches

    return calibration_batches(CalibrationSet(options.calib, get_spec(model_name).input_spec(imgsz),
                                              options.calib_size).tensors)


def _load_teacher(student_name: str, options: CompressOptions) -> nn.Module:
    name = options.teacher_model or student_name
    teacher, _ = load_model(get_spec(name), options.teacher)
    if get_spec(name).family != get_spec(student_name).family:
        raise EdgeRuntimeError(f"{options.teacher}: a {name} teacher has other outputs than a {student_name} student "
                               f"(families {get_spec(name).family} and {get_spec(student_name).family})")
    return teacher


def compress_model(model_name: str, weights: str | Path | None, out: str | Path, options: CompressOptions,
                   progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Run the requested steps on ``model_name`` loaded from ``weights`` (default: its bundled
    weights) and write the compressed checkpoint ``out``. Returns the summary (params before and
    after, each step's history entry)."""
    from .prune import parameter_count

    spec = get_spec(model_name)
    _check(model_name, options)
    weights = weights or spec.weights
    if weights is None:
        raise EdgeRuntimeError(f"{model_name}: has no bundled weights; pass --weights")
    torch.set_num_threads(options.threads)
    model, num_classes, meta = load_checkpoint(spec, weights)
    history: list[dict[str, Any]] = list((meta or {}).get("history", []))
    factorized: dict[str, dict[str, Any]] = dict((meta or {}).get("factorized", {}))
    teacher = None
    if options.distill:  # --teacher, else the model as loaded (pruning copies, fine-tuning changes it in place)
        teacher = _load_teacher(model_name, options) if options.teacher else copy.deepcopy(model).eval()
    imgsz = options.imgsz or spec.default_imgsz
    params_before = parameter_count(model)

    data = None
    if options.data is not None:
        from .data import load_training_data

        progress(f"training data: {options.data}")
        # labels are matched to the model's classes by name (COCO's for an 80-class checkpoint)
        names = spec.class_names or (COCO_CLASSES if num_classes == len(COCO_CLASSES) else None)
        data = load_training_data(model_name, options.data, imgsz, count=options.images, seed=options.seed,
                                  class_names=names, workers=1, progress=True)
    if options.prune:
        from .prune import prune_channels

        progress(f"pruning {options.prune:.0%} of the channels ({options.method})")
        model, summary = prune_channels(model, model_name, options.prune, options.method, data=data, imgsz=imgsz,
                                        seed=options.seed)
        history.append(summary.history_entry())
    if options.low_rank:
        from .factorization import apply_factorization
        from .lowrank import format_reports, plan_factorization

        # each layer's error is measured on what real images make of its input
        example = (torch.from_numpy(data.images[:8].astype(np.float32)) if data is not None
                   else _calibration(model_name, imgsz, options)[0][:8])
        progress(f"low-rank at {options.low_rank:g} of each layer's MACs: timing every candidate on "
                 f"{', '.join(options.low_rank_backends)}")
        plan, reports = plan_factorization(model, example, options.low_rank, options.low_rank_backends,
                                           threads=options.threads, progress=progress)
        print(format_reports(reports))
        apply_factorization(model, plan)
        factorized.update(plan)
        history.append({"step": "lowrank", "ratio": options.low_rank, "backends": list(options.low_rank_backends),
                        "candidates": len(reports), "factorised": len(plan), "layers": sorted(plan)})
    steps = _steps(options, len(data.images)) if data is not None else 0
    if steps:
        from .train import fine_tune

        progress(f"fine-tuning {steps} steps" + (" with distillation" if teacher is not None else ""))
        history.append({"step": "fine_tune", **fine_tune(
            model, model_name, data, steps, lr=options.lr, batch=options.batch, teacher=teacher,
            temperature=options.temperature, seed=options.seed, threads=options.threads)})
    if options.qat:
        from .qat import qat_fine_tune

        qat_steps = options.qat_steps or steps or 300
        progress(f"quantization-aware fine-tuning, {qat_steps} steps")
        history.append(qat_fine_tune(model, model_name, data, _calibration(model_name, imgsz, options), qat_steps,
                                     teacher=teacher, batch=options.batch, seed=options.seed,
                                     threads=options.threads, temperature=options.temperature))
    if options.sparsity:
        from .prune import sparsify_magnitude

        model, report = sparsify_magnitude(model, options.sparsity)
        history.append({"step": "sparsity", **report})
    path = save_compressed(model, out, model_name, num_classes, factorized=factorized, history=history)
    return {"checkpoint": str(path), "model": model_name, "params_before": params_before,
            "params_after": parameter_count(model), "history": history}
