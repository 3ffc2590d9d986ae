"""The multi-resolution FasterSeg supernet (paper section 3.1, facts section 3).

``L`` layers of cells over the downsample rates of ``space.rates`` (8/16/32). Layer ``l`` has a
cell at scale ``j`` for ``j <= l``. Teacher and student share every cell weight; each has its own
stem, heads and architecture parameters (``ArchParams``). The student searches widths with hard
Gumbel-softmax (straight-through); the teacher always uses the widest ratio.

NAS vocabulary (as in once-for-all / NNI): ``arch_parameters()``, ``weight_parameters()``,
``sample_active()`` (draw widths), ``derive()`` (discrete teacher and student).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fasterseg.arch.derive import derive_from_params
from fasterseg.config.core import to_dict
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.models.network import build_stem
from fasterseg.search_space.operators import init_weights, resize
from fasterseg.supernet.arch_params import (
    ARCHS,
    ArchName,
    ArchParams,
    WidthMode,
    WidthSample,
    gamma_row,
    sample_widths,
)
from fasterseg.supernet.cells import Cell
from fasterseg.supernet.heads import HeadStyle, SupernetHeads

ARCH_SCHEMA = "fasterseg.archparams/1"


class Supernet(nn.Module):
    """Supernet with shared cells, per-architecture stems/heads/arch parameters.

    ``forward(x, arch, widths)`` returns ``{combo: logits}`` for every branch combination
    (``"8"``, ``"16"``, ``"32"``, ``"8,16"``, ...): at 1/8 resolution in training mode, at the
    input resolution in eval mode.
    """

    def __init__(
        self, space: SearchSpaceConfig, num_classes: int, *, tau: float = 1.0,
        heads: HeadStyle = "paper",
    ) -> None:
        """``heads``: ``paper`` (a head with a fusion layer per branch combination) or
        ``official`` (the authors' five heads without fusion, see ``supernet.heads``)."""
        super().__init__()
        self.space = space
        self.num_classes = int(num_classes)
        self.tau = float(tau)
        self.rates = list(space.rates)
        L, S = space.num_layers, len(self.rates)
        self.num_layers, self.num_scales = L, S
        self.stem_ratio = {"teacher": space.teacher_stem_ratio, "student": space.student_stem_ratio}
        self.head_ratio = {"teacher": space.teacher_head_ratio, "student": space.student_head_ratio}
        self.max_ratio = max(space.ratios)

        self.arch = nn.ModuleDict(
            {name: ArchParams(space, search_widths=(name == "student")) for name in ARCHS}
        )
        self.stems = nn.ModuleDict({name: build_stem(self.stem_ratio[name]) for name in ARCHS})
        self.cells = nn.ModuleList()
        for layer in range(L):
            row = nn.ModuleList()
            for j in range(min(layer + 1, S)):
                rate = self.rates[j]
                if layer == 0:
                    c_in = max(8 * r for r in self.stem_ratio.values())
                else:
                    c_in = rate * self.max_ratio
                if layer == L - 1:
                    keep = sorted({rate * r for r in self.head_ratio.values()})
                else:
                    keep = sorted({rate * r for r in space.ratios})
                down = None
                if j < S - 1 and layer < L - 1:
                    down = sorted({self.rates[j + 1] * r for r in space.ratios})
                row.append(Cell(space.operators, layer, j, c_in, keep, down))
            self.cells.append(row)
        self.heads = nn.ModuleDict(
            {
                name: SupernetHeads(self.rates, self.head_ratio[name], num_classes,
                                    space.num_branches, heads)
                for name in ARCHS
            }
        )
        self.combos = list(self.heads["student"].combos)
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_in, ReLU) convs, BN weight 1 / bias 0 (the authors' init)."""
        init_weights(self)

    def arch_parameters(self, arch: ArchName | None = None) -> list[nn.Parameter]:
        """Alpha, beta (and student gamma) logits of one architecture, or of both."""
        names = ARCHS if arch is None else (arch,)
        return [p for n in names for p in self.arch[n].parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Everything that is not an architecture parameter (cells, stems, heads)."""
        arch_ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("arch.")]

    # ------------------------------------------------------------------ widths
    def sample_active(
        self, arch: ArchName = "student", mode: WidthMode | None = None, *, generator=None
    ) -> WidthSample:
        """Draw the widths of one forward pass.

        ``mode`` defaults to ``"gumbel"`` for the student (hard Gumbel-softmax of gamma at
        temperature ``tau``, straight-through) and ``"max"`` for the teacher. ``"min"`` and
        ``"random"`` serve the sandwich rule of pretraining.
        """
        params = self.arch[arch]
        if mode is None:
            mode = "gumbel" if params.has_gamma else "max"
        return sample_widths(
            self.space, mode, params.gamma if params.has_gamma else None,
            tau=self.tau, generator=generator,
        )

    def _width(
        self, ws: WidthSample, arch: str, layer: int, j: int
    ) -> tuple[int, torch.Tensor | None]:
        """Channels and straight-through score of the scale-``j`` feature output by ``layer``."""
        rate = self.rates[j]
        if layer < 0:
            return rate * self.stem_ratio[arch], None
        if layer == self.num_layers - 1:
            return rate * self.head_ratio[arch], None
        row = gamma_row(layer, j)
        return rate * self.space.ratios[ws.index[j][row]], ws.score_at(j, row)

    # ------------------------------------------------------------------ forward
    def features(
        self, x: torch.Tensor, arch: ArchName, ws: WidthSample
    ) -> list[torch.Tensor]:
        """Stem + all cells; returns the last layer's output at every scale."""
        params = self.arch[arch]
        alphas = [F.softmax(a, dim=-1) for a in params.alpha]
        betas = [None] + [F.softmax(b, dim=-1) for b in params.beta]
        S, L = self.num_scales, self.num_layers
        keep_prev: list[torch.Tensor | None] = [self.stems[arch](x)] + [None] * (S - 1)
        down_prev: list[torch.Tensor | None] = [None] * S
        for layer in range(L):
            keep_cur: list[torch.Tensor | None] = [None] * S
            down_cur: list[torch.Tensor | None] = [None] * S
            for j in range(min(layer + 1, S)):
                cell = self.cells[layer][j]
                base = alphas[j][layer - j]
                if layer > 0:
                    _, r_in = self._width(ws, arch, layer - 1, j)
                    if r_in is not None:
                        base = base * r_in
                if j == 0:
                    inputs, mix = [keep_prev[0]], [None]
                elif layer == j:
                    inputs, mix = [down_prev[j - 1]], [None]
                else:
                    b = betas[j][layer - j - 1]
                    inputs, mix = [down_prev[j - 1], keep_prev[j]], [b[0], b[1]]
                c_keep, r_keep = self._width(ws, arch, layer, j)
                keep_w = _fold(base, r_keep, mix)
                c_down = down_w = None
                if cell.down is not None:
                    c_down, r_down = self._width(ws, arch, layer, j + 1)
                    down_w = _fold(base, r_down, mix)
                keep_cur[j], down_cur[j] = cell(inputs, keep_w, down_w, c_keep, c_down)
            keep_prev, down_prev = keep_cur, down_cur
        return keep_prev  # type: ignore[return-value]

    def forward(
        self,
        x: torch.Tensor,
        arch: ArchName = "student",
        widths: WidthMode | WidthSample | None = None,
        combos: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predictions of every branch combination for architecture ``arch``.

        ``widths``: a ``WidthSample`` or a mode for ``sample_active`` (default: Gumbel for the
        student, widest for the teacher).
        """
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        ws = widths if isinstance(widths, WidthSample) else self.sample_active(arch, widths)
        finals = self.features(x, arch, ws)
        out_size = None if self.training else tuple(x.shape[-2:])
        return self.heads[arch](finals, out_size, combos)

    # ------------------------------------------------------------------ export
    def arch_params_dict(self, **extra) -> dict:
        """The ``arch_params.json`` contract: raw logits of both architectures plus ``extra``."""
        d = {
            "schema": ARCH_SCHEMA,
            "space": to_dict(self.space),
            "num_classes": self.num_classes,
            "teacher": self.arch["teacher"].to_lists(),
            "student": self.arch["student"].to_lists(),
        }
        d.update(extra)
        return d

    def derive(self, branch_scores: dict | None = None, lut=None, **kw):
        """Discrete (teacher, student, report) via ``fasterseg.arch.derive.derive_from_params``."""
        params = self.arch_params_dict(branch_scores=branch_scores or {})
        return derive_from_params(params, lut=lut, **kw)


def _fold(
    base: torch.Tensor, r_out: torch.Tensor | None, mix: Sequence[torch.Tensor | None]
) -> list[torch.Tensor]:
    """Per-input weight vectors ``alpha * r_in * r_out * beta_i``."""
    w = base if r_out is None else base * r_out
    return [w if m is None else w * m for m in mix]


def downsample_labels(labels: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Nearest downsampling of ``[B, H, W]`` labels to the supernet's 1/8 training resolution."""
    h, w = labels.shape[-2:]
    return F.interpolate(
        labels.unsqueeze(1).float(), size=(h // factor, w // factor), mode="nearest"
    ).squeeze(1).long()


__all__ = ["ARCH_SCHEMA", "Supernet", "downsample_labels", "resize"]
