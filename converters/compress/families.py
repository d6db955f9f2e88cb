"""What compression needs to know about each model family, in one table: a new family is one entry.

Pruning keeps the convs the decoder reads (``output_layers``), distillation compares raw head
outputs with the family's divergence (``distill``), and fine-tuning uses the family's task loss
where the project has one (``task_loss``; without it the family fine-tunes by distillation alone).
A family missing here can be exported and converted, but not pruned, distilled or fine-tuned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..models import ModelSpec
from ..yolo_fastest_v2_loss import yolo_fastest_v2_loss
from .distill import nanodet_distillation, yolo_fastest_v2_distillation

LossFn = Callable[[tuple[torch.Tensor, ...], torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
# (student outputs, teacher outputs (detached), temperature, reg_max) -> named loss terms
DistillFn = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], float, int], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class CompressHooks:
    """``output_layers``: model -> the head convs whose output channels the decoder reads (never pruned).
    ``distill``: the distillation terms. ``distill_reads_reg_max``: ``distill`` needs the head's
    ``reg_max`` (GFL bins). ``task_loss``: model spec -> the training loss, None where the project
    has none."""

    output_layers: Callable[[nn.Module], list[nn.Module]]
    distill: DistillFn
    distill_reads_reg_max: bool = False
    task_loss: Callable[[ModelSpec], LossFn] | None = None


def _yolo_fastest_v2_task_loss(spec: ModelSpec) -> LossFn:
    # anchors and strides from a fresh build: the trained model may be wrapped (QAT) and lose attributes
    reference = spec.build(1)
    anchors = torch.tensor(reference.anchors, dtype=torch.float32).view(len(reference.strides),
                                                                        reference.anchor_num, 2)
    return lambda outputs, targets: yolo_fastest_v2_loss(outputs, targets, anchors, reference.strides)


FAMILY_HOOKS: dict[str, CompressHooks] = {
    "yolo-fastestv2": CompressHooks(
        output_layers=lambda model: [model.output_reg_layers, model.output_obj_layers, model.output_cls_layers],
        distill=lambda student, teacher, temperature, reg_max: yolo_fastest_v2_distillation(student, teacher,
                                                                                             temperature),
        task_loss=_yolo_fastest_v2_task_loss),
    "nanodet": CompressHooks(
        output_layers=lambda model: [*model.head.gfl_cls, *getattr(model.head, "gfl_reg", [])],
        distill=nanodet_distillation, distill_reads_reg_max=True),
}


def family_hooks(family: str) -> CompressHooks | None:
    """The family's entry, None when compression does not support it."""
    return FAMILY_HOOKS.get(family)


def families_with_task_loss() -> list[str]:
    return [name for name, hooks in FAMILY_HOOKS.items() if hooks.task_loss is not None]


def distillation_loss(family: str, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                      temperature: float = 1.0, reg_max: int = 7) -> tuple[torch.Tensor, dict[str, float]]:
    """Total distillation loss of ``student``'s raw outputs against ``teacher``'s (detached) and its parts."""
    hooks = FAMILY_HOOKS.get(family)
    if hooks is None:
        raise ValueError(f"no distillation loss for the {family} family (have: {', '.join(FAMILY_HOOKS)})")
    parts = hooks.distill(student, [t.detach() for t in teacher], temperature, reg_max)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}
