"""Structured channel pruning with torch-pruning's dependency graph, and an unstructured size report.

Structured pruning removes whole channels: every layer coupled to a removed channel (the producing
conv, its BatchNorm, depthwise convs, concatenations, residual adds, the consumers' input channels)
shrinks with it, so the pruned model is a smaller dense model that any backend runs faster.

What stays: the output convs of the heads (the decoder reads their channel layout), and the
channels that cross a ShuffleNetV2 block boundary (block inputs / outputs: they go through the
split, concat and channel shuffle, which torch-pruning's index mapping does not follow). Inside each
block the main branch's mid channels are pruned; necks (LightFPN, GhostPAN) and heads are pruned
throughout. The channels removed per layer are recorded, so a test can check that the pruned
model equals the original with exactly those channels zeroed.

Methods: ``l1`` (L1 norm of each filter of the group's first layer, Li et al.), ``group`` (L2 norm
over all coupled layers of the group, DepGraph's group importance, without its sparse-training
phase), ``taylor`` (|weight x gradient| of the task loss summed over a few batches; families with
a task loss only).
"""

from __future__ import annotations

import copy
import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping

from ..models import get_spec
from .data import TrainingData, augmented_batch
from .families import FAMILY_HOOKS, families_with_task_loss
from .train import batch_order, task_loss

METHODS = ("l1", "taylor", "group")


@dataclass
class PruneSummary:
    method: str
    ratio: float
    params_before: int
    params_after: int
    channels: dict[str, tuple[int, int]]  # conv name -> (output channels before, after), changed ones only
    removed: dict[str, list[int]] = field(repr=False)  # Conv2d / BatchNorm2d name -> output channels removed

    def history_entry(self) -> dict[str, Any]:
        """What a compressed checkpoint's history keeps (plain types, no index lists)."""
        return {"step": "prune", "method": self.method, "ratio": self.ratio, "params_before": self.params_before,
                "params_after": self.params_after,
                "channels": {k: [before, after] for k, (before, after) in self.channels.items()}}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_layers(model: nn.Module, model_name: str) -> list[nn.Module]:
    """The convs whose outputs the decoder reads: never pruned."""
    family = get_spec(model_name).family
    if family not in FAMILY_HOOKS:
        raise ValueError(f"{model_name}: channel pruning supports the {' and '.join(FAMILY_HOOKS)} families, "
                         f"not {family}")
    return FAMILY_HOOKS[family].output_layers(model)


def shuffle_boundary_convs(model: nn.Module) -> list[nn.Module]:
    """Convs of ShuffleNetV2 blocks (``branch2`` in NanoDet's, ``branch_main`` in YOLO-FastestV2's) whose
    channels cross the block boundary: all but the main branch's first 1x1 and its depthwise conv."""
    kept = []
    for block in model.modules():
        main = getattr(block, "branch2", None) or getattr(block, "branch_main", None)
        if not isinstance(main, nn.Sequential):
            continue
        inner = [m for m in main if isinstance(m, nn.Conv2d)][:-1]
        kept += [m for m in block.modules() if isinstance(m, nn.Conv2d) and all(m is not c for c in inner)]
    return kept


@contextmanager
def _without_reshape_mapping() -> Iterator[None]:
    """torch-pruning maps indices through a reshape only for flatten -> Linear, which these detectors do
    not have; it misreads a channel shuffle's view (ZeroDivisionError on NanoDet's). The channels that
    pass a shuffle are kept anyway (``shuffle_boundary_convs``), so the mapping is switched off."""
    original = index_mapping.update_reshape_index_mapping
    index_mapping.update_reshape_index_mapping = lambda graph, node: None
    try:
        yield
    finally:
        index_mapping.update_reshape_index_mapping = original


def _importance(method: str) -> tp.importance.Importance:
    if method == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="first", normalizer=None)
    if method == "group":
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")
    if method == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ValueError(f"unknown pruning method {method!r}; choose one of: {', '.join(METHODS)}")


def _accumulate_task_gradients(model: nn.Module, model_name: str, data: TrainingData, batches: int, batch: int,
                               seed: int) -> None:
    """Sum the task loss's gradients over ``batches`` seeded batches (BatchNorm statistics untouched)."""
    loss_fn = task_loss(model_name)
    if loss_fn is None:
        raise ValueError(f"{model_name}: 'taylor' pruning needs a task loss, which the project has only for the "
                         f"{' and '.join(families_with_task_loss())} family; use 'l1' or 'group'")
    rng = np.random.default_rng(seed)
    model.eval().zero_grad(set_to_none=True)
    for ids in batch_order(len(data.images), batches, batch, rng):
        x, targets = augmented_batch(data, ids, rng)
        loss_fn(model(x), targets)[0].backward()


def prune_channels(model: nn.Module, model_name: str, ratio: float, method: str = "l1",
                   data: TrainingData | None = None, imgsz: int | None = None, round_to: int | None = 8,
                   taylor_batches: int = 4, batch: int = 16, seed: int = 0) -> tuple[nn.Module, PruneSummary]:
    """A copy of ``model`` with ``ratio`` of the channels of every prunable group removed, and a summary.

    ``data``: training batches for ``taylor``'s gradients. ``round_to``: keep channel counts multiples of
    this (None: exactly ``ratio``). It matters: the demo model pruned 30% to 67/50/33/16 channels ran
    1.5x *slower* on ONNX Runtime than unpruned (its blocked NCHWc kernels want multiples of 8), and
    0.7-0.8x with 64/48/32/16. ``imgsz``: the tracing input (default: the model's).
    """
    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio must lie in (0, 1), got {ratio}")
    importance = _importance(method)
    pruned = copy.deepcopy(model).eval()
    before = {name: m.out_channels for name, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    params_before = parameter_count(pruned)
    if method == "taylor":
        if data is None:
            raise ValueError("'taylor' pruning needs training data for its gradients")
        _accumulate_task_gradients(pruned, model_name, data, taylor_batches, batch, seed)
    imgsz = imgsz or get_spec(model_name).default_imgsz
    example = torch.zeros(1, 3, imgsz, imgsz)
    names = {m: name for name, m in pruned.named_modules()}
    removed: dict[str, list[int]] = {}
    with _without_reshape_mapping(), torch.enable_grad():  # the graph is traced through autograd
        pruner = tp.pruner.MetaPruner(pruned, example, importance, pruning_ratio=ratio, round_to=round_to,
                                      ignored_layers=output_layers(pruned, model_name) + shuffle_boundary_convs(pruned))
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                target = dep.target.module
                if isinstance(target, (nn.Conv2d, nn.BatchNorm2d)) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                    removed.setdefault(names[target], []).extend(int(i) for i in idxs)
            group.prune()
    pruned.zero_grad(set_to_none=True)
    channels = {name: (before[name], m.out_channels) for name, m in pruned.named_modules()
                if isinstance(m, nn.Conv2d) and m.out_channels != before[name]}
    return pruned, PruneSummary(method, ratio, params_before, parameter_count(pruned), channels, removed)


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the model's float32 weights: raw, gzip-compressed and ``np.savez_compressed``."""
    arrays = {k: v.detach().float().numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    raw = b"".join(a.tobytes() for a in arrays.values())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return {"raw": len(raw), "gzip": len(gzip.compress(raw, 9)), "npz": buffer.getbuffer().nbytes}


def sparsify_magnitude(model: nn.Module, sparsity: float) -> tuple[nn.Module, dict[str, Any]]:
    """Unstructured magnitude pruning, for size only: a copy of ``model`` with the smallest ``sparsity``
    of each conv / linear weight set to zero, and a report of zeros and compressed sizes.

    The zeros stay in dense tensors: ONNX Runtime, OpenVINO and TFLite still multiply by them, so the
    model is not faster (and its MACs are unchanged); only a compressed file (gzip, npz) gets smaller.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    sparse = copy.deepcopy(model).eval()
    pruned_weights = 0
    with torch.no_grad():
        for module in sparse.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                weight = module.weight
                count = int(sparsity * weight.numel())
                if count:
                    threshold = weight.abs().flatten().kthvalue(count).values
                    weight[weight.abs() <= threshold] = 0
                pruned_weights += weight.numel()
    floats = [v for v in sparse.state_dict().values() if v.dtype.is_floating_point]
    zeros = sum(int((v == 0).sum()) for v in floats)
    total = sum(v.numel() for v in floats)
    return sparse, {"sparsity": sparsity, "prunable_weights": pruned_weights, "weights": total,
                    "zero_fraction": zeros / total, "bytes_dense": weight_bytes(model), "bytes_sparse": weight_bytes(sparse),
                    "note": "zeros in dense tensors: no backend here runs them faster; only compressed storage shrinks"}
