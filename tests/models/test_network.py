import pytest
import torch

from fasterseg.arch import Arch
from fasterseg.errors import UserError
from fasterseg.models import FasterSegNet, create_model, list_models
from fasterseg.utils.complexity import count_complexity


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_small(name):
    model = create_model(name, num_classes=7).train()
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 3
    assert all(o.shape == (2, 7, 64, 96) for o in out)
    sum(o.mean() for o in out).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7, 64, 96) and torch.isfinite(y).all()


def test_branch_sharing_cells_are_one_module():
    model = create_model("fasterseg_student")
    b0, b1 = model.branch_cells(0), model.branch_cells(1)
    assert all(b0[i] is b1[i] for i in range(3))
    assert all(b0[i] is not b1[i] for i in range(3, len(b1)))
    assert len(model.cells) == 10 + 9 - 3


def test_shared_cells_computed_once():
    model = create_model("fasterseg_student").eval()
    calls = []
    model.cells[0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert len(calls) == 1


@pytest.mark.parametrize("size,needle", [((100, 64), "height 100 (nearest valid: 96 or 128)"),
                                         ((64, 20), "width 20 (nearest valid: 64)"),
                                         ((32, 32), "too small: height 32 (nearest valid: 64)")])
def test_size_not_divisible_by_32(size, needle):
    model = create_model("fasterseg_student").eval()
    with pytest.raises(UserError) as e:
        model(torch.randn(1, 3, *size))
    assert needle in str(e.value)


def test_published_student_matches_paper_complexity():
    model = create_model("fasterseg_student")
    c = count_complexity(model, (1024, 2048))
    assert abs(c["params_total"] / 4.4e6 - 1) < 0.02  # paper: 4.4 M incl. auxiliary heads
    assert abs(c["macs"] / 28.2e9 - 1) < 0.02  # paper: 28.2 G "FLOPs" (MACs)
    assert c["params_inference"] < c["params_total"]


def test_single_branch_arch_without_aux_32():
    arch = Arch.from_dict({
        "schema": "fasterseg.arch/1", "name": "b1", "num_classes": 3, "stem_ratio": 4,
        "head_ratio": 4, "branches": [{"output_rate": 16, "cells": [
            {"op": "skip", "rate": 8, "stride": 2, "ratio": 4},
            {"op": "conv", "rate": 16, "stride": 1, "ratio": 4}]}]})
    model = FasterSegNet(arch).train()
    out = model(torch.randn(1, 3, 64, 64))
    assert len(out) == 2  # main + 1/16 aux only


def test_kaiming_init():
    model = create_model("fasterseg_student")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    w = model.cells[5].conv1.weight
    expected = (2.0 / (w.shape[1] * 9)) ** 0.5
    assert abs(w.std().item() / expected - 1) < 0.1


def test_predict_returns_labels():
    model = create_model("fasterseg_student", num_classes=4)
    y = model.predict(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 64, 64) and y.max() < 4 and model.training
