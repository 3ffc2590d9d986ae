"""Latency model: discrete latency of a derived network and the relaxed supernet latency (eq. 3).

Discrete: the latency of an ``Arch`` is the sum of the table entries of the blocks one forward
runs (``signature.arch_blocks``), which is what ``latency check`` validates (paper Fig. 3).

Relaxed (paper section 3.2): replace each operator in eqs. 1-2 by its latency. With normalised
alpha (operators), beta (predecessors) and gamma (expansion ratios) of one architecture::

    E[op(l, j)]     = sum_k alpha[j][l-j, k] * sum_{a,b} P_in(a) P_out(b) * LUT[k, j, a, b, stride]
    T_in(l, j)      = beta0 * T_down_out(l-1, j-1) + beta1 * T_keep_out(l-1, j)
    T_keep_out(l,j) = T_in(l, j) + E[keep op (l, j)]
    T_down_out(l,j) = T_in(l, j) + E[down op (l, j)]
    latency         = stem + sum_j T_keep_out(L-1, j)  (+ optionally a fixed decoder)

(first cells at a scale take only the down input, scale 0 only the keep input; P_in is the width
distribution of the feature the cell reads, P_out of the feature it writes). Unrolled, T_keep_out
(L-1, j) is the expected latency of a path to scale j when every cell picks its predecessor with
its beta, so it is exactly a discrete network's cell latency at one-hot parameters. The authors'
accumulation quirks (stale betas from another scale, in-place totals mixing the current layer) are
not reproduced. Decoupled regularisation (eq. 3)::

    w1 * Lat(alpha | beta uniform, widths max) + w2 * Lat(beta | alpha uniform, widths max)
        + w3 * Lat(gamma | alpha uniform, beta uniform)

``naive`` uses one term with all three free (the "architecture collapse" baseline).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from fasterseg.arch.schema import Arch
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError
from fasterseg.latency.signature import (
    Block,
    aggregation_blocks,
    arch_blocks,
    decoder_blocks,
    stem_blocks,
)
from fasterseg.latency.table import LatencyTable

PAPER_WEIGHTS = (0.001, 0.997, 0.0021)  # paper section 3.2
OFFICIAL_WEIGHTS = (0.002, 0.994, 0.004)  # the authors' code: 1/500, 497/500, 2/500
Mode = Literal["decoupled", "naive"]


def _size(table: LatencyTable, size: Sequence[int] | None) -> tuple[int, int]:
    if size is not None:
        return int(size[0]), int(size[1])
    s = table.meta.get("input_size")
    if not s:
        raise UserError("latency table has no input_size in its metadata; pass the size explicitly")
    return int(s[0]), int(s[1])


def latency_breakdown(
    arch: Arch, table: LatencyTable, size: Sequence[int] | None = None
) -> dict[str, float]:
    """Milliseconds per part (``stem``, ``cells``, ``aggregation``, ``decoder``) and ``total``."""
    parts: dict[str, float] = {"stem": 0.0, "cells": 0.0, "aggregation": 0.0, "decoder": 0.0}
    for part, block in arch_blocks(arch, _size(table, size)):
        parts[part] += table[block.key]
    parts["total"] = sum(parts.values())
    return parts


def discrete_latency(arch: Arch, table: LatencyTable, size: Sequence[int] | None = None) -> float:
    """Estimated latency (ms) of a derived network: the sum of its blocks' entries."""
    return latency_breakdown(arch, table, size)["total"]


def decoder_latency(
    table: LatencyTable, head_ratio: int, rates: Sequence[int], skip_ratio: int,
    num_classes: int, size: Sequence[int],
) -> float:
    """Aggregation, fusion and head of branches ending at ``rates`` (skip width ``skip_ratio``)."""
    total = 0.0
    for r in rates:
        skips = {t: t * skip_ratio for t in (8, 16, 32)}
        blocks = aggregation_blocks(r * head_ratio, r, head_ratio, skips, size)
        total += table.total(b.key for b in blocks)
    total += table.total(b.key for b in decoder_blocks(head_ratio, len(rates), num_classes, size))
    return total


class RelaxedLatency(nn.Module):
    """Differentiable expected supernet latency (ms) for one architecture (teacher or student).

    The table is held as tensors ``[|O|, |R|, |R|]`` per scale and stride (R = all ratios incl.
    stem/head), so the result is differentiable in alpha, beta and gamma. Call with NORMALISED
    parameters (softmax / Gumbel sample applied by the caller):

    - ``alphas[j]``: ``[L - j, |O|]`` (row r = layer r + j), columns in ``space.operators`` order;
    - ``betas``: ``[beta_1, beta_2, ...]`` (or with a leading ``None`` for scale 0), ``beta_j``
      ``[L - j - 1, 2]`` (row r = layer r + j + 1; column 0 from down, 1 from keep);
    - ``gammas[j]``: ``[rows, |ratios|]`` with row ``l - max(j - 1, 0)`` = width of the scale-j
      feature output by layer l, or ``None`` (teacher: widest ratio everywhere).
    """

    def __init__(
        self,
        table: LatencyTable,
        space: SearchSpaceConfig,
        size: Sequence[int] | None = None,
        stem_ratio: int | None = None,
        head_ratio: int | None = None,
        head_rates: Sequence[int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.size = _size(table, size)
        self.L = space.num_layers
        self.n_scales = len(space.rates)
        self.ops = list(space.operators)
        self.stem_ratio = space.student_stem_ratio if stem_ratio is None else stem_ratio
        self.head_ratio = space.student_head_ratio if head_ratio is None else head_ratio
        self.ratios = sorted(set(space.ratios) | {self.stem_ratio, self.head_ratio})
        idx = {r: i for i, r in enumerate(self.ratios)}
        self._stem_i, self._head_i = idx[self.stem_ratio], idx[self.head_ratio]
        self._max_i = idx[space.max_ratio]
        # gamma (over space.ratios) -> distribution over self.ratios
        embed = torch.zeros(len(space.ratios), len(self.ratios), dtype=torch.float64)
        for i, r in enumerate(space.ratios):
            embed[i, idx[r]] = 1.0
        self.register_buffer("embed", embed, persistent=False)

        h, w = self.size
        last = self.n_scales - 1
        outs_keep = sorted(set(space.ratios) | {self.head_ratio})
        for j, s in enumerate(space.rates):
            ins = sorted(set(space.ratios) | ({self.stem_ratio} if j == 0 else set()))
            n_r = len(self.ratios)
            keep = torch.zeros(len(self.ops), n_r, n_r, dtype=torch.float64)
            down = torch.zeros_like(keep)
            for k, op in enumerate(self.ops):
                for a in ins:
                    for c in outs_keep:
                        b = Block(op, h // s, w // s, s * a, s * c, 1)
                        keep[k, idx[a], idx[c]] = table[b.key]
                    if j < last:
                        for c in space.ratios:
                            b = Block(op, h // s, w // s, s * a, 2 * s * c, 2)
                            down[k, idx[a], idx[c]] = table[b.key]
            self.register_buffer(f"keep{j}", keep, persistent=False)
            self.register_buffer(f"down{j}", down, persistent=False)
        self.stem_ms = table.total(b.key for b in stem_blocks(self.stem_ratio, self.size))
        self.head_ms = 0.0
        if head_rates:
            ncls = num_classes or int(table.meta.get("num_classes", 19))
            self.head_ms = decoder_latency(
                table, self.head_ratio, head_rates, space.max_ratio, ncls, self.size
            )

    # ------------------------------------------------------------------ distributions
    def _onehot(self, i: int, like: torch.Tensor) -> torch.Tensor:
        v = like.new_zeros(1, len(self.ratios))
        v[0, i] = 1.0
        return v

    def _widths(self, gammas, j: int, like: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        """Width distributions of the scale-j features, one row per producing layer.

        Rows: layers -1 (the stem) .. L-1 for scale 0; layers j-1 .. L-1 for scale j >= 1. The
        last layer always outputs the head ratio.
        """
        rows = self.L - 1 if j == 0 else self.L - j
        if gammas is None:
            inner = self._onehot(self._max_i, like).expand(rows, -1)
        else:
            inner = gammas[j] @ embed
        parts = [inner, self._onehot(self._head_i, like)]
        if j == 0:
            parts.insert(0, self._onehot(self._stem_i, like))
        return torch.cat(parts)

    def _check(self, alphas, betas, gammas) -> list:
        if len(alphas) != self.n_scales:
            raise ValueError(f"expected {self.n_scales} alpha tensors, got {len(alphas)}")
        for j, a in enumerate(alphas):
            if tuple(a.shape) != (self.L - j, len(self.ops)):
                want = [self.L - j, len(self.ops)]
                raise ValueError(f"alpha[{j}] must be {want}, got {list(a.shape)}")
        betas = list(betas)
        if len(betas) == self.n_scales - 1:
            betas = [None, *betas]
        if len(betas) != self.n_scales:
            raise ValueError(f"expected {self.n_scales - 1} beta tensors, got {len(betas)}")
        for j in range(1, self.n_scales):
            if tuple(betas[j].shape) != (self.L - j - 1, 2):
                want = [self.L - j - 1, 2]
                raise ValueError(f"beta[{j}] must be {want}, got {list(betas[j].shape)}")
        if gammas is not None:
            for j, g in enumerate(gammas):
                rows = self.L - 1 if j == 0 else self.L - j
                if tuple(g.shape) != (rows, len(self.space.ratios)):
                    want = [rows, len(self.space.ratios)]
                    raise ValueError(f"gamma[{j}] must be {want}, got {list(g.shape)}")
        return betas

    # ------------------------------------------------------------------ accumulation
    def expected(self, alphas, betas, gammas=None) -> torch.Tensor:
        """One relaxed latency term: stem + sum over scales of the expected path latency."""
        betas = self._check(alphas, betas, gammas)
        like = alphas[0]
        conv = {"device": like.device, "dtype": like.dtype}
        keeps = [getattr(self, f"keep{j}").to(**conv) for j in range(self.n_scales)]
        downs = [getattr(self, f"down{j}").to(**conv) for j in range(self.n_scales)]
        embed = self.embed.to(**conv)
        # Expected op latency of every cell at once: E[l] = sum_k a_k * P_in^T LUT_k P_out.
        w = [self._widths(gammas, j, like, embed) for j in range(self.n_scales)]
        last = self.n_scales - 1
        e_keep, e_down = [], []
        for j in range(self.n_scales):
            n = self.L - j  # cells of scale j: layers j .. L-1
            p_in, p_keep = w[j][:n], w[j][1:n + 1]  # features of layers l-1 and l
            e_keep.append(torch.einsum("rk,ra,kab,rb->r", alphas[j], p_in, keeps[j], p_keep))
            if j < last:  # down ops of layers j .. L-2 write scale j+1 features of layer l
                p_down = w[j + 1][: n - 1]
                e_down.append(
                    torch.einsum("rk,ra,kab,rb->r", alphas[j][:-1], p_in[:-1], downs[j], p_down)
                )
        # Accumulate along paths (a scalar recurrence over layers).
        keep_out: dict[tuple[int, int], torch.Tensor] = {}
        down_out: dict[tuple[int, int], torch.Tensor] = {}
        zero = like.new_zeros(())
        for l in range(self.L):
            for j in range(min(l, last) + 1):
                if l == 0:
                    t_in = zero
                elif j == 0:
                    t_in = keep_out[(l - 1, 0)]
                elif l == j:
                    t_in = down_out[(l - 1, j - 1)]
                else:
                    b = betas[j][l - j - 1]
                    t_in = b[0] * down_out[(l - 1, j - 1)] + b[1] * keep_out[(l - 1, j)]
                keep_out[(l, j)] = t_in + e_keep[j][l - j]
                if j < last and l < self.L - 1:
                    down_out[(l, j)] = t_in + e_down[j][l - j]
        total = sum(keep_out[(self.L - 1, j)] for j in range(self.n_scales))
        return total + self.stem_ms + self.head_ms

    def terms(self, alphas, betas, gammas=None) -> dict[str, torch.Tensor]:
        """The decoupled terms: operator (alpha free), rate (beta free), ratio (gamma free)."""
        ua = [torch.full_like(a, 1.0 / a.shape[1]) for a in alphas]
        ub = [None if b is None else torch.full_like(b, 0.5) for b in betas]
        return {
            "op": self.expected(alphas, ub, None),
            "rate": self.expected(ua, betas, None),
            "ratio": self.expected(ua, ub, gammas),
        }

    def forward(
        self,
        alphas: Sequence[torch.Tensor],
        betas: Sequence[torch.Tensor | None],
        gammas: Sequence[torch.Tensor] | None = None,
        mode: Mode = "decoupled",
        weights: Sequence[float] = PAPER_WEIGHTS,
    ) -> torch.Tensor:
        """Relaxed latency (ms): ``decoupled`` = eq. 3 with ``weights``; ``naive`` = one term."""
        if mode == "naive":
            return self.expected(alphas, betas, gammas)
        if mode != "decoupled":
            raise ValueError(f"mode must be 'decoupled' or 'naive', got {mode!r}")
        t = self.terms(alphas, betas, gammas)
        w1, w2, w3 = weights
        return w1 * t["op"] + w2 * t["rate"] + w3 * t["ratio"]
