"""Write predictions: label PNGs (benchmark ids), colour maps and overlays on the input image.

Label PNGs use the dataset's original label ids when the label set maps train ids back (e.g.
Cityscapes trainId -> labelId, what the test server expects); otherwise the train ids as is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from fasterseg.utils.io import atomic_write

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _palette_array(palette: Sequence[Sequence[int]], n: int) -> np.ndarray:
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i, c in enumerate(list(palette)[:256]):
        pal[i] = [int(v) for v in c[:3]]
    if len(palette) < n:  # classes without a colour get a deterministic pseudo-random one
        rng = np.random.default_rng(0)
        pal[len(palette) : n] = rng.integers(0, 256, size=(n - len(palette), 3))
    return pal


def colorize_prediction(pred: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 colours (ids outside the palette are black)."""
    pal = _palette_array(palette, int(pred.max(initial=0)) + 1)
    return pal[np.clip(pred, 0, 255).astype(np.int64)]


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised [3,H,W] tensor -> HxWx3 uint8 RGB (for overlays)."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    rgb = (image.float().cpu() * s + m).clamp(0, 1) * 255
    return rgb.round().to(torch.uint8).permute(1, 2, 0).numpy()


def _save_png(path: Path, array: np.ndarray) -> None:
    img = Image.fromarray(array)
    atomic_write(path, lambda f: img.save(f, format="PNG"), mode="wb")


class PredictionWriter:
    """Callable ``(name, pred, image)`` that saves ``<name>.png`` (+ colour / overlay PNGs).

    Files go to ``out/labels``, ``out/color`` and ``out/overlay``; ``name`` may contain folders
    (kept, so names from different cities do not collide).
    """

    def __init__(
        self,
        out_dir: str | Path,
        palette: Sequence[Sequence[int]],
        *,
        train_id_to_label_id: Sequence[int] | dict | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        color: bool = True,
        overlay: bool = True,
        alpha: float = 0.5,
    ):
        self.out = Path(out_dir)
        self.palette = palette
        self.lut = None
        if train_id_to_label_id is not None:
            lut = np.arange(256, dtype=np.uint8)
            items = (
                train_id_to_label_id.items()
                if isinstance(train_id_to_label_id, dict)
                else enumerate(train_id_to_label_id)
            )
            for k, v in items:
                lut[int(k)] = int(v)
            self.lut = lut
        self.mean, self.std = mean, std
        self.color, self.overlay, self.alpha = color, overlay, alpha
        self.count = 0

    def _path(self, sub: str, name: str) -> Path:
        stem = Path(name)
        if stem.suffix.lower() in IMAGE_SUFFIXES:
            stem = stem.with_suffix("")
        parts = [p for p in stem.parts if p not in ("..", "/", "")]  # never escape out_dir
        rel = Path(*parts) if parts else Path(f"{self.count:06d}")
        return self.out / sub / rel.with_name(rel.name + ".png")

    def subdirs(self) -> list[Path]:
        """The folders this writer writes into (``out/labels``, ``out/color``, ``out/overlay``)."""
        subs = ["labels"] + (["color"] if self.color else []) + (["overlay"] if self.overlay else [])
        return [self.out / s for s in subs]

    def paths(self, name: str) -> list[Path]:
        """Every file ``self(name, ...)`` writes (for checks before anything is written)."""
        return [self._path(d.name, name) for d in self.subdirs()]

    def __call__(self, name: str, pred: np.ndarray, image: torch.Tensor | None = None) -> None:
        ids = pred.astype(np.uint8)
        if self.lut is not None:
            ids = self.lut[ids]
        _save_png(self._path("labels", name), ids)
        if self.color or self.overlay:
            col = colorize_prediction(pred, self.palette)
            if self.color:
                _save_png(self._path("color", name), col)
            if self.overlay and image is not None:
                rgb = denormalize(image, self.mean, self.std)
                a = self.alpha
                mix = (1 - a) * rgb.astype(np.float32) + a * col.astype(np.float32)
                _save_png(self._path("overlay", name), mix.round().astype(np.uint8))
        self.count += 1
