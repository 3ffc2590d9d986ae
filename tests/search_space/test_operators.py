import pytest
import torch
import torch.nn.functional as F

from fasterseg.search_space import OPERATORS, build_operator
from fasterseg.search_space.slimmable import SlimBatchNorm2d


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _bn(bn, x):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise_bn(op):
    for m in op.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("stride", [1, 2])
def test_shapes(name, stride):
    op = build_operator(name, 16, 32, stride)
    y = op(torch.randn(2, 16, 32, 48))
    assert y.shape == (2, 32, 32 // stride, 48 // stride)
    assert (y >= 0).all(), "every operator ends with a ReLU"


@pytest.mark.parametrize("stride", [1, 2])
def test_zoomed_conv_equals_composition(stride):
    op = build_operator("zoomed_conv", 8, 12, stride).eval()
    _randomise_bn(op)
    x = torch.randn(2, 8, 16, 24)
    y = _up(x, (8, 12))
    y = F.conv2d(y, op.conv.weight, None, 1, 1)
    y = _bn(op.bn, y)
    if stride == 1:
        y = _up(y, (16, 24))  # the ReLU comes after the upsample
    assert torch.allclose(op(x), F.relu(y), atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_zoomed_conv_x2_equals_composition(stride):
    op = build_operator("zoomed_conv_x2", 8, 12, stride).eval()
    _randomise_bn(op)
    x = torch.randn(1, 8, 16, 16)
    y = _up(x, (8, 8))
    y = F.relu(_bn(op.bn1, F.conv2d(y, op.conv1.weight, None, 1, 1)))
    y = _bn(op.bn2, F.conv2d(y, op.conv2.weight, None, 1, 1))
    if stride == 1:
        y = _up(y, (16, 16))
    assert torch.allclose(op(x), F.relu(y), atol=1e-6)


def test_conv_x2_stride_on_first_conv_only():
    op = build_operator("conv_x2", 4, 8, 2)
    assert op.conv1.stride == (2, 2) and op.conv2.stride == (1, 1)
    op = build_operator("conv", 4, 8, 2)
    assert op.conv.stride == (2, 2) and op.conv.kernel_size == (3, 3) and op.conv.bias is None


def test_no_residual_in_conv():
    op = build_operator("conv", 8, 8, 1).eval()
    torch.nn.init.zeros_(op.conv.weight)
    x = torch.randn(1, 8, 8, 8)
    # with zero weights a residual would pass x through; FasterSeg operators do not add one
    assert torch.allclose(op(x), F.relu(op.bn.bias.view(1, -1, 1, 1).expand_as(x)), atol=1e-5)


def test_factorized_reduce():
    op = build_operator("skip", 4, 8, 2).eval()
    _randomise_bn(op)
    x = torch.randn(1, 4, 8, 8)
    a = F.conv2d(x, op.conv_a.weight, stride=2)
    b = F.conv2d(x[:, :, 1:, 1:], op.conv_b.weight, stride=2)
    assert torch.allclose(op(x), F.relu(_bn(op.bn, torch.cat([a, b], 1))), atol=1e-6)


def test_skip_stride1_identity_in_fixed_net_and_conv_in_supernet():
    x = torch.randn(1, 8, 8, 8)
    assert build_operator("skip", 8, 8, 1)(x) is x
    slim = build_operator("skip", 8, 8, 1, out_widths=[4, 8])
    assert hasattr(slim, "conv") and slim(x, 4).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("name", OPERATORS)
def test_sliced_width_uses_leading_channels_and_private_bn(name):
    op = build_operator(name, 16, 32, 1, out_widths=[8, 16, 32]).train()
    x = torch.randn(2, 12, 16, 16)  # input slice follows x
    y = op(x, 16)
    assert y.shape == (2, 16, 16, 16)
    bns = [m for m in op.modules() if isinstance(m, SlimBatchNorm2d)]
    assert bns, "superkernel ops need per-width BatchNorms"
    for bn in bns:
        by_width = dict(zip(bn.widths, bn.bn))
        assert by_width[16].num_batches_tracked.item() == 1
        assert by_width[8].num_batches_tracked.item() == 0
        assert by_width[32].num_batches_tracked.item() == 0


def test_slice_matches_first_channels_of_full_weight():
    op = build_operator("conv", 8, 16, 1, out_widths=[8, 16]).eval()
    x = torch.randn(1, 8, 8, 8)
    y = op.conv(x, 8)
    ref = F.conv2d(x, op.conv.weight[:8], None, 1, 1)
    assert torch.allclose(y, ref)


def test_unknown_operator():
    with pytest.raises(ValueError, match="unknown operator"):
        build_operator("dilated", 4, 4)
