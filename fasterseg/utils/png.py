"""PNG encoding of 8-bit images (grey, palette, RGB) with one fixed row filter, and a fast
decoder for 8-bit RGB PNGs.

Pillow's PNG encoder chooses a filter for every row by trying all five (adaptive filtering); on
``predict``'s outputs that costs more than the zlib pass itself. The "Up" filter alone (each row
minus the row above, one numpy subtraction) compresses label maps and palette images as well as
Pillow does and overlays within ~8 %, at a third (360x480 label map: 0.9 vs 2.7 ms) to a half
(overlay: 11 vs 21 ms) of the CPU time. The decoded pixels are the same; only the bytes differ.

The deflate pass is then most of the cost. zlib's level does not matter with the run-length
strategy (CamVid val overlays, 360x480, ``benchmarks/predict_stream.py --io-ab``: 237 KiB at
every level 1..6, 10.5-10.8 ms CPU for the whole encode; the default strategy gives 241-223 KiB
at 12.9-62.8 ms), so the level is not an option. ISA-L's deflate (``isal``, optional) writes it
at level 1 in 3.3 ms (243 KiB), so ``deflate="auto"`` uses it when it is installed. Decoding:
libspng (``pyspng``, optional) reads an 8-bit RGB PNG in about half of Pillow's CPU time (4.5 vs
8.2 ms), the same pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

try:  # optional: pip install 'fasterseg[fast-png]'
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - depends on the environment
    _isal = None

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = 2  # PNG filter type "Up"
Deflate = Literal["auto", "zlib", "isal"]


def deflate_engine(deflate: Deflate = "auto") -> str:
    """The deflate implementation ``encode_png`` runs for ``deflate``: ``isal`` (when installed
    and asked for or ``auto``) or ``zlib``."""
    if deflate not in ("auto", "zlib", "isal"):
        raise ValueError(f"deflate must be auto, zlib or isal, got {deflate!r}")
    if deflate == "isal" and _isal is None:
        raise ValueError("deflate='isal' needs the isal package (pip install isal)")
    return "isal" if deflate != "zlib" and _isal is not None else "zlib"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def encode_png(a: np.ndarray, palette: bytes | None = None, *, level: int = 1,
               strategy: int = zlib.Z_RLE, deflate: Deflate = "auto") -> bytes:
    """``a`` uint8 ``[H, W]`` (grey, or palette indices with ``palette``) or ``[H, W, 3]`` (RGB)
    -> PNG file bytes, rows "Up"-filtered, deflated at ``level`` (zlib: with ``strategy``;
    ISA-L: levels 0..3, higher ones run as 3, no strategy) by ``deflate_engine(deflate)``.

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
    if deflate_engine(deflate) == "isal":
        packer = _isal.compressobj(min(int(level), 3), zlib.DEFLATED, 15, 9)
    else:
        packer = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    data = packer.compress(raw) + packer.flush()
    color_type = 3 if palette is not None else (2 if a.ndim == 3 else 0)
    parts = [_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))]
    if palette is not None:
        parts.append(_chunk(b"PLTE", bytes(palette) + bytes(768 - len(palette))))
    parts += [_chunk(b"IDAT", data), _chunk(b"IEND", b"")]
    return b"".join(parts)


def read_rgb8(path: str | Path) -> np.ndarray | None:
    """An 8-bit RGB PNG file as ``[H, W, 3]`` uint8, decoded by libspng (``pyspng``); None for
    anything else (another format or depth, an unreadable file, one over Pillow's pixel limit,
    pyspng not installed), which the caller then reads with Pillow as before, errors included.
    Meant for a reader thread: libspng keeps the GIL while it decodes (Pillow does not)."""
    try:
        import pyspng
        from PIL import Image
    except ImportError:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) < 33 or data[:8] != _SIGNATURE or data[12:16] != b"IHDR":
        return None
    w, h, depth, color_type = struct.unpack(">IIBB", data[16:26])
    limit = Image.MAX_IMAGE_PIXELS
    if depth != 8 or color_type != 2 or (limit is not None and w * h > limit):
        return None
    try:
        rgb = pyspng.load(data)
    except Exception:  # noqa: BLE001 - a damaged file: Pillow says what is wrong with it
        return None
    return rgb if rgb.dtype == np.uint8 and rgb.shape == (h, w, 3) else None
