"""Tiny dataset trees in each preset's exact layout, written per test (a few KB each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

H, W = 24, 40


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def write_jpg(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path, quality=95)
    return path


def image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def label(values, seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.asarray(values, np.uint8), (h, w))


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    """train: trainIds labels; val: only labelIds labels (mapped on the fly)."""
    root = tmp_path / "cityscapes"
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for c in cities:
            for k in range(2):
                stem = f"{c}/{c}_{k:06d}_000019"
                write_png(root / "leftImg8bit" / split / f"{stem}_leftImg8bit.png", image(k))
                if split == "train":
                    lab = label(list(range(19)) + [255], k)
                    write_png(root / "gtFine" / split / f"{stem}_gtFine_labelTrainIds.png", lab)
                else:
                    lab = label(list(range(34)), k)
                    write_png(root / "gtFine" / split / f"{stem}_gtFine_labelIds.png", lab)
                write_png(root / "gtFine" / split / f"{stem}_gtFine_color.png", image(9))
    return root


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    root = tmp_path / "camvid"
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        lines = []
        for k in range(n):
            name = f"0001TP_{k:06d}.png"
            write_png(root / split / name, image(k))
            write_png(root / f"{split}annot" / name, label(range(12), k))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def bdd_root(tmp_path: Path) -> Path:
    root = tmp_path / "bdd100k"
    for split in ("train", "val"):
        for k in range(2):
            name = f"{split[0]}{k:04d}-abc"
            write_jpg(root / "images" / "10k" / split / f"{name}.jpg", image(k))
            masks = root / "labels" / "sem_seg" / "masks" / split
            write_png(masks / f"{name}.png", label(range(19), k))
    return root


@pytest.fixture
def bdd_old_root(tmp_path: Path) -> Path:
    root = tmp_path / "bdd_old"
    for split in ("train", "val"):
        for k in range(2):
            name = f"{split[0]}{k:04d}"
            write_jpg(root / "seg" / "images" / split / f"{name}.jpg", image(k))
            labels = root / "seg" / "labels" / split
            write_png(labels / f"{name}_train_id.png", label([0, 5, 18, 255], k))
    return root


FOLDER_YAML = """name: toy
classes: [background, road, car]
palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
ignore_index: 255
"""


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for split, n in (("train", 3), ("val", 2)):
        for k in range(n):
            write_png(root / "images" / split / "sub" / f"img{k}.png", image(k))
            write_png(root / "labels" / split / "sub" / f"img{k}.png", label([0, 1, 2, 255], k))
    (root / "dataset.yaml").write_text(FOLDER_YAML)
    return root


@pytest.fixture
def tools():
    """Helpers for tests that write their own files (importlib mode cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        write_png=write_png, write_jpg=write_jpg, image=image, label=label, H=H, W=W
    )
