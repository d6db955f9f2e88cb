"""Checkpoints of compressed models: the weights plus what it takes to rebuild their shapes.

Pruning changes channel counts and low-rank factorisation swaps a convolution for a pair, so a
compressed state_dict no longer fits the model its name builds. A compressed checkpoint is a plain
dict that ``torch.load(weights_only=True)`` reads (tensors, str, int, float, lists):

    {"state_dict": {...}, "edge_runtime": {"model": "demo-shapes", "num_classes": 5,
                                           "factorized": {"backbone.conv1.0": {...}},
                                           "history": [{"step": "prune", ...}, ...]}}

Loading builds the named model, replays the factorisations (``converters.compress.factorization``), then resizes
every Conv2d / BatchNorm2d / Linear whose stored weight has other channel counts (pruning), and
loads the weights strictly. No Python code or pickled module travels in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .factorization import apply_factorization

META_KEY = "edge_runtime"


def save_compressed(model: nn.Module, path: str | Path, model_name: str, num_classes: int,
                    factorized: dict[str, dict[str, Any]] | None = None,
                    history: list[dict[str, Any]] | None = None) -> Path:
    """Write ``model``'s weights and the structure notes :func:`rebuild` needs to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": model_name, "num_classes": int(num_classes), "factorized": dict(factorized or {}),
            "history": list(history or [])}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, META_KEY: meta}, path)
    return path


def _resized_conv(conv: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    out_channels, in_per_group = weight.shape[:2]
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    groups = out_channels if depthwise else conv.groups
    return nn.Conv2d(in_per_group * groups, out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, groups, conv.bias is not None, conv.padding_mode)


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Give each Conv2d / BatchNorm2d / Linear of ``model`` the channel counts its weights in
    ``state`` have (a pruned checkpoint); returns how many modules changed.

    A depthwise convolution stays depthwise (groups follow the channel count); other grouped
    convolutions keep their group count.
    """
    changed = 0
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight" if name else "weight")
        if weight is None or not isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        if tuple(weight.shape) == tuple(module.weight.shape):
            continue
        if isinstance(module, nn.Conv2d):
            new: nn.Module = _resized_conv(module, weight)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(weight.shape[0], module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        else:
            new = nn.Linear(weight.shape[1], weight.shape[0], module.bias is not None)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        changed += 1
    return changed


def rebuild(model: nn.Module, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """Turn a freshly built ``model`` into the compressed one ``state`` + ``meta`` describe."""
    if meta.get("factorized"):
        apply_factorization(model, meta["factorized"])
    resize_to_state(model, state)
    return model
