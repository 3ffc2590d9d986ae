"""The ``data:`` section: which dataset, where, and how images are sized and augmented.

Resolution, crop size and class count are stated here once; nothing else hard-codes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fasterseg.errors import UserError

HOLDOUT_SPLIT = "holdout"  # the split made of the held-out training sequences
Preset = Literal["synthetic", "cityscapes", "camvid", "bdd100k", "folder"]


@dataclass
class DataConfig:
    preset: Preset = "synthetic"
    root: str | None = None  # dataset root folder (not used by "synthetic")
    dataset_yaml: str | None = None  # folder preset: class list file (default ROOT/dataset.yaml)
    train_split: str = "train"
    val_split: str = "val"
    # Cross-sequence check: training-split files whose names start with one of these prefixes
    # (CamVid sequences such as 0006R0, Cityscapes cities) are held out of training and form
    # the split ``holdout``. Empty: nothing held out.
    holdout_prefixes: list[str] = field(default_factory=list)
    num_classes: int | None = None  # None: take it from the preset's label set
    # Synthetic street scenes (generated on the fly, deterministic by seed and index).
    synthetic_size: tuple[int, int] = (256, 512)  # H, W of generated scenes
    synthetic_train: int = 64
    synthetic_val: int = 16
    synthetic_seed: int = 0
    # Geometry and augmentation.
    downsample: int = 1  # integer factor applied to image (linear) and label (nearest) first
    crop_size: tuple[int, int] = (512, 1024)  # H, W of training crops
    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    scale_range: tuple[float, float] | None = None  # if set, uniform in [lo, hi] instead of list
    flip: bool = True
    jitter: float = 0.0  # photometric jitter strength (0 = off)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    label_downsample: int = 1  # training labels downsampled by this factor (nearest)
    # Loading.
    workers: int = 2
    skip_corrupt: bool = False  # warn and skip unreadable files during training instead of failing

    def validate(self) -> None:
        if self.preset != "synthetic" and not self.root:
            raise UserError(f"config: data.root is required for preset {self.preset!r}")
        if self.downsample < 1 or self.label_downsample < 1:
            raise UserError("config: data.downsample and data.label_downsample must be >= 1")
        if min(self.crop_size) <= 0:
            raise UserError(f"config: data.crop_size must be positive, got {self.crop_size}")
        if self.scale_range is not None and not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise UserError(
                f"config: data.scale_range must be 0 < lo <= hi, got {self.scale_range}"
            )
        if min(self.synthetic_size) < 8:
            raise UserError(
                f"config: data.synthetic_size must be at least 8x8, got {self.synthetic_size}"
            )
        if self.workers < 0 or self.jitter < 0:
            raise UserError("config: data.workers and data.jitter must be >= 0")
        if any(not isinstance(p, str) or not p for p in self.holdout_prefixes):
            raise UserError("config: data.holdout_prefixes must be non-empty file-name prefixes")
        if self.train_split == HOLDOUT_SPLIT:
            raise UserError(f"config: data.train_split cannot be {HOLDOUT_SPLIT!r}")
        if not self.scales or min(self.scales) <= 0:
            raise UserError(f"config: data.scales must be positive numbers, got {self.scales}")
