"""Class-balanced OHEM: weights from label frequencies, and the weighted loss itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fasterseg.config.data import DataConfig
from fasterseg.data import build_dataset
from fasterseg.engine.class_weights import class_weights, label_frequencies
from fasterseg.engine.losses import OhemCrossEntropy


def test_rare_classes_get_larger_weights_clipped_and_mean_one():
    freq = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    w = class_weights(freq, "median_freq", max_weight=10.0)
    assert w[3] > w[2] > w[1] > w[0]
    assert w[4] == pytest.approx(float(w[4]))  # absent class: finite
    assert float(w[:4].mean()) == pytest.approx(1.0, rel=1e-5)
    gentle = class_weights(freq, "sqrt_inv_freq")
    assert float(gentle[3] / gentle[0]) < float(w[3] / w[0])
    assert class_weights(freq, "none") is None
    extreme = class_weights(np.array([0.999999, 0.000001]), "median_freq", max_weight=5.0)
    assert float(extreme.max() / extreme.min()) <= 25.0 + 1e-4


def test_weighted_ohem_equals_weighted_cross_entropy_when_all_pixels_kept():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    w = torch.tensor([0.5, 1.0, 2.0])
    loss = OhemCrossEntropy(thresh=1.0, min_kept_ratio=0.0, class_weight=w)(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits, labels, weight=w)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    plain = OhemCrossEntropy(thresh=1.0, min_kept_ratio=0.0)(logits, labels)
    assert float(plain) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)),
                                         rel=1e-5)


def test_label_frequencies_of_generated_scenes_sum_to_one():
    cfg = DataConfig(synthetic_size=(32, 64), synthetic_train=3)
    ds = build_dataset(cfg, "train", train=False)
    freq = label_frequencies(ds, ds.label_set.num_classes)
    assert freq.sum() == pytest.approx(1.0) and (freq >= 0).all()
