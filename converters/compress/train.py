"""One training loop for every step that trains: the demo model from scratch, fine-tuning after
pruning, knowledge distillation and quantization-aware training.

The model is any ``nn.Module`` whose ``forward`` gives the family's raw head outputs (a pruned,
factorised or fake-quantised model included); ``model_name`` only picks the losses. The task loss
exists for the YOLO-FastestV2 family (``yolo_fastest_v2_loss``, in ``families.FAMILY_HOOKS``); NanoDet's
(GFL + dynamic soft label assignment) is not in this project, so NanoDet models fine-tune by
distillation alone: the teacher's outputs are the soft targets and the labels go unused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..models import get_spec
from .data import TrainingData, augmented_batch
from .families import LossFn, distillation_loss, family_hooks


def task_loss(model_name: str) -> LossFn | None:
    """``(raw outputs, (T, 6) targets) -> (loss, parts)`` of the model's family; None where the project
    has no task loss for it (NanoDet)."""
    spec = get_spec(model_name)
    hooks = family_hooks(spec.family)
    return hooks.task_loss(spec) if hooks is not None and hooks.task_loss is not None else None


def _reg_max(model_name: str) -> int:
    head = getattr(get_spec(model_name).build(1), "head", None)
    return int(getattr(head, "reg_max", 7))


def batch_order(count: int, steps: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Image ids of each step: seeded passes over the data, each a fresh permutation."""
    order = np.concatenate([rng.permutation(count) for _ in range(math.ceil(steps * batch / count))])
    for step in range(steps):
        yield order[step * batch:(step + 1) * batch]


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over the first 5% of steps, then cosine decay to 2% of the peak."""
    warmup = max(1, steps // 20)
    return lambda s: min(1.0, (s + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def fine_tune(model: nn.Module, model_name: str, data: TrainingData, steps: int, lr: float = 2e-3,
              batch: int = 16, teacher: nn.Module | None = None, distill_weight: float = 1.0,
              temperature: float = 1.0, seed: int = 0, threads: int = 1, ema: bool = True,
              weight_decay: float = 0.01, progress: bool = True) -> dict[str, Any]:
    """Train ``model`` in place for ``steps`` batches; returns a summary (losses, what was optimised).

    Loss = task loss (where the family has one) + ``distill_weight`` x distillation from ``teacher``
    (``converters.compress.distill``, at ``temperature``). NanoDet needs a teacher: distillation is
    its only loss. AdamW with warm-up and cosine decay, gradients clipped at norm 10. ``ema``: the
    model ends with an exponential moving average of its weights (short memory early, when weights
    move fast), which scored better than the last weights when training the demo model.
    ``threads``: torch threads; one is the robust choice on a small shared machine.
    """
    start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    family = get_spec(model_name).family
    task = task_loss(model_name)
    if task is None and teacher is None:
        raise ValueError(f"{model_name}: the project has no task loss for the {family} family, so fine-tuning "
                         f"it needs a teacher (distillation)")
    hooks = family_hooks(family)
    reg_max = _reg_max(model_name) if teacher is not None and hooks is not None and hooks.distill_reads_reg_max else 7
    if teacher is not None:
        teacher.eval()
    model.train()
    average = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    bar = tqdm(batch_order(len(data.images), steps, batch, rng), total=steps, desc="training", unit="step",
               disable=not progress)
    losses: list[float] = []
    parts_sum: dict[str, float] = {}
    for step, ids in enumerate(bar):
        x, targets = augmented_batch(data, ids, rng)
        outputs = model(x)
        loss, parts = task(outputs, targets) if task is not None else (outputs[0].new_zeros(()), {})
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(x)
            kd, kd_parts = distillation_loss(family, outputs, soft, temperature, reg_max)
            loss = loss + distill_weight * kd
            parts = {**parts, **kd_parts}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        if ema:
            decay = 0.999 * (1 - math.exp(-step / 200))
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    average[k].copy_(average[k] * decay + v.detach() * (1 - decay) if v.dtype.is_floating_point else v)
        losses.append(float(loss.detach()))
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + v
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.2f}", **{k: f"{v:.2f}" for k, v in parts.items()})
    if ema:
        model.load_state_dict(average)
    model.eval()
    window = max(1, min(50, steps // 10))
    if task is None:
        objective = f"distillation only (T={temperature:g}); the {family} family has no task loss here, labels unused"
    else:
        objective = "task loss" + (f" + {distill_weight:g} x distillation (T={temperature:g})" if teacher else "")
    return {"steps": steps, "images": len(data.images), "data": data.source, "loss": objective,
            "first_loss": losses[0], "last_loss": float(np.mean(losses[-window:])),
            "mean_parts": {k: v / steps for k, v in parts_sum.items()}, "seconds": time.perf_counter() - start}
