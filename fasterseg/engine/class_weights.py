"""Class weights from the training labels, for the thin, rare classes of street scenes.

CamVid's poles, signs, pedestrians and bicyclists cover about 1 % of the pixels each; with an
unweighted loss a short schedule leaves them near 0 IoU. ``median_freq`` (SegNet's median
frequency balancing) weights class c by median(f) / f_c; ``sqrt_inv_freq`` is the gentler
sqrt(median(f) / f_c). Both are clipped to ``max_weight`` so a class that is almost absent
cannot dominate the loss.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)

ClassWeighting = Literal["none", "median_freq", "sqrt_inv_freq"]


def label_frequencies(dataset, num_classes: int) -> np.ndarray:
    """Pixel share of each class over the whole split (ignore pixels excluded)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for i in range(len(dataset)):
        load_label = getattr(dataset, "load_label", None)
        label = load_label(i) if load_label else dataset.load(i)[1]
        counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    total = counts.sum()
    return counts / total if total > 0 else counts


def class_weights(freq: np.ndarray, method: ClassWeighting,
                  max_weight: float = 10.0) -> torch.Tensor | None:
    """Weights (mean 1 over present classes) for ``method``; None for ``none``."""
    if method == "none":
        return None
    present = freq > 0
    if not present.any():
        return None
    med = float(np.median(freq[present]))
    w = np.ones_like(freq)
    w[present] = med / freq[present]
    if method == "sqrt_inv_freq":
        w[present] = np.sqrt(w[present])
    w = np.clip(w, 1.0 / max_weight, max_weight)
    w[~present] = 1.0
    w = w / w[present].mean()
    return torch.tensor(w, dtype=torch.float32)
