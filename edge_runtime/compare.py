"""How close two sets of model outputs are: worst max-abs-diff and worst cosine over paired outputs.

Used by the converters (every new artifact against FP32 ONNX) and by ``bench`` (its cosine column).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, float]:
    diffs, cosines = [], []
    for ref, got in zip(reference, candidate):
        a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        diffs.append(float(np.abs(a - b).max()))
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return {"max_abs_diff": max(diffs), "cosine": min(cosines)}
