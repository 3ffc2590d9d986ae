"""Video files in and out through PyAV (FFmpeg), an optional dependency (``fasterseg[video]``).

``predict`` takes video files next to images: frames are decoded one at a time (never the whole
clip in memory) as ``[H, W, 3]`` uint8 RGB with their index, and overlays can be encoded back
into a video. PyAV is imported only when a video is actually used, so image-only installs never
need it; without it, using a video is one ``UserError`` that says what to install.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fasterseg.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
INSTALL_HINT = "pip install 'fasterseg[video]'"
# encoders tried in order for each output container (the first one this FFmpeg build has)
_ENCODERS = {".webm": ("libvpx-vp9", "libvpx"), "": ("libx264", "h264", "mpeg4")}
_DEFAULT_FPS = 30.0


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file by its suffix (``.mp4 .avi .mov .mkv .webm``)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def require_av() -> Any:
    """The ``av`` module, or a one-line ``UserError`` with the install command."""
    try:
        import av
    except ImportError:
        raise UserError(f"video files need PyAV, which is not installed: {INSTALL_HINT}") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says; ``frames`` is None when the container does not store it."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int | None


def _rate(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return _DEFAULT_FPS


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's header (size, frame rate, frame count); one-line ``UserError`` when the
    file is missing, not a video, or has no video stream."""
    av = require_av()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"video not found: {p}")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise UserError(f"cannot read video {p}: it has no video stream")
            s = container.streams.video[0]
            ctx = s.codec_context
            return VideoInfo(p, int(ctx.width), int(ctx.height), _rate(s), int(s.frames) or None)
    except UserError:
        raise
    except Exception as e:  # av.error.* (InvalidDataError, ...), OSError
        raise UserError(f"cannot read video {p}: {type(e).__name__}: {e}") from None


def iter_frames(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, [H, W, 3] uint8 RGB)`` for every frame, decoded one at a time.

    FFmpeg decodes with its own threads (``thread_type="AUTO"``); a corrupt stream is a
    ``UserError`` that names the file and the frame it stopped at.
    """
    av = require_av()
    p = Path(path)
    index = 0
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise UserError(f"cannot read video {p}: it has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield index, frame.to_ndarray(format="rgb24")
                index += 1
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read video {p} at frame {index}: {type(e).__name__}: {e}") \
            from None


class VideoWriter:
    """Encode RGB frames into a video file, written atomically.

    Frames go to a temp file beside ``path`` that replaces ``path`` only on ``close()``;
    ``abort()`` (or an exception inside ``with``) removes it, so an interrupted run never leaves
    a truncated video behind. The codec is H.264 (``.mp4 .mov .mkv .avi``) or VP9 (``.webm``),
    falling back to MPEG-4 part 2 where the FFmpeg build lacks them. yuv420p needs even sizes:
    an odd last row or column is dropped. Frames of another size than the first are resized.
    """

    def __init__(self, path: str | os.PathLike, fps: float = _DEFAULT_FPS, crf: int = 23):
        self.av = require_av()
        self.path = Path(path)
        self.fps, self.crf = fps, crf
        self.codec: str | None = None
        self.frames = 0
        self._container: Any = None
        self._stream: Any = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None  # (H, W) of the encoded frames

    def _open(self, h: int, w: int) -> None:
        av = self.av
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".tmp{self.path.suffix}",
                                   dir=self.path.parent)
        os.close(fd)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; a video must be readable like any file
        self._tmp = Path(tmp)
        names = _ENCODERS.get(self.path.suffix.lower(), _ENCODERS[""]) + ("mpeg4",)
        codec = next((c for c in names if _has_encoder(av, c)), None)
        if codec is None:
            raise UserError(f"this FFmpeg build cannot encode {self.path.suffix} video "
                            f"(tried {', '.join(names)})")
        self._container = av.open(str(self._tmp), "w")
        rate = Fraction(self.fps).limit_denominator(1001)
        s = self._container.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec in ("libx264", "h264"):
            s.options = {"crf": str(self.crf), "preset": "veryfast"}
        elif codec.startswith("libvpx"):
            s.options = {"crf": str(self.crf + 8), "b:v": "0", "deadline": "realtime"}
        else:
            s.bit_rate = max(1_000_000, int(w * h * rate * 0.15))
        s.thread_type = "AUTO"
        self._stream, self._size, self.codec = s, (h, w), codec

    def write(self, rgb: np.ndarray) -> None:
        """Append one ``[H, W, 3]`` uint8 RGB frame."""
        if self._size is None:
            h, w = rgb.shape[0] & ~1, rgb.shape[1] & ~1
            if h < 2 or w < 2:
                raise UserError(f"frames of {rgb.shape[0]}x{rgb.shape[1]} are too small for a "
                                f"video ({self.path})")
            self._open(h, w)
        h, w = self._size
        if rgb.shape[:2] != (h, w):
            if rgb.shape[0] in (h, h + 1) and rgb.shape[1] in (w, w + 1):
                rgb = rgb[:h, :w]
            else:
                from PIL import Image

                rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush the encoder and move the finished file into place (None if no frame came)."""
        if self._container is None:
            return None
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the partial video (its temp file); ``path`` stays as it was."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _has_encoder(av: Any, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True
