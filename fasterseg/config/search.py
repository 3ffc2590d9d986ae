"""The ``search:`` section and the top-level config of ``fasterseg search`` (data + space + search).

Defaults are the paper's (appendix F/H): 20 pretraining + 30 search epochs, 160x320 crops from
half-resolution images, SGD momentum 0.9 / wd 5e-4 / grad clip 5 with exponential decay 0.99,
Adam 3e-4 betas (0.5, 0.999) for the architecture, lambda = 0.01, decoupled latency weights
(0.001, 0.997, 0.0021). Where the authors' code differs (facts sections 3, 5, 6, 16) the field
is left ``None`` and filled from ``preset_values``: ``paper`` (default) or ``official``; an
explicit value always wins. ``official`` also takes the authors' search-data scale jitter
{0.75, 1, 1.25}, their five supernet heads without fusion layer and their latency gradient
(only the sampled width's score); what still differs is tabled in ``docs/search.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from fasterseg.config.data import DataConfig
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError

PresetValues = Literal["paper", "official"]
Amp = Literal["auto", "off", "bf16"]

# Values that differ between the paper and the authors' code (facts sections 5, 6 and 16).
PRESET_VALUES: dict[str, dict] = {
    "paper": {
        "pretrain_crop_size": (160, 320),
        "crop_size": (160, 320),
        "pretrain_batch_size": 2,
        "batch_size": 2,
        "pretrain_lr": 0.02,
        "lr": 0.01,
        "lr_decay": 0.99,
        "latency_weights": (0.001, 0.997, 0.0021),
        "latency_gamma": "softmax",
        "scales": None,  # None: data.scales as configured
        "supernet_heads": "paper",
    },
    "official": {
        "pretrain_crop_size": (256, 512),
        "crop_size": (224, 448),
        "pretrain_batch_size": 3,
        "batch_size": 2,
        "pretrain_lr": 0.02,
        "lr": 0.01,
        "lr_decay": 0.978,
        "latency_weights": (0.002, 0.994, 0.004),
        "latency_gamma": "gumbel_sampled",
        "scales": (0.75, 1.0, 1.25),
        "supernet_heads": "official",
    },
}


@dataclass
class SearchConfig:
    preset_values: PresetValues = "paper"
    pretrain_epochs: int = 20
    search_epochs: int = 30
    iters_per_epoch: int | None = None  # None: max(len(trainA) // batch, min_iters_per_epoch)
    min_iters_per_epoch: int = 400
    # Filled from preset_values when None.
    pretrain_crop_size: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = None
    pretrain_batch_size: int | None = None
    batch_size: int | None = None
    pretrain_lr: float | None = None
    lr: float | None = None
    lr_decay: float | None = None  # lr * lr_decay ** epoch (per stage)
    latency_weights: tuple[float, float, float] | None = None  # w1, w2, w3 of eq. 3
    # widths fed to the latency term: softmax(gamma), a Gumbel sample with straight-through
    # gradient to the whole table row, or (the authors') to the sampled width's score only
    latency_gamma: Literal["softmax", "gumbel", "gumbel_sampled"] | None = None
    scales: tuple[float, ...] | None = None  # random rescaling of search data (None: data.scales)
    supernet_heads: Literal["paper", "official"] | None = None  # 6 heads + fusion / authors' 5
    # Weight optimiser.
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = 5.0
    sandwich_random: int = 2  # random-width passes in pretraining (plus min and max)
    # Architecture optimiser (one Adam per architecture).
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 0.0
    tau: float = 1.0  # Gumbel-softmax temperature of the width sampling
    # Latency regularisation (student only).
    latency_weight: float = 0.01  # lambda
    latency_mode: Literal["decoupled", "naive"] = "decoupled"
    lut: str | None = None  # latency table (``--lut`` overrides)
    latency_size: tuple[int, int] | None = None  # LUT input size (default: the table's own)
    # Adapt lambda after each search epoch so that the LUT latency of the student's derived
    # candidate networks stays inside [lo, hi] (halve below lo, double above hi; the authors'
    # schedule). Units: a derived network's table latency, e.g. the published student's.
    latency_range_ms: tuple[float, float] | None = None
    latency_weight_max: float = 1.0  # lambda never grows above this (100x the paper's 0.01)
    latency_target_ms: float = 8.3  # T of the branch-selection objective (appendix B)
    # Loss.
    ohem_thresh: float = 0.7
    ohem_min_kept_ratio: float = 1 / 16
    # Validation of the supernet heads.
    eval_every: int = 1  # epochs (0 = only the last epoch of each stage, for branch_scores)
    val_max_images: int | None = None
    # Speed/memory.
    # bf16 autocast on CPU/CUDA (changes losses slightly); auto: measured once per machine
    amp: Amp = "off"
    channels_last: bool = False
    # Bookkeeping.
    seed: int = 12345
    deterministic: bool = False
    save_every: int = 0  # also save last.pt every N iterations
    log_every: int = 20
    tensorboard: bool = False  # also log the metrics records to RUN/tensorboard/ (extra)
    cost_warmup: int = 1
    cost_measure: int = 2
    collapse_window: int = 3  # epochs compared by the collapse warning
    runs_root: str = "runs/search"

    def value(self, name: str):
        """A field's value, or the ``preset_values`` default when it is ``None``."""
        v = getattr(self, name)
        return PRESET_VALUES[self.preset_values][name] if v is None else v

    def resolved(self) -> "SearchConfig":
        """A copy with every preset-dependent field filled in."""
        return replace(self, **{k: self.value(k) for k in PRESET_VALUES[self.preset_values]})

    def validate(self) -> None:
        for name in ("pretrain_epochs", "search_epochs", "eval_every", "save_every", "log_every",
                     "sandwich_random", "cost_warmup"):
            if getattr(self, name) < 0:
                raise UserError(f"config: search.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("iters_per_epoch", "pretrain_batch_size", "batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"config: search.{name} must be >= 1, got {v}")
        for name in ("pretrain_crop_size", "crop_size"):
            v = getattr(self, name)
            if v is not None and (min(v) <= 0 or v[0] % 32 or v[1] % 32):
                raise UserError(
                    f"config: search.{name} {v[0]}x{v[1]} must be positive multiples of 32"
                )
        if self.latency_weight < 0:
            raise UserError("config: search.latency_weight must be >= 0")
        if self.latency_range_ms is not None and not 0 < self.latency_range_ms[0] < self.latency_range_ms[1]:
            raise UserError("config: search.latency_range_ms must be [low, high] with 0 < low < high")
        if self.latency_weight_max < self.latency_weight:
            raise UserError(
                f"config: search.latency_weight_max ({self.latency_weight_max}) must be >= "
                f"search.latency_weight ({self.latency_weight})"
            )
        if self.amp not in ("auto", "off", "bf16"):
            raise UserError(f"config: search.amp must be auto, off or bf16, got {self.amp!r}")
        if self.scales is not None and (not self.scales or min(self.scales) <= 0):
            raise UserError(f"config: search.scales must be positive numbers, got {self.scales}")
        if self.tau <= 0:
            raise UserError("config: search.tau must be > 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise UserError("config: search.grad_clip must be > 0 (or null to disable)")


@dataclass
class SearchRunConfig:
    """What ``fasterseg search`` reads from ``-c CONFIG`` and writes to ``<run>/config.yaml``."""

    data: DataConfig = field(default_factory=lambda: DataConfig(downsample=2))
    space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def validate(self) -> None:
        if self.search.pretrain_epochs + self.search.search_epochs < 1:
            raise UserError("config: search.pretrain_epochs + search.search_epochs must be >= 1")

    def data_for(self, stage: str) -> DataConfig:
        """The data section with the stage's crop size and scales (labels stay full resolution)."""
        s = self.search
        crop = s.value("pretrain_crop_size" if stage == "pretrain" else "crop_size")
        scales = s.value("scales")
        scales = list(self.data.scales) if scales is None else [float(v) for v in scales]
        return replace(self.data, crop_size=tuple(crop), scales=scales)
