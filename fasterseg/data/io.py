"""Reading images and label maps with errors that name the file (never a bare traceback).

Images are 8-bit RGB for every reader (training, evaluation, prediction). PIL's
``convert("RGB")`` clips 16-bit grayscale (mode ``I;16``/``I``) to 255, so such an image would be
read as all white, and float images (mode ``F``, e.g. TIFF) to near black. ``to_rgb8`` scales
them to 8 bits instead: 16-bit values by 255/65535 (32-bit integers too when they fit in 16 bits,
else by their own maximum), floats in [0, 1] by 255 (other float ranges min-max scaled). 16-bit
RGB PNGs are already reduced to 8 bits by PIL.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from fasterseg.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger(__name__)
_NOTED: set[str] = set()  # depth conversions already logged by this process

_16BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S")


def to_rgb8(im) -> tuple[np.ndarray, str | None]:
    """PIL image -> (``[H, W, 3]`` uint8 RGB, note) where note says how the depth was scaled."""
    note = None
    if im.mode in _16BIT or im.mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if a.ndim == 3:  # e.g. a 16-bit image with several channels: first one
            a = a[..., 0]
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if im.mode == "F":
            if lo >= 0 and hi <= 1:
                scale, note = 255.0, "float image in [0, 1] scaled to 8 bits"
            else:
                a = a - lo
                scale = 255.0 / (hi - lo) if hi > lo else 0.0
                note = f"float image (range {lo:g}..{hi:g}) min-max scaled to 8 bits"
        elif im.mode in _16BIT or hi <= 65535:
            scale = 255.0 / 65535 if (im.mode in _16BIT or hi > 255) else 1.0
            note = "16-bit image scaled to 8 bits" if scale != 1.0 else None
        else:
            scale = 255.0 / hi
            note = f"32-bit image (max {hi:g}) scaled to 8 bits"
        g = np.clip(np.round(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2), note
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im), note


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
    """Image file -> ``[H, W, 3]`` uint8 RGB (grayscale, palette and alpha are converted; high
    bit depths scaled to 8 bits, see ``to_rgb8``, and said once per kind)."""
    rgb, note = to_rgb8(_open(path, "image"))
    kind = note.split(" (")[0] if note else None
    if kind and kind not in _NOTED:
        _NOTED.add(kind)
        logger.info("%s: %s (and any other such image)", path, note)
    return rgb


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
