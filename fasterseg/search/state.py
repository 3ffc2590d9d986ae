"""The small object the co-search steps work on: the supernet, its optimisers, lambda, the loss.

Everything a step reads or updates is here and nothing else is: ``weight_step`` and ``arch_step``
(``fasterseg.search.steps``) are plain functions over a ``SearchState`` so they can be imported,
unit-tested and timed (``benchmarks/search_step.py``) exactly as the search runs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fasterseg.config.search import SearchConfig
from fasterseg.engine.losses import OhemCrossEntropy
from fasterseg.errors import UserError
from fasterseg.supernet import ARCHS, Supernet


class SearchDiverged(UserError):
    """A loss became NaN/inf: the search stops, the last good checkpoint is kept."""

    def __init__(self, message: str, what: str = "", value: float = math.nan) -> None:
        super().__init__(message)
        self.what, self.value = what, value


class SegObjective:
    """Sum over all prediction heads of OHEM at 1/8 resolution (labels downsampled, nearest)."""

    def __init__(self, thresh: float, min_kept_ratio: float, ignore_index: int = 255):
        self.ohem = OhemCrossEntropy(thresh, min_kept_ratio, ignore_index)

    def __call__(self, outputs: dict[str, torch.Tensor], labels8: torch.Tensor) -> torch.Tensor:
        return sum(self.ohem(o.float(), labels8) for o in outputs.values())


@dataclass
class SearchState:
    """Supernet + optimisers + lambda of one co-search; ``cfg`` is a *resolved* ``SearchConfig``.

    ``latency`` is the student's ``RelaxedLatency`` (or ``None``: no latency term); ``amp`` the
    resolved precision (``off``/``bf16``), never ``auto``.
    """

    model: Supernet
    cfg: SearchConfig
    sgd: torch.optim.Optimizer
    arch_opts: dict[str, torch.optim.Optimizer]
    seg: SegObjective
    latency: torch.nn.Module | None = None
    latency_weight: float = 0.0
    amp: str = "off"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights: list[torch.nn.Parameter] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        model: Supernet,
        cfg: SearchConfig,
        *,
        phase: str = "pretrain",
        latency: torch.nn.Module | None = None,
        ignore_index: int = 255,
        amp: str = "off",
        device: torch.device | str = "cpu",
    ) -> "SearchState":
        """Fresh optimisers (SGD for the weights, one Adam per architecture) for ``model``."""
        if cfg.lr is None:  # the steps need preset values filled in
            cfg = cfg.resolved()
        weights = model.weight_parameters()
        arch_opts = {
            a: torch.optim.Adam(model.arch_parameters(a), lr=cfg.arch_lr,
                                betas=tuple(cfg.arch_betas), weight_decay=cfg.arch_weight_decay)
            for a in ARCHS
        }
        state = cls(model=model, cfg=cfg, sgd=torch.optim.SGD(weights, lr=0.0), arch_opts=arch_opts,
                    seg=SegObjective(cfg.ohem_thresh, cfg.ohem_min_kept_ratio, ignore_index),
                    latency=latency, latency_weight=float(cfg.latency_weight), amp=amp,
                    device=torch.device(device), weights=weights)
        state.new_sgd(phase)
        return state

    def base_lr(self, phase: str) -> float:
        return float(self.cfg.pretrain_lr if phase == "pretrain" else self.cfg.lr)

    def lr_at(self, phase: str, epoch: int) -> float:
        """``lr * lr_decay ** epoch`` of the stage (exponential, stepped per epoch)."""
        return self.base_lr(phase) * self.cfg.lr_decay ** epoch

    def new_sgd(self, phase: str) -> torch.optim.SGD:
        """A fresh weight optimiser for ``phase`` (the authors start each stage anew)."""
        c = self.cfg
        self.sgd = torch.optim.SGD(self.weights, lr=self.base_lr(phase), momentum=c.momentum,
                                   weight_decay=c.weight_decay)
        return self.sgd

    def set_lr(self, lr: float) -> None:
        for g in self.sgd.param_groups:
            g["lr"] = lr

    def optimizer_state(self) -> dict:
        return {"weight_optimizer": self.sgd.state_dict(),
                "arch_optimizers": {a: o.state_dict() for a, o in self.arch_opts.items()}}

    def load_optimizer_state(self, state: dict) -> None:
        self.sgd.load_state_dict(state["weight_optimizer"])
        for a in ARCHS:
            self.arch_opts[a].load_state_dict(state["arch_optimizers"][a])
