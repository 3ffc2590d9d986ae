"""Reading input photos for inference as 8-bit RGB, high bit depths included.

PIL's ``convert("RGB")`` clips 16-bit grayscale (mode ``I;16``/``I``) to 255, so such an image
would be read as all white, and float images (mode ``F``, e.g. TIFF) to near black. Here they are
scaled to 8 bits instead: 16-bit values by 255/65535 (32-bit integers too when they fit in 16
bits, else by their own maximum), floats in [0, 1] by 255 (other float ranges min-max scaled).
16-bit RGB PNGs are already reduced to 8 bits by PIL.
"""

from __future__ import annotations

import numpy as np

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

