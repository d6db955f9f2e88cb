"""Load official checkpoints into our torch models, strictly and without unpickling code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_runtime.errors import CheckpointError, first_line

from .compress.compressed_checkpoint import META_KEY, rebuild
from .models import ModelSpec

# Training-only branches of NanoDet-Plus; the official loader drops them too.
_TRAINING_ONLY_PREFIXES = ("aux_fpn.", "aux_head.")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a checkpoint's weights: a plain state_dict (.pth) or a NanoDet/Lightning ``.ckpt``,
    plus the structure notes of a compressed checkpoint (``converters.compress.compressed_checkpoint``), else None.

    ``weights_only=True`` refuses pickled code, so an untrusted file cannot run anything.
    NanoDet's EMA weights (``avg_model.``) win over ``model.``, as in NanoDet's own loader.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler fails in many ways on non-checkpoints
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({first_line(exc, 160)})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    meta = obj.get(META_KEY) if isinstance(obj, dict) and state is not obj else None
    if meta is not None and not (isinstance(meta, dict) and isinstance(meta.get("model"), str)
                                 and isinstance(meta.get("num_classes"), int)):
        raise CheckpointError(f"{path}: its '{META_KEY}' entry lacks the model name or class count")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors (or {{'state_dict': ...}})")
    ema = {k[len("avg_model."):]: v for k, v in state.items() if k.startswith("avg_model.")}
    if ema:
        state = ema
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(_TRAINING_ONLY_PREFIXES)}, meta


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of :func:`read_checkpoint`, without structure notes."""
    return read_checkpoint(path)[0]


def load_model(spec: ModelSpec, weights: str | Path) -> tuple[nn.Module, int]:
    """Build ``spec``'s model with the class count found in ``weights`` and load them strictly.

    Returns the model in eval mode and its class count. Any missing or unexpected key is an error.
    Specs with their own loader (darknet: architecture from the .cfg beside the .weights) use it.
    A compressed checkpoint (pruned, factorised) is first rebuilt to its own shapes.
    """
    model, num_classes, _ = load_checkpoint(spec, weights)
    return model, num_classes


def load_checkpoint(spec: ModelSpec, weights: str | Path) -> tuple[nn.Module, int, dict[str, Any] | None]:
    """:func:`load_model` plus the checkpoint's compression notes (None for an ordinary checkpoint)."""
    if spec.load is not None:
        return (*spec.load(Path(weights)), None)
    state, meta = read_checkpoint(weights)
    if meta is not None:
        if meta["model"] != spec.name:
            raise CheckpointError(f"{weights}: is a compressed {meta['model']}, not {spec.name} (use --model "
                                  f"{meta['model']})")
        num_classes = meta["num_classes"]
        model = rebuild(spec.build(num_classes), state, meta)
    else:
        try:
            num_classes = spec.num_classes_from(state)
        except KeyError:
            raise CheckpointError(f"{weights}: does not look like a {spec.name} checkpoint "
                                  f"(no classifier weights found)") from None
        model = spec.build(num_classes)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shape mismatches
        detail = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{weights}: does not match {spec.name}: {detail[:200]}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (e.g. {', '.join(result.missing_keys[:3])})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. {', '.join(result.unexpected_keys[:3])})")
    if problems:
        raise CheckpointError(f"{weights}: does not match {spec.name}: " + "; ".join(problems))
    return model.eval(), num_classes, meta
