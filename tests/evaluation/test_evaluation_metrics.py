"""Metric values on a hand-made confusion matrix."""

import math

import pytest
import torch

from fasterseg.evaluation import ConfusionMatrix, format_table


def _cm_from_pairs(pairs, n=4):
    gt = torch.tensor([g for g, _ in pairs])
    pr = torch.tensor([p for _, p in pairs])
    cm = ConfusionMatrix(n)
    cm.update(pr, gt)
    return cm


def test_confusion_counts_and_metrics_by_hand():
    # class 0: 3 right, 1 predicted as 1; class 1: 2 right; class 2: 1 predicted as 0;
    # class 3: absent everywhere (IoU nan, excluded from the mean); 2 ignored pixels
    pairs = [(0, 0)] * 3 + [(0, 1)] + [(1, 1)] * 2 + [(2, 0)] + [(255, 3), (255, 0)]
    cm = _cm_from_pairs(pairs)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 0] = 3, 1, 2, 1
    assert torch.equal(cm.mat, expected)
    m = cm.compute(["a", "b", "c", "d"])
    # IoU0 = 3 / (4 + 4 - 3) = 0.6; IoU1 = 2 / (2 + 3 - 2) = 2/3; IoU2 = 0 / (1 + 0 - 0) = 0
    assert m["per_class_iou"]["a"] == pytest.approx(0.6)
    assert m["per_class_iou"]["b"] == pytest.approx(2 / 3)
    assert m["per_class_iou"]["c"] == 0.0
    assert math.isnan(m["per_class_iou"]["d"])
    assert m["miou"] == pytest.approx((0.6 + 2 / 3 + 0) / 3)
    assert m["aacc"] == pytest.approx(5 / 7)
    assert m["macc"] == pytest.approx((3 / 4 + 1 + 0) / 3)
    assert m["pixels"] == 7
    table = format_table({**m, "images": 1})
    assert "60.00" in table and "mIoU" in table


def test_update_accepts_logits_and_accumulates():
    cm = ConfusionMatrix(3)
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2] = 1.0  # predicts class 2 everywhere
    target = torch.tensor([[[2, 2], [1, 255]]])
    cm.update(logits, target)
    cm.update(logits, target)
    assert cm.mat[2, 2] == 4 and cm.mat[1, 2] == 2 and cm.mat.sum() == 6
    cm.reset()
    assert cm.mat.sum() == 0


def test_perfect_prediction_is_one():
    t = torch.randint(0, 5, (3, 7, 9))
    cm = ConfusionMatrix(5)
    cm.update(t.clone(), t)
    m = cm.compute()
    assert m["miou"] == pytest.approx(1.0) and m["aacc"] == 1.0 and m["macc"] == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
