"""The one-pass OHEM loss against the plain autograd formulation it replaced: same loss, same
gradient, for both memory formats, class weights, every min_kept branch and extreme logits."""

import pytest
import torch

from fasterseg.engine.losses import OhemCrossEntropy, ohem_reference


def reference_ohem(logits, labels, thresh, min_kept_ratio, class_weight=None):
    return ohem_reference(logits, labels, thresh, min_kept_ratio, 255, class_weight)


def _case(seed, channels_last, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 7, 12, 16, generator=g) * scale
    labels = torch.randint(0, 7, (2, 12, 16), generator=g)
    labels[:, :3] = 255
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    return logits, labels


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("ratio", [0.0, 1 / 16, 0.5, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_ohem_matches_reference(channels_last, ratio, weighted):
    logits, labels = _case(0, channels_last)
    cw = torch.linspace(0.5, 3.0, 7) if weighted else None
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = OhemCrossEntropy(0.7, ratio, 255, cw)(a, labels)
    want = reference_ohem(b, labels, 0.7, ratio, class_weight=cw)
    got.backward()
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-7, rtol=1e-4)
    assert a.grad.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_fused_ohem_exact_for_underflowing_probabilities():
    # true-class logit 120 below the others: its softmax probability underflows to 0 in fp32
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 120.0
    labels = torch.full((1, 2, 2), 1)
    a = logits.clone().requires_grad_(True)
    loss = OhemCrossEntropy(0.7, 0.0)(a, labels)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(120.0, rel=1e-5)
    loss.backward()
    assert torch.isfinite(a.grad).all()


def test_fused_ohem_bf16_logits_get_bf16_gradient():
    logits, labels = _case(1, True)
    a = logits.to(torch.bfloat16).requires_grad_(True)
    loss = OhemCrossEntropy(0.7, 1 / 16)(a, labels)
    loss.backward()
    assert loss.dtype == torch.float32 and a.grad.dtype == torch.bfloat16
    want = reference_ohem(a.detach().float(), labels, 0.7, 1 / 16)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_fused_ohem_nan_logits_give_nan_loss():
    # the trainer stops on a non-finite loss: NaN logits must not turn into a finite 0
    logits, labels = _case(2, True)
    logits[0, :, 0, 0] = float("nan")
    assert torch.isnan(OhemCrossEntropy(0.7, 1 / 16)(logits, labels))
