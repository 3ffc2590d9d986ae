"""Architecture parameters (alpha, beta, gamma) and width sampling.

Shapes and indexing follow the project's conventions (same as the authors' arch files), with
``S = len(rates)`` scales and ``L`` layers:

- ``alpha[j]``: ``[L - j, |O|]``, row ``r`` is layer ``r + j``; softmax over operators.
- ``beta[j]`` (``j >= 1``): ``[L - j - 1, 2]``, row ``r`` is layer ``r + j + 1``; column 0 = input
  from the down op of scale ``j - 1``, column 1 = from the keep op of scale ``j``; softmax.
- ``gamma[j]`` (student only): ``[rows, |ratios|]``, row ``r`` is the width of the scale-``j``
  feature output by layer ``l = r + max(j - 1, 0)``; scale 0 has ``L - 1`` rows, scale ``j >= 1``
  has ``L - j`` rows. Hard Gumbel-softmax (straight-through), resampled every forward.

Everything is initialised to ``1e-3`` (uniform after softmax) as in the authors' code. Values are
stored raw (pre-softmax); ``fasterseg derive`` reads them from ``arch_params.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fasterseg.config.search_space import SearchSpaceConfig

ArchName = Literal["teacher", "student"]
ARCHS: tuple[ArchName, ...] = ("teacher", "student")
WidthMode = Literal["max", "min", "random", "gumbel", "argmax"]
INIT_VALUE = 1e-3


def gamma_rows(num_layers: int, j: int) -> int:
    """Number of gamma rows of scale ``j`` (width of features output by layers < L-1)."""
    return num_layers - 1 if j == 0 else num_layers - j


def gamma_row(layer: int, j: int) -> int:
    """Gamma row that sets the width of the scale-``j`` feature output by ``layer``."""
    return layer - max(j - 1, 0)


class ArchParams(nn.Module):
    """The raw logits of one architecture (teacher or student).

    ``alpha``, ``beta`` and ``gamma`` are ``nn.ParameterList``s indexed by scale; ``beta[0]`` and
    (for the teacher) every ``gamma`` are absent (stored as 0-element placeholders is avoided:
    ``has_gamma`` says whether widths are searched).
    """

    def __init__(self, space: SearchSpaceConfig, *, search_widths: bool) -> None:
        super().__init__()
        L, S, n_ops = space.num_layers, len(space.rates), len(space.operators)
        self.num_layers, self.num_scales = L, S
        self.has_gamma = bool(search_widths)
        self.alpha = nn.ParameterList(
            nn.Parameter(torch.full((L - j, n_ops), INIT_VALUE)) for j in range(S)
        )
        self.beta = nn.ParameterList(
            nn.Parameter(torch.full((L - j - 1, 2), INIT_VALUE)) for j in range(1, S)
        )
        self.gamma = nn.ParameterList(
            nn.Parameter(torch.full((gamma_rows(L, j), len(space.ratios)), INIT_VALUE))
            for j in range(S)
        ) if self.has_gamma else nn.ParameterList()

    def beta_at(self, j: int) -> nn.Parameter:
        """``beta[j]`` for ``j >= 1`` (scale 0 has no beta)."""
        if j < 1:
            raise IndexError("scale 0 has no beta")
        return self.beta[j - 1]

    def probabilities(self) -> dict[str, list[torch.Tensor | None]]:
        """Softmax-normalised alpha, beta, gamma (beta[0] and teacher gammas are ``None``)."""
        return {
            "alpha": [F.softmax(a, dim=-1) for a in self.alpha],
            "beta": [None] + [F.softmax(b, dim=-1) for b in self.beta],
            "gamma": [F.softmax(g, dim=-1) for g in self.gamma] if self.has_gamma else None,
        }

    def to_lists(self) -> dict:
        """Raw logits as nested lists, the layout of ``arch_params.json``."""
        with torch.no_grad():
            return {
                "alpha": [a.detach().cpu().tolist() for a in self.alpha],
                "beta": [None] + [b.detach().cpu().tolist() for b in self.beta],
                "gamma": [g.detach().cpu().tolist() for g in self.gamma] if self.has_gamma else None,
            }

    @torch.no_grad()
    def load_lists(self, d: dict) -> None:
        """Inverse of ``to_lists`` (shapes must match)."""
        for p, v in zip(self.alpha, d["alpha"]):
            p.copy_(torch.tensor(v, dtype=p.dtype))
        for p, v in zip(self.beta, d["beta"][1:]):
            p.copy_(torch.tensor(v, dtype=p.dtype))
        if self.has_gamma and d.get("gamma") is not None:
            for p, v in zip(self.gamma, d["gamma"]):
                p.copy_(torch.tensor(v, dtype=p.dtype))

    @torch.no_grad()
    def entropy(self) -> dict[str, float]:
        """Mean normalised entropy (1 = uniform, 0 = one-hot) of alpha, beta and gamma rows."""
        out = {}
        groups = {"alpha": list(self.alpha), "beta": list(self.beta), "gamma": list(self.gamma)}
        for name, ps in groups.items():
            if not ps:
                out[name] = None
                continue
            vals = []
            for p in ps:
                if p.numel() == 0:
                    continue
                prob = F.softmax(p.float(), dim=-1)
                h = -(prob * prob.clamp_min(1e-12).log()).sum(-1) / math.log(p.shape[-1])
                vals.append(h)
            out[name] = float(torch.cat(vals).mean()) if vals else None
        return out

    @torch.no_grad()
    def skip_share(self, skip_index: int = 0) -> float:
        """Share of cells whose most likely operator is the skip (a collapse indicator)."""
        if skip_index < 0:
            return 0.0
        n = k = 0
        for a in self.alpha:
            others = torch.cat([a[:, :skip_index], a[:, skip_index + 1:]], dim=1)
            k += int((a[:, skip_index] > others.max(-1).values).sum())  # ties (uniform) do not count
            n += a.shape[0]
        return k / max(n, 1)


@dataclass
class WidthSample:
    """Output width index per gamma row and its straight-through score (value 1.0).

    ``index[j][r]`` is an index into ``space.ratios``; ``score[j]`` is ``None`` (constant 1, no
    gradient) or a ``[rows]`` tensor whose values are exactly 1.0 and whose gradient flows to
    ``gamma[j]`` (hard Gumbel-softmax, straight-through).
    """

    index: list[list[int]]
    score: list[torch.Tensor | None]
    mode: str

    def score_at(self, j: int, row: int) -> torch.Tensor | None:
        s = self.score[j]
        return None if s is None else s[row]


def gumbel_softmax_hard(logits: torch.Tensor, tau: float = 1.0, generator=None) -> torch.Tensor:
    """Hard (one-hot) Gumbel-softmax sample over the last dim, straight-through gradient.

    Equivalent to ``F.gumbel_softmax(log_softmax(logits), tau, hard=True)`` (the authors' call)
    but with an optional generator. Sampling frequencies equal ``softmax(logits)``.
    """
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    g = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
    y_soft = F.softmax((F.log_softmax(logits, dim=-1) + g) / tau, dim=-1)
    idx = y_soft.argmax(-1, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, idx, 1.0)
    return y_hard - y_soft.detach() + y_soft


def sample_widths(
    space: SearchSpaceConfig,
    mode: WidthMode,
    gamma: nn.ParameterList | None = None,
    *,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
) -> WidthSample:
    """Draw one width per gamma row.

    ``max``/``min``: widest/narrowest; ``random``: uniform (pretraining sandwich); ``gumbel``: hard
    Gumbel-softmax of ``gamma`` (straight-through scores); ``argmax``: the most likely ratio (what
    derivation picks; used for validation).
    """
    L, S, n = space.num_layers, len(space.rates), len(space.ratios)
    order = sorted(range(n), key=lambda i: space.ratios[i])
    index: list[list[int]] = []
    score: list[torch.Tensor | None] = []
    for j in range(S):
        rows = gamma_rows(L, j)
        if mode == "max":
            index.append([order[-1]] * rows)
            score.append(None)
        elif mode == "min":
            index.append([order[0]] * rows)
            score.append(None)
        elif mode == "random":
            idx = torch.randint(0, n, (rows,), generator=generator)
            index.append([int(i) for i in idx])
            score.append(None)
        elif mode == "argmax":
            if gamma is None or len(gamma) == 0:
                index.append([order[-1]] * rows)
            else:
                index.append([int(i) for i in gamma[j].detach().argmax(-1)])
            score.append(None)
        elif mode == "gumbel":
            if gamma is None or len(gamma) == 0:
                raise ValueError("gumbel widths need gamma parameters (the teacher has none)")
            hard = gumbel_softmax_hard(gamma[j], tau, generator)
            idx = hard.detach().argmax(-1)
            index.append([int(i) for i in idx])
            score.append(hard.gather(-1, idx.unsqueeze(-1)).squeeze(-1))
        else:
            raise ValueError(f"unknown width mode {mode!r}")
    return WidthSample(index=index, score=score, mode=mode)
