"""Knowledge distillation on raw head outputs: the student learns the teacher's soft predictions.

Every term is a divergence (KL) or a squared difference, so a student identical to its teacher has a
loss of exactly zero.
Per family (raw outputs as the models' ``forward`` returns them; ``families.FAMILY_HOOKS`` picks the loss):

- ``yolo-fastestv2``: per level (reg 4A, obj A, cls C maps). Objectness: binary KL between the
  tempered sigmoids, over every anchor (level weights as the task loss). Class: softmax KL with
  temperature per cell, weighted by the teacher's objectness there (its class map is meaningless on
  background), divided by the class count as the task's cross-entropy is. Box: squared difference of
  the sigmoid box terms, weighted by the teacher's objectness per anchor. Gains as the task loss's
  (box 3.2, obj 64, cls 32), so at ``distill_weight`` 1 neither loss drowns the other.
- ``nanodet``: per level (C class logits + 4 x (reg_max + 1) GFL bins). Class: binary KL between the
  tempered sigmoids (the family's scores are per-class sigmoids), summed over classes, mean over cells.
  Box: KL between the tempered softmax distributions of each side (localisation distillation),
  weighted by the teacher's best class score per cell.

Temperature terms are scaled by T^2 so their gradients keep their size as T changes (Hinton et al.).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..yolo_fastest_v2_loss import BOX_GAIN, CLS_GAIN, LEVEL_BALANCE, OBJ_GAIN


def binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Elementwise KL(Bernoulli(sigmoid(t/T)) || Bernoulli(sigmoid(s/T))), from logits (stable)."""
    s, t = student_logits / temperature, teacher_logits / temperature
    p = torch.sigmoid(t)
    return p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))


def softmax_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, dim: int
               ) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) along ``dim`` (that dimension summed away)."""
    log_p = F.log_softmax(teacher_logits / temperature, dim)
    return (log_p.exp() * (log_p - F.log_softmax(student_logits / temperature, dim))).sum(dim)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-6)


def yolo_fastest_v2_distillation(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                                 temperature: float) -> dict[str, torch.Tensor]:
    box = obj = cls = student[0].new_zeros(())
    t2 = temperature ** 2
    for level in range(len(student) // 3):
        s_reg, s_obj, s_cls = student[3 * level: 3 * level + 3]
        t_reg, t_obj, t_cls = teacher[3 * level: 3 * level + 3]
        b, a, h, w = t_obj.shape
        c = t_cls.shape[1]
        objectness = torch.sigmoid(t_obj)  # (B, A, H, W)
        obj = obj + binary_kl(s_obj, t_obj, temperature).mean() * t2 * LEVEL_BALANCE[level]
        cls = cls + _weighted_mean(softmax_kl(s_cls, t_cls, temperature, 1), objectness.amax(1)) * t2 / c
        squared = (torch.sigmoid(s_reg) - torch.sigmoid(t_reg)).pow(2).view(b, a, 4, h, w).sum(2)
        box = box + _weighted_mean(squared, objectness)
    return {"kd_box": BOX_GAIN * box, "kd_obj": OBJ_GAIN * obj, "kd_cls": CLS_GAIN * cls}


def nanodet_distillation(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], temperature: float,
                         reg_max: int) -> dict[str, torch.Tensor]:
    cls = box = student[0].new_zeros(())
    bins = 4 * (reg_max + 1)
    t2 = temperature ** 2
    for s, t in zip(student, teacher):
        num_classes = t.shape[1] - bins
        s_cls, s_reg = s.split([num_classes, bins], 1)
        t_cls, t_reg = t.split([num_classes, bins], 1)
        cls = cls + binary_kl(s_cls, t_cls, temperature).sum(1).mean() * t2
        b, _, h, w = t.shape
        side_kl = softmax_kl(s_reg.reshape(b, 4, reg_max + 1, h, w), t_reg.reshape(b, 4, reg_max + 1, h, w),
                             temperature, 2).sum(1)  # (B, H, W)
        box = box + _weighted_mean(side_kl, torch.sigmoid(t_cls).amax(1)) * t2
    levels = len(student)
    return {"kd_cls": cls / levels, "kd_box": box / levels}
