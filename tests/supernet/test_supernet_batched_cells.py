"""Cells batch their two candidate inputs through each operator: same losses, gradients and
BatchNorm running statistics as the one-call-per-input execution (in float64: this tiny net has
BatchNorms over a handful of pixels, which amplify float32 summation-order noise)."""

import copy

import pytest
import torch

from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.search_space.slimmable import SlimBatchNorm2d, bn_groups
from fasterseg.supernet import Supernet
from fasterseg.supernet.cells import Cell

SPACE = SearchSpaceConfig(num_layers=4, ratios=[4, 8], teacher_stem_ratio=8, teacher_head_ratio=8)


def _run(net: Supernet, batched: bool, monkeypatch) -> tuple[list[float], dict, dict]:
    monkeypatch.setattr(Cell, "batch_inputs", batched)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 128, dtype=torch.float64)
    losses = []
    for arch, mode in (("teacher", "max"), ("student", "gumbel"), ("student", "min")):
        out = net(x, arch, mode)
        loss = sum((v**2).mean() for v in out.values())
        loss.backward()
        losses.append(float(loss.detach()))
    grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    bufs = {k: b.clone() for k, b in net.named_buffers()}
    return losses, grads, bufs


def test_batched_cells_match_the_per_input_execution(monkeypatch):
    torch.manual_seed(0)
    net = Supernet(SPACE, num_classes=5).double().train()
    ref_net = copy.deepcopy(net)
    losses, grads, bufs = _run(net, True, monkeypatch)
    ref_losses, ref_grads, ref_bufs = _run(ref_net, False, monkeypatch)
    assert losses == pytest.approx(ref_losses, rel=1e-9)
    assert grads.keys() == ref_grads.keys() and len(grads) > 100
    for k, g in ref_grads.items():
        torch.testing.assert_close(grads[k], g, rtol=1e-7, atol=1e-9, msg=k)
    for k, b in ref_bufs.items():
        torch.testing.assert_close(bufs[k], b, rtol=1e-9, atol=1e-12, msg=k)


def test_bn_groups_normalizes_each_chunk_on_its_own():
    bn = SlimBatchNorm2d([3]).train()
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4) * 5 + 2
    ref = copy.deepcopy(bn)
    expected = torch.cat([ref(a), ref(b)])
    with bn_groups(2):
        got = bn(torch.cat([a, b]))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(bn.bn[0].running_mean, ref.bn[0].running_mean)
    torch.testing.assert_close(bn.bn[0].running_var, ref.bn[0].running_var)
    assert not torch.allclose(bn(torch.cat([a, b])), expected)  # outside the context: one batch
