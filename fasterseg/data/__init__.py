"""Data: label sets, dataset presets (Cityscapes, CamVid, BDD100K, folder, synthetic), paired
transforms, resumable loaders and dataset checks.

Quick use::

    from fasterseg.config.data import DataConfig
    from fasterseg.data import build_dataset, build_train_loader, get_label_set

    cfg = DataConfig(preset="synthetic", crop_size=(128, 256))
    ds = build_dataset(cfg, "train", train=True)
    for batch in build_train_loader(ds, 4, 10, seed=0, epoch=0):
        batch["image"], batch["label"]  # [4, 3, 128, 256] float, [4, 128, 256] long
"""

from fasterseg.data.dataset import FileDataset, SyntheticDataset, build_dataset, get_label_set
from fasterseg.data.io import read_image, read_label
from fasterseg.data.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    CITYSCAPES_PALETTE,
    CITYSCAPES_TRAIN_ID_TO_LABEL_ID,
    IGNORE_INDEX,
    LabelSet,
    cityscapes_label_ids_to_train_ids,
    colorize,
    train_ids_to_label_ids,
)
from fasterseg.data.loader import build_eval_loader, build_train_loader
from fasterseg.data.presets import PRESETS
from fasterseg.data.synthetic import generate_scene

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_ID_TO_TRAIN_ID",
    "CITYSCAPES_PALETTE",
    "CITYSCAPES_TRAIN_ID_TO_LABEL_ID",
    "IGNORE_INDEX",
    "PRESETS",
    "FileDataset",
    "LabelSet",
    "SyntheticDataset",
    "build_dataset",
    "build_eval_loader",
    "build_train_loader",
    "cityscapes_label_ids_to_train_ids",
    "colorize",
    "generate_scene",
    "get_label_set",
    "read_image",
    "read_label",
    "train_ids_to_label_ids",
]
