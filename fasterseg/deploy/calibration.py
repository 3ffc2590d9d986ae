"""Calibration and check images for int8 (and any path that is compared with fp32).

int8 ranges calibrated on generated scenes fit a CamVid- or Cityscapes-trained model badly (the
activations of real images reach other values), so calibration reads real images of the model's
own dataset, given as ``PRESET:ROOT`` (``camvid:../shared/data/camvid``). Generated street
scenes are used only when no data is given, with a warning.

Every image becomes exactly ``size``: scaled (bilinear, aspect kept) so that it covers ``size``,
then centre-cropped, so every pixel is a real one (agreement measured on padding would flatter a
path) and any image size works. Normalisation is the training one (``DataConfig.mean/std``,
shared by every preset). Which images are taken is a pure function of ``seed``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["calibration_images", "fit_to_size", "parse_calibration_spec"]

# presets that read files; ``synthetic`` needs no root and means generated scenes
FILE_PRESETS = ("camvid", "cityscapes", "bdd100k", "folder")
EXAMPLE = "camvid:../shared/data/camvid"


def parse_calibration_spec(text: str) -> tuple[str, str]:
    """``PRESET:ROOT`` -> (preset, root); ``synthetic`` alone -> ("synthetic", "").

    Only the first colon splits, so a root may contain colons. Errors are one-line ``UserError``.
    """
    spec = (text or "").strip()
    if spec in ("synthetic", "synthetic:"):
        return "synthetic", ""
    preset, sep, root = spec.partition(":")
    preset, root = preset.strip().lower(), root.strip()
    choices = ", ".join((*FILE_PRESETS, "synthetic"))
    if not sep:
        raise UserError(f"calibration data {text!r}: expected PRESET:ROOT, e.g. {EXAMPLE} "
                        f"(presets: {choices})")
    if preset not in (*FILE_PRESETS, "synthetic"):
        raise UserError(f"calibration data {text!r}: unknown preset {preset!r} "
                        f"(choose from {choices})")
    if preset == "synthetic":
        raise UserError(f"calibration data {text!r}: 'synthetic' takes no folder")
    if not root:
        raise UserError(f"calibration data {text!r}: the dataset folder is missing, "
                        f"e.g. {EXAMPLE}")
    return preset, root


def fit_to_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> exactly ``size``: scale to cover (bilinear), then centre-crop."""
    from fasterseg.data.transforms import resize_image

    h, w = image.shape[:2]
    oh, ow = int(size[0]), int(size[1])
    scale = max(oh / h, ow / w)
    sh, sw = max(oh, round(h * scale)), max(ow, round(w * scale))
    if (sh, sw) != (h, w):
        image = resize_image(image, (sh, sw))
    top, left = (sh - oh) // 2, (sw - ow) // 2
    return image[top:top + oh, left:left + ow]


def _generated(size: tuple[int, int], n: int, split: str, seed: int) -> list[np.ndarray]:
    from fasterseg.data.synthetic import generate_scene

    return [generate_scene(seed, split, i, tuple(size))[0] for i in range(n)]


def _files(preset: str, root: str, split: str) -> list:
    """Image paths of ``split`` in name order (labels are not needed for calibration)."""
    from fasterseg.data import presets

    spec = None
    if preset == "folder":
        spec = presets.load_folder_spec(presets.folder_spec_path(root))
    disc = presets.discover(preset, root, split, spec)
    return [p for _, p in sorted(disc.images.items())]


def available_images(spec: str | None, split: str = "train") -> int | None:
    """How many real images ``split`` of ``spec`` holds (None: generated, unlimited)."""
    preset, root = ("synthetic", "") if spec is None else parse_calibration_spec(spec)
    return None if preset == "synthetic" else len(_files(preset, root, split))


def check_image_count(spec: str | None, split: str, requested: int) -> int:
    """The held-out images to measure agreement on: at most what ``split`` holds (a small
    split is measured whole, with a warning, rather than refused)."""
    have = available_images(spec, split)
    if have is not None and 0 < have < requested:
        logger.warning("agreement measured on all %d %s images (%d requested)", have, split,
                       requested)
        return have
    return requested


def tune_image_count(spec: str | None, split: str, calibration: int, wanted: int) -> int:
    """Extra calibration-split images for the int8 fp32-fallback search: ``wanted``, never more
    than the split holds beyond the ``calibration`` images (a small split: none, and the search
    measures on the calibration images, which the result says)."""
    have = available_images(spec, split)
    return wanted if have is None else max(0, min(wanted, have - calibration))


def calibration_images(
    spec: str | None,
    size: tuple[int, int],
    n: int,
    split: str = "train",
    seed: int = 0,
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """``n`` normalised ``[1, 3, H, W]`` fp32 images at ``size`` and where they came from.

    ``spec``: ``PRESET:ROOT`` (real images of ``split``, ``n`` of them drawn without replacement
    by ``seed``), ``synthetic`` or None (generated street scenes; None also logs a warning, since
    ranges calibrated on them fit a model trained on real data badly). Calibrate on ``train`` and
    check on ``val``: never the same images. Returns (images, info) with info ``source``,
    ``split``, ``images``, ``generated`` (and ``files``, the names used, for real data).
    """
    from fasterseg.config.data import DataConfig
    from fasterseg.data.io import read_image
    from fasterseg.data.transforms import normalize

    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise UserError(f"calibration size must be positive, got {size[0]}x{size[1]}")
    if int(n) < 1:
        raise UserError(f"the number of calibration images must be >= 1, got {n}")
    n = int(n)
    defaults = DataConfig()
    mean, std = defaults.mean, defaults.std
    preset, root = ("synthetic", "") if spec is None else parse_calibration_spec(spec)
    info: dict[str, Any] = {"source": spec or "generated", "split": split, "images": n,
                            "generated": preset == "synthetic"}
    if preset == "synthetic":
        if spec is None:
            logger.warning("int8 calibration on %d generated street scenes: give real images of "
                           "the model's dataset (--calibration-data %s) for accurate ranges",
                           n, EXAMPLE)
        raw = _generated(size, n, split, seed)
    else:
        files = _files(preset, root, split)
        if len(files) < n:
            raise UserError(f"calibration data {spec}: split {split!r} has {len(files)} images, "
                            f"{n} requested")
        pick = sorted(np.random.default_rng(seed).permutation(len(files))[:n].tolist())
        chosen = [files[i] for i in pick]
        info["files"] = [p.name for p in chosen]
        raw = [fit_to_size(read_image(p), size) for p in chosen]
    images = [normalize(im, mean, std)[None].contiguous() for im in raw]
    return images, info
