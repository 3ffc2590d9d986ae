"""Reading images and label maps with errors that name the file (never a bare traceback)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from fasterseg.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p)
            im.load()  # decode now, so a truncated file fails here and names itself
        return im
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise UserError(f"cannot read {what} {p}: {type(e).__name__}: {e}") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Image file -> ``[H, W, 3]`` uint8 RGB (grayscale, palette and alpha are converted)."""
    im = _open(path, "image")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Label file -> ``[H, W]`` integer array of the stored ids (palette PNGs give the indices).

    A colour (RGB) label is refused: labels must store one class id per pixel.
    """
    im = _open(path, "label")
    if im.mode in ("L", "P"):
        return np.asarray(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.int32)
    if im.mode == "1":
        return np.asarray(im).astype(np.uint8)
    if im.mode in ("LA", "PA"):
        return np.asarray(im)[..., 0]
    raise UserError(
        f"label {path} is a {im.mode} image: labels must be single-channel class ids "
        "(one value per pixel), not colour-coded"
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) from the file header only (cheap); UserError if the header is unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    return h, w


def write_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a uint8 label map as a single-channel PNG."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(label, dtype=np.uint8)).save(p)


def write_image_png(path: str | os.PathLike, image: np.ndarray) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(p)
