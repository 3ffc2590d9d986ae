"""The optional 1/4-resolution detail head (``"detail_channels"`` in the architecture file)."""

from __future__ import annotations

import json

import pytest
import torch

from fasterseg.arch import Arch
from fasterseg.arch.schema import ArchError, published_arch_path
from fasterseg.models import FasterSegNet
from fasterseg.utils.complexity import count_complexity


def _student() -> Arch:
    return Arch.load(published_arch_path("fasterseg_student")).with_num_classes(5)


def test_detail_head_is_off_for_the_paper_networks():
    arch = _student()
    assert arch.detail_channels == 0
    assert FasterSegNet(arch).detail is None
    assert "detail_channels" not in arch.to_json()  # paper files stay byte-identical


def test_detail_head_round_trips_through_the_file():
    arch = _student().with_detail(16)
    again = Arch.from_dict(json.loads(arch.to_json()))
    assert again == arch and again.detail_channels == 16
    assert again.with_num_classes(7).detail_channels == 16


@pytest.mark.parametrize("bad", [-1, 257, 2.5, True, "16"])
def test_detail_channels_out_of_range_is_one_line_error(bad):
    d = _student().to_dict()
    d["detail_channels"] = bad
    with pytest.raises(ArchError, match="detail_channels"):
        Arch.from_dict(d)


def _trains_and_predicts_at(arch: Arch) -> tuple[int, int]:
    """Full-size outputs, gradients reach the detail head; returns the head logits' size."""
    torch.manual_seed(0)
    net = FasterSegNet(arch).train()
    x = torch.randn(2, 3, 64, 96)
    out = net(x)
    assert all(o.shape == (2, 5, 64, 96) for o in out)
    sum(o.mean() for o in out).backward()
    assert all(p.grad is not None for p in net.detail.parameters())
    net.eval()
    with torch.no_grad():
        return tuple(net.head_logits(net.features(x)).shape[-2:])


def test_detail_head_predicts_at_quarter_resolution_and_trains():
    assert _trains_and_predicts_at(_student().with_detail(8)) == (16, 24)  # 1/4, not 1/8


def test_detail_head_changes_the_prediction_and_costs_little():
    torch.manual_seed(0)
    base = FasterSegNet(_student()).eval()
    torch.manual_seed(0)
    detail = FasterSegNet(_student().with_detail(16)).eval()
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        assert not torch.allclose(base(x), detail(x))
    macs0 = count_complexity(base, (128, 160))["macs"]
    macs1 = count_complexity(detail, (128, 160))["macs"]
    assert 1.0 < macs1 / macs0 < 1.05


def test_half_resolution_detail_head_round_trips_and_predicts_at_half():
    arch = _student().with_detail(8, rate=2)
    text = arch.to_json()
    assert '"detail_rate": 2' in text
    assert '"detail_rate"' not in _student().with_detail(8).to_json()  # default 4 not written
    again = Arch.from_dict(json.loads(text))
    assert again == arch and again.detail_rate == 2
    assert again.with_num_classes(7).detail_rate == 2
    assert _trains_and_predicts_at(arch) == (32, 48)  # 1/2 of the input
    from fasterseg.arch.diagram import format_arch

    assert "detail head 8 ch at 1/2" in format_arch(arch).splitlines()[0]
    assert "detail head" not in format_arch(_student())


@pytest.mark.parametrize("bad", [1, 3, 8, True, "2"])
def test_detail_rate_must_be_2_or_4(bad):
    d = _student().with_detail(8).to_dict()
    d["detail_rate"] = bad
    with pytest.raises(ArchError, match="detail_rate"):
        Arch.from_dict(d)


def test_detail_rate_without_a_detail_head_is_refused():
    d = _student().to_dict()
    d["detail_rate"] = 2
    with pytest.raises(ArchError, match="detail_rate needs detail_channels"):
        Arch.from_dict(d)
