"""OHEM cross-entropy against hand computations, all-ignore batches, KD sign/zero, aux weighting."""

import math

import pytest
import torch
import torch.nn.functional as F

from fasterseg.engine.losses import OhemCrossEntropy, SegLoss, kd_loss

# One image, 2 classes, 1x4 pixels. True-class probabilities:
#   px0 label 0, logits (2, 0): sigmoid(2) = 0.881 (easy)
#   px1 label 0, logits (0, 0): 0.5               (hard)
#   px2 label 1, logits (0, 1): sigmoid(1) = 0.731 (easy, just above 0.7)
#   px3 ignored
LOGITS = torch.tensor([[[[2.0, 0.0, 0.0, 5.0]], [[0.0, 0.0, 1.0, -5.0]]]])
LABELS = torch.tensor([[[0, 0, 1, 255]]])
P = [1 / (1 + math.exp(-2)), 0.5, 1 / (1 + math.exp(-1))]


def test_ohem_keeps_only_pixels_below_threshold():
    # min_kept = int(0.25 * 4) = 1: the 0.7 threshold applies -> only px1 is kept
    loss = OhemCrossEntropy(thresh=0.7, min_kept_ratio=0.25)(LOGITS, LABELS)
    assert loss.item() == pytest.approx(-math.log(0.5), rel=1e-6)


def test_ohem_min_kept_raises_threshold():
    # min_kept = 3 = all valid pixels: threshold rises to the 3rd smallest prob (0.881) -> all kept
    loss = OhemCrossEntropy(thresh=0.7, min_kept_ratio=0.75)(LOGITS, LABELS)
    expected = sum(-math.log(p) for p in P) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(F.cross_entropy(LOGITS, LABELS, ignore_index=255).item(), rel=1e-6)


def test_ohem_min_kept_two_of_three():
    # min_kept = int(0.5 * 4) = 2: 2nd smallest prob is 0.731 > 0.7 -> px1 and px2 kept
    loss = OhemCrossEntropy(thresh=0.7, min_kept_ratio=0.5)(LOGITS, LABELS)
    assert loss.item() == pytest.approx((-math.log(P[1]) - math.log(P[2])) / 2, rel=1e-6)


def test_ohem_fewer_valid_than_min_kept_uses_all_valid():
    loss = OhemCrossEntropy(thresh=0.7, min_kept_ratio=1.0)(LOGITS, LABELS)  # min_kept 4 > 3 valid
    assert loss.item() == pytest.approx(sum(-math.log(p) for p in P) / 3, rel=1e-6)


def test_ohem_all_ignore_is_zero_with_grad():
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    labels = torch.full((2, 8, 8), 255)
    loss = OhemCrossEntropy()(logits, labels)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_ohem_gradient_flows_only_through_kept_pixels():
    logits = LOGITS.clone().requires_grad_(True)
    OhemCrossEntropy(thresh=0.7, min_kept_ratio=0.25)(logits, LABELS).backward()
    g = logits.grad[0, :, 0]  # [C, W]
    assert torch.count_nonzero(g[:, 1]) == 2  # px1 kept
    assert torch.count_nonzero(g[:, [0, 2, 3]]) == 0


def test_ohem_rejects_size_mismatch():
    with pytest.raises(ValueError, match="resize"):
        OhemCrossEntropy()(torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long))


@pytest.mark.filterwarnings("ignore:reduction")
def test_kd_zero_for_identical_and_positive_otherwise():
    s = torch.randn(2, 7, 6, 6)
    assert kd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(2, 7, 6, 6)
    pix = kd_loss(s, t, "pixel")
    assert pix.item() > 0
    assert kd_loss(s, t, "official").item() == pytest.approx(pix.item() / 7, rel=1e-5)
    # equals torch's KLDivLoss: 'mean' over all elements is the official reduction
    ref = F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="mean")
    assert kd_loss(s, t, "official").item() == pytest.approx(ref.item(), rel=1e-5)


def test_kd_gradient_only_to_student():
    s = torch.randn(1, 4, 3, 3, requires_grad=True)
    t = torch.randn(1, 4, 3, 3, requires_grad=True)
    kd_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_seg_loss_weights_aux_heads():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8))
    main, aux1, aux2 = (torch.randn(2, 3, 8, 8) for _ in range(3))
    ohem = OhemCrossEntropy(min_kept_ratio=1.0)  # all pixels: plain CE
    total, parts = SegLoss(ohem, aux_weight=0.2)((main, aux1, aux2), labels)
    expected = ohem(main, labels) + 0.2 * (ohem(aux1, labels) + ohem(aux2, labels))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"main", "aux1", "aux2"}
