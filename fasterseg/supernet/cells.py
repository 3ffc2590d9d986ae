"""Mixed operators and supernet cells over the five superkernel operators.

A cell ``(l, j)`` holds a "keep" mixed op (scale j -> scale j, stride 1) and, unless it is at the
last scale or the last layer, a "down" mixed op (scale j -> j+1, stride 2). Both are weighted by
the same alpha row. When the cell has two candidate inputs, the same cell weights run on each and
the results are mixed by beta (facts section 3). Two same-shaped inputs go through each operator as one
batch (BatchNorm statistics stay per input): the deep scales have few pixels and many channels,
where one conv over twice the batch costs much less than two. Operators come from
``fasterseg.search_space.operators`` (the only copy); each runs at a sliced output width with a
private BatchNorm per width.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fasterseg.search_space.operators import build_operator
from fasterseg.search_space.slimmable import bn_groups


class MixedOp(nn.Module):
    """All operators on one input; the output is their weighted sum (weights given per call)."""

    def __init__(
        self, operators: Sequence[str], c_in: int, c_out: int, stride: int, out_widths: Sequence[int]
    ) -> None:
        super().__init__()
        self.names = tuple(operators)
        self.ops = nn.ModuleList(
            build_operator(name, c_in, c_out, stride, out_widths=out_widths) for name in operators
        )

    def terms(self, x: torch.Tensor, c_out: int) -> list[torch.Tensor]:
        """Every operator's output at width ``c_out`` (in operator order)."""
        return [op(x, c_out) for op in self.ops]


def weighted_sum(terms: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_k weights[k] * terms[k]`` with one fused multiply-add per term.

    ``addcmul`` keeps no intermediate alive for backward (each term is already saved by the ReLU
    that produced it), so memory stays at one output per mixed op.
    """
    out = terms[0] * weights[0]
    for t, w in zip(terms[1:], weights[1:]):
        out = torch.addcmul(out, t, w)
    return out


class Cell(nn.Module):
    """Supernet cell ``(layer, scale)``: keep op and optional down op sharing one alpha row."""

    #: run two same-shaped inputs as one batch (False: one operator call per input, the
    #: straightforward execution, kept for equivalence tests and benchmarks)
    batch_inputs: bool = True

    def __init__(
        self,
        operators: Sequence[str],
        layer: int,
        scale: int,
        c_in: int,
        keep_widths: Sequence[int],
        down_widths: Sequence[int] | None,
    ) -> None:
        super().__init__()
        self.layer, self.scale = layer, scale
        self.keep = MixedOp(operators, c_in, max(keep_widths), 1, keep_widths)
        self.down = (
            MixedOp(operators, c_in, max(down_widths), 2, down_widths) if down_widths else None
        )

    def forward(
        self,
        inputs: Sequence[torch.Tensor],
        keep_weights: Sequence[torch.Tensor],
        down_weights: Sequence[torch.Tensor] | None,
        c_keep: int,
        c_down: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the cell on each input; ``keep_weights[i]`` is the ``[|O|]`` vector of input i.

        A weight vector already folds in alpha, the input's beta and the straight-through width
        scores (input and output width), so every output is one weighted sum over
        (inputs x operators).
        """
        run_down = self.down is not None and c_down is not None
        if self.batch_inputs and len(inputs) > 1 and all(x.shape == inputs[0].shape for x in inputs[1:]):
            return self._forward_batched(inputs, keep_weights, down_weights, c_keep,
                                         c_down if run_down else None)
        keep_terms: list[torch.Tensor] = []
        down_terms: list[torch.Tensor] = []
        kw: list[torch.Tensor] = []
        dw: list[torch.Tensor] = []
        for i, x in enumerate(inputs):
            keep_terms += self.keep.terms(x, c_keep)
            kw += list(keep_weights[i].unbind(0))
            if run_down:
                down_terms += self.down.terms(x, c_down)
                dw += list(down_weights[i].unbind(0))
        keep = weighted_sum(keep_terms, kw)
        down = weighted_sum(down_terms, dw) if run_down else None
        return keep, down

    def _forward_batched(
        self,
        inputs: Sequence[torch.Tensor],
        keep_weights: Sequence[torch.Tensor],
        down_weights: Sequence[torch.Tensor] | None,
        c_keep: int,
        c_down: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same result as the per-input loop with one operator call over all inputs."""
        n = len(inputs)
        x = torch.cat(list(inputs), dim=0)
        with bn_groups(n):
            keep = _mix_groups(self.keep.terms(x, c_keep), keep_weights, n)
            down = None
            if c_down is not None:
                down = _mix_groups(self.down.terms(x, c_down), down_weights, n)
        return keep, down


def _mix_groups(
    terms: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], groups: int
) -> torch.Tensor:
    """``sum_{i,k} weights[i][k] * terms[k][chunk i]`` for terms batched over ``groups`` inputs."""
    w = torch.stack(list(weights), dim=0)  # [groups, |O|]
    shape = (groups, -1) + tuple(terms[0].shape[1:])
    ws = w.view(groups, w.shape[1], 1, 1, 1, 1).unbind(1)
    out = weighted_sum([t.reshape(shape) for t in terms], ws)
    return out.sum(dim=0)
