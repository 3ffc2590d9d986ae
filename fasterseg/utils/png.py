"""PNG encoding of 8-bit images (grey, palette, RGB) with one fixed row filter.

Pillow's PNG encoder chooses a filter for every row by trying all five (adaptive filtering); on
``predict``'s outputs that costs more than the zlib pass itself. The "Up" filter alone (each row
minus the row above, one numpy subtraction) compresses label maps and palette images as well as
Pillow does and overlays within ~8 %, at a third (360x480 label map: 0.9 vs 2.7 ms) to a half
(overlay: 11 vs 21 ms) of the CPU time. The decoded pixels are the same; only the bytes differ.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = 2  # PNG filter type "Up"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def encode_png(a: np.ndarray, palette: bytes | None = None, *, level: int = 1,
               strategy: int = zlib.Z_RLE) -> bytes:
    """``a`` uint8 ``[H, W]`` (grey, or palette indices with ``palette``) or ``[H, W, 3]`` (RGB)
    -> PNG file bytes, rows "Up"-filtered, deflated at zlib ``level`` with ``strategy``.

    ``palette``: RGB triplets (``bytes``, a multiple of 3, at most 768); padded with black to 256
    entries so that every index has a colour.
    """
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"encode_png takes uint8 [H, W] or [H, W, 3], got {a.dtype} {a.shape}")
    if palette is not None and (a.ndim != 2 or len(palette) % 3 or len(palette) > 768):
        raise ValueError("a palette needs a [H, W] index image and at most 256 RGB entries")
    h, w = a.shape[:2]
    rows = a.reshape(h, -1)
    raw = np.empty((h, rows.shape[1] + 1), np.uint8)
    raw[:, 0] = _UP
    raw[:1, 1:] = rows[:1]  # the first row's "above" is zeros
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # uint8 wraps modulo 256, as PNG wants
    deflate = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    data = deflate.compress(raw) + deflate.flush()
    color_type = 3 if palette is not None else (2 if a.ndim == 3 else 0)
    parts = [_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))]
    if palette is not None:
        parts.append(_chunk(b"PLTE", bytes(palette) + bytes(768 - len(palette))))
    parts += [_chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    return b"".join(parts)
