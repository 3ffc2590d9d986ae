"""Streaming prediction: decode, infer and write in three overlapped stages.

``predict`` is only as fast as its slowest stage, and with one loop the stages add up: on CamVid
frames (360x480) decoding a PNG, encoding two or three PNGs and the network take similar times.
Here a reader thread decodes images (or video frames) into normalised, padded tensors, the main
thread runs the network (one call per frame, one prepared model per padded input size; or hands
frames to ``workers`` threads, each call with a share of the threads, two frames at once on
2 cores) and a writer thread writes label PNGs, palette colour PNGs, overlays and an overlay
video. Bounded queues keep memory flat; decoding (Pillow, FFmpeg; libspng keeps the GIL for its
~4.5 ms), the network (torch, onnxruntime) and PNG encoding (zlib, ISA-L) release the GIL, so the
stages really run side by side.

Stopping is clean whatever happens: an error in any stage or Ctrl-C stops all three, the threads
are joined, and every file is written atomically (temp file + rename), so there is never a
half-written PNG or video. Timings say where the time goes: end-to-end frames per second (first
read to last write) next to the median model-only, decode, normalise, argmax and write times.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import statistics
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from fasterseg.deploy.predictor import Predictor
from fasterseg.errors import UserError
from fasterseg.evaluation.inference import MIN_SIZE, STRIDE
from fasterseg.evaluation.predictions import PredictionWriter, _palette_array

logger = logging.getLogger(__name__)

QUEUE_FRAMES = 4  # frames buffered between stages: enough to absorb jitter, little memory
_POLL_S = 0.05  # how often a blocked stage looks whether the others stopped


@dataclass(frozen=True)
class Source:
    """One input: an image file, or a video whose frames are named ``<name>_<frame:06d>``."""

    path: Path
    name: str
    video: bool = False


def padded_size(h: int, w: int) -> tuple[int, int]:
    """The size ``pad_to_multiple(min_size=MIN_SIZE)`` pads an ``h x w`` image to."""
    lo = -(-MIN_SIZE // STRIDE) * STRIDE
    return max(-(-h // STRIDE) * STRIDE, lo), max(-(-w // STRIDE) * STRIDE, lo)


class Normalizer:
    """uint8 ``[H, W, 3]`` RGB -> normalised fp32 ``[1, 3, H', W']``, padded with zeros (the mean
    colour) right/bottom to the network's multiple of 32 (``pad=False``: not padded).

    The values are the evaluation's (``(x - 255 mean) / (255 std)`` in fp32, bit for bit), but
    a uint8 channel has only 256 of them: a 256-entry table per channel is computed once and each
    channel is one table lookup (``np.take``) written straight into the padded buffer. One pass,
    no temporary, single-threaded (torch's ops here would start an OpenMP team in the reader
    thread): 1.6 ms instead of 3.8 ms for the two arithmetic passes on a 360x480 frame.
    ``channels_last`` lays the buffer out NHWC, what TorchScript/oneDNN paths want (no relayout
    before the first convolution).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, pad: bool = True,
                 channels_last: bool = False) -> None:
        self.shift = (torch.tensor(mean, dtype=torch.float32) * 255).numpy()
        self.scale = (1.0 / (torch.tensor(std, dtype=torch.float32) * 255)).numpy()
        self.pad, self.channels_last = pad, channels_last
        values = np.arange(256, dtype=np.float32)[None, :]
        self.table = (values - self.shift[:, None]) * self.scale[:, None]  # [3, 256] fp32

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        h, w = rgb.shape[:2]
        hp, wp = padded_size(h, w) if self.pad else (h, w)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = torch.empty(1, 3, hp, wp, memory_format=fmt)
        x[..., h:, :].zero_()  # the padding: zero is the mean colour after normalisation
        x[..., :h, w:].zero_()
        chw = x[0].numpy()[:, :h, :w]  # a view of the buffer
        if rgb.dtype != np.uint8:  # not from the decoders; the same arithmetic, two passes
            hwc = chw.transpose(1, 2, 0)
            np.subtract(rgb, self.shift, out=hwc)
            np.multiply(hwc, self.scale, out=hwc)
            return x
        for c in range(3):  # indices are uint8, never out of range: "clip" skips the checks
            np.take(self.table[c], rgb[..., c], out=chw[c], mode="clip")
        return x


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` scores -> ``[H, W]`` class ids (uint8, int32 above 256 classes): exactly
    ``logits.argmax(0)`` (the first maximum on ties, the first NaN where there is one).

    numpy's argmax over the outer axis of a channel-first array walks it with a stride of one
    whole channel, 8 ms for 11 classes at 360x480; a running maximum over the channels (three
    contiguous passes per class) takes 2.5-3 ms. Channel-last scores (TorchScript's NHWC
    output) are contiguous along the classes already: numpy's argmax is the fast way there.
    """
    n = logits.shape[0]
    out_type = np.uint8 if n <= 256 else np.int32
    if n > 256 or n < 2 or abs(logits.strides[0]) < abs(logits.strides[-1]):
        return logits.argmax(0).astype(out_type)
    best = logits[0].copy()
    ids = np.zeros(best.shape, np.uint8)
    above = np.empty(best.shape, bool)
    for k in range(1, n):
        np.greater(logits[k], best, out=above)  # strictly greater: ties keep the first class
        np.maximum(best, logits[k], out=best)  # NaN propagates into best ...
        np.copyto(ids, k, where=above)
    if np.isnan(best).any():  # ... where argmax's answer is the first NaN: let numpy say it
        return logits.argmax(0).astype(out_type)
    return ids


class EagerPredictor:
    """The model as loaded (PyTorch eager fp32): the reference path, for any input size."""

    name, backend, dtype = "eager-fp32", "torch", "fp32"

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model.eval(), torch.device(device)
        self.info: dict[str, Any] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(x.to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def save(self, path: str | Path) -> None:
        return None


class Segmenter:
    """Normalised frame -> ``[H, W]`` class ids, timed; the model stage.

    ``build(size)`` prepares a ``Predictor`` for one padded size (TorchScript and compiled
    engines are shape-specialised); each is built once and cached. With ``tta`` (flip, scales,
    window) the eager model runs through ``infer_image`` on the unpadded frame instead.

    ``workers``: frames in the network at once, each call in its own thread on one shared
    predictor (built with the threads split among them; only for predictors whose calls may
    overlap: torch and onnxruntime). On few cores this beats one call with all the threads: a
    batch-1 network at 384x480 keeps two threads busy only part of the time, and the argmax
    then runs beside the next frame's network instead of between them.
    """

    def __init__(self, build: Callable[[tuple[int, int]], Predictor] | None,
                 device: torch.device, tta: dict[str, Any] | None = None,
                 model: torch.nn.Module | None = None, workers: int = 1) -> None:
        self.build, self.device, self.tta, self.model = build, torch.device(device), tta, model
        self.workers = max(1, int(workers))
        self.cache: dict[tuple[int, int], Predictor] = {}
        self.prepare_s = 0.0
        self._lock = threading.Lock()

    def predictor(self, size: tuple[int, int]) -> Predictor:
        with self._lock:  # workers may meet a new size at the same time: build it once
            p = self.cache.get(size)
            if p is None:
                t = time.perf_counter()
                p = self.cache[size] = self.build(size)
                self.prepare_s += time.perf_counter() - t
        return p

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, float, float]:
        """(ids, model seconds, argmax seconds) for one frame ``x`` of original ``size``."""
        h, w = size
        if self.tta is not None:
            from fasterseg.evaluation import inference

            t0 = time.perf_counter()
            probs = inference.infer_image(self.model, x.to(self.device), **self.tta)
            self._sync()
            t1 = time.perf_counter()
            scores = probs
        else:
            pred = self.predictor(tuple(x.shape[-2:]))
            t0 = time.perf_counter()
            logits = pred(x)
            self._sync()
            t1 = time.perf_counter()
            scores = logits[0, :, :h, :w]
        if scores.device.type == "cpu":  # numpy: 3x (NCHW) / 6x (NHWC) faster than torch here
            ids = argmax_labels(scores.numpy())
        else:
            n = scores.shape[0]
            ids = scores.argmax(0).to(torch.uint8 if n <= 256 else torch.int32).cpu().numpy()
        return ids, t1 - t0, time.perf_counter() - t1


class StreamWriter(PredictionWriter):
    """``PredictionWriter``'s files, written fast: label PNG (benchmark ids), colour PNG as a
    palette image (one byte per pixel instead of three), overlay blended in integers from the
    decoded uint8 frame (no de-normalisation), PNGs "Up"-filtered at level 1, deflated by ISA-L
    when installed, else zlib's run-length strategy (``fasterseg.utils.png``: the same pixels as
    Pillow's PNGs at a tenth / a third of its CPU), atomic without a per-file fsync. Optionally
    every overlay also goes into a video (``video``).
    """

    def __init__(self, out_dir: str | Path, palette: Sequence[Sequence[int]], num_classes: int,
                 *, video: Any = None, compress_level: int = 1, deflate: str = "auto",
                 **kw: Any) -> None:
        super().__init__(out_dir, palette, **kw)
        self.pal = _palette_array(palette, max(num_classes, len(palette)))
        self.pal_bytes = self.pal[:256].tobytes()
        self.video, self.compress_level, self.deflate = video, compress_level, deflate
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.blend = int(round(self.alpha * 256))

    def _save(self, path: Path, img: np.ndarray, palette: bytes | None = None) -> None:
        from fasterseg.utils.io import atomic_write
        from fasterseg.utils.png import encode_png

        data = encode_png(img, palette, level=self.compress_level, strategy=zlib.Z_RLE,
                          deflate=self.deflate)
        atomic_write(path, lambda f: f.write(data), mode="wb", fsync=False)

    def write(self, name: str, ids: np.ndarray, rgb: np.ndarray | None) -> None:
        """Save the files of one frame: ``ids`` ``[H, W]`` class ids, ``rgb`` the input frame."""
        ids8 = ids if ids.dtype == np.uint8 else np.clip(ids, 0, 255).astype(np.uint8)
        n = len(self.counts)
        self.counts += np.bincount(ids8.ravel(), minlength=n)[:n]
        self._save(self._path("labels", name), self.lut[ids8] if self.lut is not None else ids8)
        if self.color:  # a palette PNG: viewers show the colours
            self._save(self._path("color", name), ids8, self.pal_bytes)
        if (self.overlay or self.video is not None) and rgb is not None:
            col = self.pal[ids8].astype(np.uint16)
            mix = ((rgb.astype(np.uint16) * (256 - self.blend) + col * self.blend + 128) >> 8)
            mix = mix.astype(np.uint8)
            if self.overlay:
                self._save(self._path("overlay", name), mix)
            if self.video is not None:
                self.video.write(mix)
        self.count += 1


@dataclass
class Frame:
    name: str
    source: Path
    rgb: np.ndarray
    x: torch.Tensor
    note: str | None = None


@dataclass
class Skip:
    source: Path
    reason: str


@dataclass
class StreamResult:
    """What ``run_stream`` measured: ``images`` written, end-to-end rate and stage medians."""

    images: int = 0
    wall_s: float = 0.0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    scaled: list[tuple[Path, str]] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=lambda: {
        "decode": [], "normalize": [], "model": [], "argmax": [], "write": []})

    @property
    def fps_end_to_end(self) -> float | None:
        return self.images / self.wall_s if self.images and self.wall_s > 0 else None

    def median_ms(self, stage: str) -> float | None:
        t = self.times[stage]
        return round(1000 * statistics.median(t), 3) if t else None

    def stage_ms(self) -> dict[str, float | None]:
        return {k: self.median_ms(k) for k in self.times}

    def bottleneck(self) -> str | None:
        """The stage with the largest median time per frame (reader = decode + normalise)."""
        ms = self.stage_ms()
        stages = {"read": (ms["decode"] or 0) + (ms["normalize"] or 0),
                  "model": (ms["model"] or 0) + (ms["argmax"] or 0), "write": ms["write"] or 0}
        return max(stages, key=stages.get) if self.images else None


_END = object()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return None


def _result(frame: Frame, fut: Future, stop: threading.Event) -> tuple[Frame, Any]:
    """``frame`` and its worker's result (its exception raised here); waits in short steps, so
    Ctrl-C reaches the main thread, and gives up (result None) once the stream stops."""
    while True:
        try:
            return frame, fut.result(timeout=_POLL_S)
        except TimeoutError:
            if stop.is_set():
                return frame, None


def _decode(sources: Sequence[Source], skip_unreadable: bool
            ) -> Iterator[tuple[str, Path, np.ndarray, str | None] | Skip]:
    """(name, source, RGB, note) per image or video frame; Skip for an unreadable input when
    ``skip_unreadable`` (else its one-line error)."""
    from fasterseg.data.io import _open
    from fasterseg.evaluation.images import to_rgb8
    from fasterseg.utils.png import read_rgb8

    hint = " (pass --skip-unreadable to skip such files)"
    for src in sources:
        try:
            if src.video:
                from fasterseg.data.video import iter_frames

                with contextlib.closing(iter_frames(src.path)) as frames:
                    for i, rgb in frames:
                        yield f"{src.name}_{i:06d}", src.path, rgb, None
            else:  # libspng for 8-bit RGB PNGs when installed (half the CPU), else Pillow
                rgb = read_rgb8(src.path) if src.path.suffix.lower() == ".png" else None
                rgb, note = (rgb, None) if rgb is not None else to_rgb8(_open(src.path, "image"))
                yield src.name, src.path, rgb, note
        except UserError as e:
            if not skip_unreadable:
                raise UserError(f"{e}{hint}") from None
            yield Skip(src.path, str(e))


def run_stream(
    sources: Sequence[Source],
    normalize: Normalizer,
    segment: Segmenter,
    writer: StreamWriter,
    *,
    skip_unreadable: bool = False,
    total: int | None = None,
    progress: bool | None = None,
    queue_frames: int = QUEUE_FRAMES,
) -> StreamResult:
    """Predict every image / video frame of ``sources`` and write it; returns the timings.

    Reader thread -> (bounded queue) -> ``segment`` in the calling thread (or, with
    ``segment.workers`` > 1, that many frames at once in worker threads, taken back in order)
    -> (bounded queue) -> writer thread. The first error of any stage (or Ctrl-C in the calling thread) stops all
    three; threads are joined before it is raised again. ``total`` sizes the progress bar
    (tqdm, on stderr, off when it is not a terminal unless ``progress``).
    """
    import sys

    from tqdm import tqdm

    res = StreamResult()
    stop = threading.Event()
    errors: list[BaseException] = []
    frames_q: queue.Queue = queue.Queue(maxsize=queue_frames)
    write_q: queue.Queue = queue.Queue(maxsize=queue_frames)
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    bar = tqdm(total=total, unit="frame", desc="predict", disable=disable, leave=False,
               dynamic_ncols=True)
    clock = {"first_read": None, "last_write": None}

    def fail(e: BaseException) -> None:
        errors.append(e)
        stop.set()

    def reader() -> None:
        try:
            clock["first_read"] = time.perf_counter()
            items = _decode(sources, skip_unreadable)
            with contextlib.closing(items):
                while not stop.is_set():
                    t0 = time.perf_counter()
                    item = next(items, _END)
                    if item is _END:
                        break
                    if isinstance(item, Skip):
                        res.skipped.append((item.source, item.reason))
                        continue
                    name, path, rgb, note = item
                    t1 = time.perf_counter()
                    x = normalize(rgb)
                    res.times["decode"].append(t1 - t0)
                    res.times["normalize"].append(time.perf_counter() - t1)
                    if note:
                        res.scaled.append((path, note))
                    if not _put(frames_q, Frame(name, path, rgb, x, note), stop):
                        return
            _put(frames_q, _END, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            fail(e)

    def write() -> None:
        try:
            while True:
                item = _get(write_q, stop)
                if item is None or item is _END:
                    return
                name, ids, rgb = item
                t0 = time.perf_counter()
                writer.write(name, ids, rgb)
                t1 = time.perf_counter()
                res.times["write"].append(t1 - t0)
                res.images += 1
                clock["last_write"] = t1
                bar.update(1)
        except OSError as e:
            fail(UserError(f"cannot write predictions to {writer.out}: "
                           f"{e.strerror or type(e).__name__}"
                           + (f" ({e.filename})" if e.filename else "")))
        except BaseException as e:  # noqa: BLE001
            fail(e)

    def done(frame: Frame, result: tuple[np.ndarray, float, float] | None) -> bool:
        if result is None:  # the stream stopped while this frame was in the network
            return False
        ids, model_s, argmax_s = result
        res.times["model"].append(model_s)
        res.times["argmax"].append(argmax_s)
        return _put(write_q, (frame.name, ids, frame.rgb), stop)

    threads = [threading.Thread(target=reader, name="predict-reader", daemon=True),
               threading.Thread(target=write, name="predict-writer", daemon=True)]
    for t in threads:
        t.start()
    workers = getattr(segment, "workers", 1)
    pool = (ThreadPoolExecutor(workers, thread_name_prefix="predict-model")
            if workers > 1 else None)
    pending: collections.deque[tuple[Frame, Future]] = collections.deque()
    try:
        while True:
            frame = _get(frames_q, stop)
            if frame is None or frame is _END:
                break
            size = frame.rgb.shape[:2]
            if pool is None:
                if not done(frame, segment(frame.x, size)):
                    break
                continue
            pending.append((frame, pool.submit(segment, frame.x, size)))
            # frames leave in their order (a video's overlays must): wait for the oldest
            if len(pending) >= workers and not done(*_result(*pending.popleft(), stop)):
                break
        while pending and not stop.is_set():
            if not done(*_result(*pending.popleft(), stop)):
                break
        _put(write_q, _END, stop)
        threads[1].join()  # the writer drains its queue, then ends
    except BaseException:
        stop.set()  # Ctrl-C or an error here: the other stages stop after their current frame
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # a running call ends, none starts
        for t in threads:
            t.join()
        bar.close()
    if errors:
        raise errors[0]
    if clock["first_read"] is not None and clock["last_write"] is not None:
        res.wall_s = clock["last_write"] - clock["first_read"]
    return res
