"""Fold BatchNorm into the preceding convolution for inference (and export).

In eval mode ``BN(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(var + eps)`` and
``b' = (b - mean) * g / sqrt(var + eps) + beta``. Every BN in a FasterSeg network directly follows
a conv (possibly with a bilinear resize after it, which is linear and commutes with a per-channel
affine map), so folding is exact up to rounding. The BN is replaced by ``nn.Identity`` and the
conv gains a bias; the modules' ``forward`` code is unchanged.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

logger = logging.getLogger(__name__)

# (conv attribute, bn attribute) pairs used by ConvNorm and the five operators.
_PAIRS = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"))


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d, lo: int = 0, hi: int | None = None) -> None:
    """Fold channels ``lo:hi`` of ``bn`` into ``conv`` (all of them by default)."""
    hi = bn.num_features if hi is None else hi
    w, b = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean[lo:hi], bn.running_var[lo:hi], bn.eps,
        None if bn.weight is None else bn.weight[lo:hi],
        None if bn.bias is None else bn.bias[lo:hi],
    )
    conv.weight = w
    conv.bias = b


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a copy unless ``inplace``) in eval mode with every Conv-BN pair folded.

    Raises ``ValueError`` if a BatchNorm could not be folded (an unknown module layout), so a
    "fused" benchmark never silently runs unfused layers.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in model.modules():
        for c_name, b_name in _PAIRS:
            conv, bn = getattr(module, c_name, None), getattr(module, b_name, None)
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d:
                _fold(conv, bn)
                setattr(module, b_name, nn.Identity())
        # Stride-2 skip (factorized reduce): two half-width convs concatenated, then one BN.
        conv_a, conv_b, bn = (getattr(module, n, None) for n in ("conv_a", "conv_b", "bn"))
        pair = isinstance(conv_a, nn.Conv2d) and isinstance(conv_b, nn.Conv2d)
        if pair and type(bn) is nn.BatchNorm2d:
            half = conv_a.out_channels
            _fold(conv_a, bn, 0, half)
            _fold(conv_b, bn, half, 2 * half)
            module.bn = nn.Identity()
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # The auxiliary heads of a training-mode net are folded too; anything else left is an error.
    if left:
        raise ValueError(f"could not fold {len(left)} BatchNorm layers, e.g. {left[0]}")
    return model
