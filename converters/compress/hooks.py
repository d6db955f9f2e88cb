"""Running a model once with recording hooks attached (BN pairing, layer inputs, QAT ranges)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def run_with_hooks(model: nn.Module, batches: Iterable[torch.Tensor], handles: list[RemovableHandle]) -> None:
    """Run ``model`` on each batch without gradients, then remove ``handles`` (also on an error)."""
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
