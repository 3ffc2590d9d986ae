"""The ``train:`` section and the top-level config of ``fasterseg train`` (``data`` + ``train``).

Defaults are the paper's / official code's Cityscapes schedule (section 9 of the facts file):
SGD lr 0.01, momentum 0.9, weight decay 5e-4, lr x0.992 per epoch, batch 12, 600 x 1000
iterations, OHEM (0.7, N/16), aux heads x0.2, KD weight 1.0. Presets under ``configs/train/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fasterseg.config.data import DataConfig
from fasterseg.errors import UserError

Amp = Literal["off", "bf16", "fp16", "auto"]
LrSchedule = Literal["exp", "poly", "cosine"]
KDReduction = Literal["pixel", "official"]


@dataclass
class TrainConfig:
    arch: str = "fasterseg_student"  # model name or arch JSON path (``--arch`` overrides)
    teacher: str | None = None  # teacher checkpoint for distillation (``--teacher`` overrides)
    epochs: int = 600
    iters_per_epoch: int = 1000
    batch_size: int = 12  # per process; the total under DDP is batch_size x world size
    accumulate: int = 1  # micro-batches per optimiser step (one "iteration" = one step)
    lr: float = 0.01
    lr_schedule: LrSchedule = "exp"  # exp: lr * lr_decay ** epoch (paper); poly/cosine: per step
    lr_decay: float = 0.992  # exp only
    lr_power: float = 0.9  # poly only: lr * (1 - step / total) ** lr_power
    min_lr: float = 0.0  # poly/cosine: the lr the schedule ends at
    warmup_iters: int = 0  # linear warm-up from warmup_ratio * lr over this many steps
    warmup_ratio: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = None  # max grad norm (None = off; the official train stage has none)
    ohem_thresh: float = 0.7
    ohem_min_kept_ratio: float = 1 / 16  # min kept = ratio x B*H*W
    aux_weight: float = 0.2
    # Class weights of the OHEM loss from the training labels' pixel frequencies: none (paper),
    # median_freq (SegNet's median frequency balancing) or sqrt_inv_freq; clipped to
    # [1 / class_weight_max, class_weight_max].
    class_weights: str = "none"
    class_weight_max: float = 10.0
    kd_weight: float = 1.0
    kd_reduction: KDReduction = "pixel"  # pixel: paper eq. 4; official: also / num_classes
    amp: Amp = "off"  # bf16 on CPU; fp16 (with GradScaler) or bf16 on CUDA; auto: measured
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP on CUDA
    seed: int = 12345
    deterministic: bool = False  # ``--deterministic`` sets it
    save_every: int = 0  # also save last.pt every N iterations (0 = only at epoch ends)
    eval_every: int = 10  # validate every N epochs, on epoch 1 and on the last (0 = never)
    eval_max_images: int | None = None  # validate on the first N val images only
    log_every: int = 50  # iteration records in metrics.jsonl every N iterations
    tensorboard: bool = False  # also log the metrics records to RUN/tensorboard/ (extra)
    cost_warmup: int = 2  # iterations excluded from the cost estimate
    cost_measure: int = 3  # iterations timed for the cost estimate
    time_budget_min: float | None = None  # stop (save + validate) after this many minutes
    runs_root: str = "runs/train"  # parent of auto-named run directories

    def validate(self) -> None:
        positive = ("epochs", "iters_per_epoch", "batch_size", "accumulate")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"config: train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.lr_decay <= 0:
            raise UserError("config: train.lr and train.lr_decay must be > 0")
        if not 0 < self.ohem_thresh <= 1:
            raise UserError(f"config: train.ohem_thresh must be in (0, 1], got {self.ohem_thresh}")
        if not 0 <= self.ohem_min_kept_ratio <= 1:
            raise UserError("config: train.ohem_min_kept_ratio must be in [0, 1]")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise UserError("config: train.grad_clip must be > 0 (or null to disable)")
        if self.class_weights not in ("none", "median_freq", "sqrt_inv_freq"):
            raise UserError("config: train.class_weights must be none, median_freq or "
                            f"sqrt_inv_freq, got {self.class_weights!r}")
        if self.class_weight_max < 1:
            raise UserError("config: train.class_weight_max must be >= 1")
        if self.lr_schedule not in ("exp", "poly", "cosine"):
            raise UserError(f"config: train.lr_schedule must be exp, poly or cosine, "
                            f"got {self.lr_schedule!r}")
        if self.amp not in ("off", "bf16", "fp16", "auto"):
            raise UserError(f"config: train.amp must be off, bf16, fp16 or auto, got {self.amp!r}")
        if not 0 <= self.min_lr < self.lr:
            raise UserError("config: train.min_lr must be in [0, train.lr)")
        if self.lr_power <= 0 or not 0 < self.warmup_ratio <= 1:
            raise UserError("config: train.lr_power must be > 0 and train.warmup_ratio in (0, 1]")
        for name in ("save_every", "eval_every", "log_every", "cost_warmup", "warmup_iters"):
            if getattr(self, name) < 0:
                raise UserError(f"config: train.{name} must be >= 0")
        if self.cost_measure < 1:
            raise UserError("config: train.cost_measure must be >= 1")


@dataclass
class TrainRunConfig:
    """What ``fasterseg train`` reads from ``-c CONFIG`` and writes to ``<run>/config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        for s in self.data.crop_size:
            if s % 32:
                raise UserError(
                    f"config: data.crop_size {self.data.crop_size[0]}x{self.data.crop_size[1]} "
                    "must be divisible by 32 (the network's output stride)"
                )
