"""Supernet prediction heads, one per branch combination (each single rate and each b-combination).

A combination's head mirrors the derived network's head (facts section 8): every branch is brought
back to 1/8 by the same aggregator as in ``fasterseg.models.network`` (1x1 arm, bilinear up,
concat with the final feature at that rate, 3x3 refine), the branches are concatenated, fused
(1x1 conv-BN-ReLU) and classified by a ``Head``. In the supernet the features each branch climbs
through are the last layer's outputs at every rate. In training mode predictions stay at 1/8
resolution (labels are downsampled instead, as in the authors' code).

``style="official"`` builds the authors' five heads instead (facts section 3): the single rates and
only the combinations that contain the deepest rate (``8,32``, ``16,32``), with no fusion layer
(the concatenated branches go straight into the ``Head``).
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal, Sequence

import torch
from torch import nn

from fasterseg.models.network import BranchAggregator
from fasterseg.search_space.operators import FeatureFusion, Head, resize


def combo_key(rates: Sequence[int]) -> str:
    """``[16, 8] -> "8,16"`` (the key used in ``arch_params.json`` ``branch_scores``)."""
    return ",".join(str(r) for r in sorted(rates))


HeadStyle = Literal["paper", "official"]


def branch_combos(
    rates: Sequence[int], num_branches: int, style: HeadStyle = "paper"
) -> list[tuple[int, ...]]:
    """Single rates, then every ``num_branches``-combination (in rate order).

    ``official``: only the combinations that contain the deepest rate (the authors' heads).
    """
    combos = [(r,) for r in rates]
    if num_branches > 1:
        pairs = list(combinations(rates, num_branches))
        if style == "official":
            pairs = [c for c in pairs if max(rates) in c]
        combos += pairs
    return combos


class SupernetHeads(nn.Module):
    """Aggregators per rate and one fusion + Head per branch combination, for one architecture."""

    def __init__(
        self, rates: Sequence[int], head_ratio: int, num_classes: int, num_branches: int,
        style: HeadStyle = "paper",
    ) -> None:
        super().__init__()
        if style not in ("paper", "official"):
            raise ValueError(f"head style must be 'paper' or 'official', got {style!r}")
        self.style = style
        self.rates = list(rates)
        self.head_ratio = head_ratio
        skip = {r: r * head_ratio for r in self.rates}
        self.aggregators = nn.ModuleDict(
            {str(r): BranchAggregator(r * head_ratio, r, head_ratio, skip) for r in self.rates}
        )
        self.combos = [combo_key(c) for c in branch_combos(self.rates, num_branches, style)]
        c8 = 8 * head_ratio
        self.fusions = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for key in self.combos:
            c = c8 * len(key.split(","))
            if style == "paper":
                self.fusions[key.replace(",", "_")] = FeatureFusion(c)
            self.heads[key.replace(",", "_")] = Head(c, num_classes)

    def forward(
        self,
        finals: Sequence[torch.Tensor],
        out_size: tuple[int, int] | None = None,
        combos: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``finals[j]``: last-layer feature at ``rates[j]``. Returns combo key -> logits.

        Logits are at 1/8 resolution, or resized (bilinear, align_corners) to ``out_size``.
        """
        feats = {r: f for r, f in zip(self.rates, finals)}
        wanted = list(self.combos if combos is None else combos)
        needed = sorted({int(r) for key in wanted for r in key.split(",")})
        branch = {r: self.aggregators[str(r)](feats[r], feats) for r in needed}
        out: dict[str, torch.Tensor] = {}
        for key in wanted:
            name = key.replace(",", "_")
            parts = [branch[int(r)] for r in key.split(",")]
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            if name in self.fusions:
                x = self.fusions[name](x)
            y = self.heads[name](x)
            out[key] = y if out_size is None else resize(y, out_size)
        return out
