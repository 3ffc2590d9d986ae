"""The five FasterSeg operators and the fixed blocks (ConvNorm, Head, FeatureFusion).

Semantics follow the authors' code (facts section 2), which the paper describes in words:
- every conv is 3x3, bias-free, followed by BatchNorm then ReLU; there is no residual addition;
- "zoomed" convs run at half resolution (bilinear, ``align_corners=True``); at stride 1 they
  resize back and the ReLU comes after that upsample; at stride 2 the half-size resize *is*
  the stride, so nothing is resized back;
- conv x2 / zoomed conv x2 carry the stride on the first conv only;
- skip at stride 2 is a factorized reduce (two 1x1 stride-2 convs, the second on the input
  shifted by one pixel, concatenated); at stride 1 it is an identity in a fixed-width net and a
  1x1 conv-BN-ReLU when the width can change (supernet superkernels).

Every operator takes an optional ``c_out`` in ``forward`` so the supernet can run it at a sliced
width; ``out_widths`` lists the widths it may be asked for (one private BatchNorm each). The
derived network leaves both at their defaults and gets plain fixed-width layers.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fasterseg.config.search_space import OPERATORS
from fasterseg.search_space.slimmable import SlimConv2d, make_bn

__all__ = [
    "OPERATORS",
    "ConvNorm",
    "FeatureFusion",
    "Head",
    "Operator",
    "build_operator",
    "half_size",
    "init_weights",
    "resize",
]


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (the convention of the whole network)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def half_size(x: torch.Tensor) -> tuple[int, int]:
    return x.shape[-2] // 2, x.shape[-1] // 2


class Operator(nn.Module):
    """Base class: records the signature that latency tables and diagrams key on."""

    name: str = ""

    def __init__(self, c_in: int, c_out: int, stride: int, out_widths: Sequence[int] | None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.out_widths = None if out_widths is None else sorted(set(int(w) for w in out_widths))

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}, stride={self.stride}"


class Skip(Operator):
    """Skip connection: identity, 1x1 projection, or factorized reduce at stride 2."""

    name = "skip"

    def __init__(self, c_in, c_out, stride=1, out_widths=None):
        super().__init__(c_in, c_out, stride, out_widths)
        self.identity = stride == 1 and out_widths is None and c_in == c_out
        if self.identity:
            return
        if stride == 1:
            self.conv = SlimConv2d(c_in, c_out, 1, 1, 0, bias=False)
        else:
            if c_out % 2:
                raise ValueError(f"factorized reduce needs an even c_out, got {c_out}")
            self.conv_a = SlimConv2d(c_in, c_out // 2, 1, 2, 0, bias=False)
            self.conv_b = SlimConv2d(c_in, c_out // 2, 1, 2, 0, bias=False)
        self.bn = make_bn(c_out, out_widths)

    def forward(self, x: torch.Tensor, c_out: int | None = None) -> torch.Tensor:
        if self.identity:
            return x
        if self.stride == 1:
            y = self.conv(x, c_out)
        else:
            half = None if c_out is None else c_out // 2
            y = torch.cat([self.conv_a(x, half), self.conv_b(x[:, :, 1:, 1:], half)], dim=1)
        return F.relu(self.bn(y))


class Conv(Operator):
    """3x3 conv (stride s) -> BN -> ReLU."""

    name = "conv"

    def __init__(self, c_in, c_out, stride=1, out_widths=None):
        super().__init__(c_in, c_out, stride, out_widths)
        self.conv = SlimConv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn = make_bn(c_out, out_widths)

    def forward(self, x: torch.Tensor, c_out: int | None = None) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x, c_out)))


class ConvX2(Operator):
    """Two stacked conv-BN-ReLU; the stride is on the first conv."""

    name = "conv_x2"

    def __init__(self, c_in, c_out, stride=1, out_widths=None):
        super().__init__(c_in, c_out, stride, out_widths)
        self.conv1 = SlimConv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = make_bn(c_out, out_widths)
        self.conv2 = SlimConv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = make_bn(c_out, out_widths)

    def forward(self, x: torch.Tensor, c_out: int | None = None) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x, c_out)))
        return F.relu(self.bn2(self.conv2(x, c_out)))


class ZoomedConv(Operator):
    """Bilinear half-size -> 3x3 conv -> BN -> (bilinear back if stride 1) -> ReLU."""

    name = "zoomed_conv"

    def __init__(self, c_in, c_out, stride=1, out_widths=None):
        super().__init__(c_in, c_out, stride, out_widths)
        self.conv = SlimConv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn = make_bn(c_out, out_widths)

    def forward(self, x: torch.Tensor, c_out: int | None = None) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.bn(self.conv(resize(x, half_size(x)), c_out))
        if self.stride == 1:
            y = resize(y, size)
        return F.relu(y)


class ZoomedConvX2(Operator):
    """Bilinear half-size -> conv-BN-ReLU -> conv-BN -> (bilinear back if stride 1) -> ReLU."""

    name = "zoomed_conv_x2"

    def __init__(self, c_in, c_out, stride=1, out_widths=None):
        super().__init__(c_in, c_out, stride, out_widths)
        self.conv1 = SlimConv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn1 = make_bn(c_out, out_widths)
        self.conv2 = SlimConv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = make_bn(c_out, out_widths)

    def forward(self, x: torch.Tensor, c_out: int | None = None) -> torch.Tensor:
        size = x.shape[-2:]
        y = F.relu(self.bn1(self.conv1(resize(x, half_size(x)), c_out)))
        y = self.bn2(self.conv2(y, c_out))
        if self.stride == 1:
            y = resize(y, size)
        return F.relu(y)


_CLASSES: dict[str, type[Operator]] = {
    cls.name: cls for cls in (Skip, Conv, ZoomedConv, ConvX2, ZoomedConvX2)
}
assert tuple(_CLASSES) == OPERATORS


def build_operator(
    name: str, c_in: int, c_out: int, stride: int = 1, out_widths: Sequence[int] | None = None
) -> Operator:
    """Build operator ``name`` (one of ``OPERATORS``) mapping ``c_in`` -> ``c_out`` channels."""
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; choose from {', '.join(OPERATORS)}") from None
    return cls(c_in, c_out, stride, out_widths)


def init_weights(module: nn.Module) -> None:
    """The authors' init: Kaiming-normal (fan_in, ReLU) convs, zero biases, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvNorm(nn.Module):
    """k x k conv -> BN -> ReLU with 'same' padding (stem, arms and refines of the head)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.c_in, self.c_out, self.kernel, self.stride = c_in, c_out, kernel, stride
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class FeatureFusion(nn.Module):
    """1x1 conv-BN-ReLU over the concatenated branches.

    The authors also build a channel-attention block here that their forward never calls; it is
    left out (it changes the parameter count only, see ``fasterseg info``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.fuse = ConvNorm(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(x)


class Head(nn.Module):
    """Prediction head: 3x3 conv-BN-ReLU (mid = C, halved above 256) -> 1x1 conv with bias."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        super().__init__()
        self.c_in, self.num_classes = c_in, num_classes
        mid = c_in if c_in <= 256 else c_in // 2
        self.conv = ConvNorm(c_in, mid, 3)
        self.classifier = nn.Conv2d(mid, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))
