"""Superkernel layers: one widest weight, any narrower width uses its first channels.

This is how the supernet searches expansion ratios without a weight tensor per width
(paper section 3.1.3): a width option ``k`` runs ``weight[:k, :c_in]``. BatchNorm statistics are
not shareable across widths (the mean of 32 channels is not the mean of 96), so every width keeps
a private BatchNorm.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SlimConv2d(nn.Conv2d):
    """A conv whose forward can run at a narrower width.

    The input width follows ``x`` (the previous layer decided it); the output width is the
    ``c_out`` argument (default: all channels). Weight slicing keeps the first channels so that
    every width shares the same leading filters, as in slimmable networks.
    """

    def forward(self, x: torch.Tensor, c_out: int | None = None) -> torch.Tensor:  # type: ignore[override]
        c_in = x.shape[1]
        c_out = self.out_channels if c_out is None else c_out
        if c_in == self.in_channels and c_out == self.out_channels:
            return super().forward(x)
        if c_in > self.in_channels or c_out > self.out_channels:
            raise ValueError(
                f"slice {c_in}->{c_out} exceeds superkernel {self.in_channels}->{self.out_channels}"
            )
        weight = self.weight[:c_out, :c_in]
        bias = None if self.bias is None else self.bias[:c_out]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


_BN_GROUPS: contextvars.ContextVar[int] = contextvars.ContextVar("bn_groups", default=1)


@contextlib.contextmanager
def bn_groups(groups: int) -> Iterator[None]:
    """Treat the batch as ``groups`` equal chunks with their own BatchNorm statistics.

    Lets the supernet push two candidate inputs of one cell through an operator as one batch
    (one conv call, better CPU efficiency) while each chunk is normalized, and updates the
    running statistics, exactly as if it had run alone (chunks in order).
    """
    token = _BN_GROUPS.set(int(groups))
    try:
        yield
    finally:
        _BN_GROUPS.reset(token)


class SlimBatchNorm2d(nn.Module):
    """One private ``BatchNorm2d`` per width option, chosen by the input's channel count."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.widths = sorted(set(int(w) for w in widths))
        self.bn = nn.ModuleList(nn.BatchNorm2d(w) for w in self.widths)
        self._index = {w: i for i, w in enumerate(self.widths)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        try:
            bn = self.bn[self._index[c]]
        except KeyError:
            raise ValueError(f"no BatchNorm for width {c} (widths: {self.widths})") from None
        groups = _BN_GROUPS.get()
        if groups > 1 and bn.training:
            return torch.cat([bn(chunk) for chunk in x.chunk(groups, dim=0)], dim=0)
        return bn(x)


def make_bn(c_out: int, out_widths: Sequence[int] | None = None) -> nn.Module:
    """A plain BatchNorm for fixed-width nets, a per-width BatchNorm for the supernet."""
    if out_widths is None:
        return nn.BatchNorm2d(c_out)
    if max(out_widths) > c_out:
        raise ValueError(f"width options {list(out_widths)} exceed the superkernel width {c_out}")
    return SlimBatchNorm2d(out_widths)
