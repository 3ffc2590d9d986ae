"""Datasets: files on disk (any preset) or synthetic scenes, yielding normalised tensors.

``ds[i]`` returns ``{"image": FloatTensor[3, H, W], "label": LongTensor[H, W], "name": str}``.
``ds[(i, seed)]`` does the same with the augmentation RNG seeded by ``seed``; the train loader
uses that form so augmentation depends on the sample's position in the epoch, not on which
worker process loads it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fasterseg.config.data import HOLDOUT_SPLIT, DataConfig
from fasterseg.data import presets
from fasterseg.data.io import read_image, read_label
from fasterseg.data.labels import IGNORE_INDEX, LabelSet
from fasterseg.data.synthetic import generate_scene
from fasterseg.data.transforms import EvalTransform, TrainTransform
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)


def get_label_set(cfg: DataConfig) -> LabelSet:
    """The classes of ``cfg``'s dataset (built-in presets need no file access)."""
    ls = presets.preset_label_set(cfg.preset, cfg.root, getattr(cfg, "dataset_yaml", None))
    if cfg.num_classes is not None and cfg.num_classes != ls.num_classes:
        raise UserError(
            f"config: data.num_classes={cfg.num_classes} but preset {cfg.preset!r} has "
            f"{ls.num_classes} classes ({', '.join(ls.class_names)}); remove data.num_classes"
        )
    return ls


_SENTINEL = 254  # never a train id: at most 254 classes (0..253), 255 = ignore


def apply_lut(
    stored: np.ndarray, lut: np.ndarray, path: Path | str, label_set: LabelSet
) -> np.ndarray:
    """Stored label values -> uint8 train ids; values outside the classes/ignore name the file."""
    if stored.dtype == np.uint8 and label_set.num_classes <= _SENTINEL:
        # Fast path (PIL's C point() is ~4x faster than numpy fancy indexing on 2 MP labels):
        # invalid values map to a sentinel no class uses.
        table = np.where(lut[:256] < 0, _SENTINEL, lut[:256]).astype(np.uint8)
        mapped = np.asarray(Image.fromarray(stored).point(table.tolist()))
        bad_mask = mapped == _SENTINEL
        if not bad_mask.any():
            return mapped
        mapped = mapped.astype(np.int16)
        mapped[bad_mask] = -1
    else:
        if stored.size and int(stored.max()) >= len(lut):
            raise UserError(f"label {path}: value {int(stored.max())} is out of range")
        mapped = lut[stored]
    if mapped.size and int(mapped.min()) < 0:
        bad = np.unique(stored[mapped < 0])
        raise UserError(
            f"label {path}: values {bad[:8].tolist()} are outside the {label_set.num_classes} "
            f"classes and the ignore value (fix the file or map them in dataset.yaml)"
        )
    return mapped.astype(np.uint8)


class _Base(Dataset):
    def __init__(self, cfg: DataConfig, split: str, train: bool, label_set: LabelSet):
        self.cfg, self.split, self.train, self.label_set = cfg, split, train, label_set
        tf = TrainTransform if train else EvalTransform
        self.transform = tf.from_config(cfg)
        self.files: list[tuple[Path, Path | None]] = []

    def _rng(self, seed: int | None) -> np.random.Generator:
        if seed is None:  # plain ds[i]: follow torch's RNG (seeded per worker by the DataLoader)
            seed = int(torch.randint(0, 2**62, (1,)).item())
        return np.random.default_rng(seed)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Raw ``(image uint8 [H, W, 3], label uint8 train ids [H, W], name)``."""
        raise NotImplementedError

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = self._rng(seed) if self.train else None  # eval: leave torch's RNG untouched
        image, label, name = self._load_or_skip(index)
        x, y = self.transform(image, label, rng)
        return {"image": x, "label": y, "name": name}

    def _load_or_skip(self, index: int):
        if not (self.train and self.cfg.skip_corrupt):
            return self.load(index)
        for k in range(min(len(self), 16)):
            try:
                return self.load((index + k) % len(self))
            except UserError as e:
                logger.warning("skipping a bad sample (data.skip_corrupt): %s", e)
        raise UserError(f"{self.split}: 16 consecutive samples from index {index} are unreadable")


class FileDataset(_Base):
    """Image/label pairs on disk, for every preset except ``synthetic``."""

    def __init__(self, cfg: DataConfig, split: str, train: bool):
        spec = None
        if cfg.preset == "folder":
            spec = presets.load_folder_spec(
                presets.folder_spec_path(cfg.root, getattr(cfg, "dataset_yaml", None))
            )
        super().__init__(cfg, split, train, spec.label_set if spec else get_label_set(cfg))
        if cfg.num_classes is not None and cfg.num_classes != self.label_set.num_classes:
            get_label_set(cfg)  # raises the explanatory error
        self.spec = spec
        prefixes = tuple(getattr(cfg, "holdout_prefixes", None) or ())
        disk_split = cfg.train_split if split == HOLDOUT_SPLIT else split
        if split == HOLDOUT_SPLIT and not prefixes:
            raise UserError("split 'holdout' needs data.holdout_prefixes (e.g. [0006R0])")
        disc = presets.discover(cfg.preset, cfg.root, disk_split, spec)
        self.files = presets.pair_files(disc, cfg.preset, require_labels=train)
        names = {p: n for n, p in disc.images.items()}
        self.names = [names[p] for p, _ in self.files]
        if prefixes and disk_split == cfg.train_split:
            self._hold_out(prefixes, keep_held=split == HOLDOUT_SPLIT)
        self.root = Path(cfg.root)
        logger.debug("%s/%s: %d samples", cfg.preset, split, len(self.files))

    def _hold_out(self, prefixes: tuple[str, ...], keep_held: bool) -> None:
        """Keep only the held-out sequences (split ``holdout``) or only the others (training)."""
        keep = [Path(n).name.startswith(prefixes) == keep_held for n in self.names]
        if not any(keep):
            what = "matches" if keep_held else "is left for training after holding out"
            raise UserError(f"data.holdout_prefixes {list(prefixes)}: no file of split "
                            f"{self.cfg.train_split!r} {what} them")
        self.files = [f for f, k in zip(self.files, keep) if k]
        self.names = [n for n, k in zip(self.names, keep) if k]
        logger.info("%s: %d files %s (data.holdout_prefixes=%s)", self.split, len(self.files),
                    "held out" if keep_held else "left for training", list(prefixes))

    def __len__(self) -> int:
        return len(self.files)

    def load_label(self, index: int) -> np.ndarray:
        """Train ids of one sample without decoding its image (label statistics)."""
        _, lab_path = self.files[index]
        if lab_path is None:
            raise UserError(f"{self.split}: sample {self.names[index]} has no label")
        lut = presets.label_lut(self.cfg.preset, lab_path, self.spec)
        return apply_lut(read_label(lab_path), lut, lab_path, self.label_set)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        img_path, lab_path = self.files[index]
        image = read_image(img_path)
        if lab_path is None:
            return image, np.full(image.shape[:2], IGNORE_INDEX, np.uint8), self.names[index]
        stored = read_label(lab_path)
        if stored.shape != image.shape[:2]:
            raise UserError(
                f"size mismatch: image {img_path} is {image.shape[0]}x{image.shape[1]} but label "
                f"{lab_path} is {stored.shape[0]}x{stored.shape[1]}"
            )
        lut = presets.label_lut(self.cfg.preset, lab_path, self.spec)
        return image, apply_lut(stored, lut, lab_path, self.label_set), self.names[index]


class SyntheticDataset(_Base):
    """Procedural street scenes, generated on the fly from ``(synthetic_seed, split, index)``."""

    def __init__(self, cfg: DataConfig, split: str, train: bool):
        super().__init__(cfg, split, train, get_label_set(cfg))
        self.size = tuple(cfg.synthetic_size)
        prefixes = tuple(getattr(cfg, "holdout_prefixes", None) or ())
        self.scene_split = cfg.train_split if split == HOLDOUT_SPLIT else split
        if split == HOLDOUT_SPLIT and not prefixes:
            raise UserError("split 'holdout' needs data.holdout_prefixes (e.g. [synth_0000])")
        n = cfg.synthetic_train if self.scene_split == cfg.train_split else cfg.synthetic_val
        if n <= 0:
            raise UserError(f"synthetic: split {split!r} has {n} scenes; set data.synthetic_*")
        self.indices = list(range(n))
        self.names = [f"synth_{i:05d}" for i in self.indices]
        if prefixes and self.scene_split == cfg.train_split:
            keep = [name.startswith(prefixes) == (split == HOLDOUT_SPLIT) for name in self.names]
            if not any(keep):
                raise UserError(f"data.holdout_prefixes {list(prefixes)} leaves split {split!r} "
                                "empty")
            self.indices = [i for i, k in zip(self.indices, keep) if k]
            self.names = [nm for nm, k in zip(self.names, keep) if k]
        self.length = len(self.indices)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image, label = generate_scene(self.cfg.synthetic_seed, self.scene_split,
                                      self.indices[index], self.size)
        return image, label, self.names[index]


def build_dataset(cfg: DataConfig, split: str, train: bool) -> FileDataset | SyntheticDataset:
    """Dataset for ``split``: ``train=True`` augments to ``crop_size``; else whole images."""
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    if cfg.preset == "synthetic":
        return SyntheticDataset(cfg, split, train)
    if cfg.preset not in presets.PRESETS:
        choices = ", ".join(presets.PRESETS)
        raise UserError(f"unknown dataset preset {cfg.preset!r} (choose from {choices})")
    return FileDataset(cfg, split, train)
