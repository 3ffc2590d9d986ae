"""End-to-end inference benchmark (paper section 4: batch 1, whole image, FPS).

Method: the model on the device in eval mode, batch 1, a random input of the given size; warm-up
until two consecutive windows of runs agree within 5 % (caches, allocator, JIT/compile, clocks);
then timed runs for ``seconds`` (the authors timed ~6 s). Reported: the median latency and its
inter-quartile range, FPS = 1000 / median, MACs and parameters of the model, and every setting
that changes the number (device, threads, back end, dtype, memory format, library versions).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from fasterseg.errors import UserError
from fasterseg.latency.backends import (
    device_name,
    library_versions,
    prepare,
    set_threads,
    time_for,
    warm_until_steady,
)

logger = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    size: tuple[int, int] = (1024, 2048)
    device: str = "cpu"
    backend: str = "torch"  # torch | compile | onnxruntime | tensorrt
    dtype: str = "fp32"  # fp32 | bf16 | fp16 | int8 (torch back end on CPU: static PTQ)
    channels_last: bool = False
    fuse_bn: bool = False
    threads: int | None = None
    seconds: float = 6.0
    max_warmup_seconds: float | None = None  # default: max(2 s, seconds)
    calibration_images: int = 8  # int8: generated street scenes to calibrate on
    keep_fp32: tuple[str, ...] = ()  # int8: trunk modules left in fp32 (accuracy vs speed)
    observer: str = "histogram"  # int8: activation range calibration (histogram | minmax)
    bias_correction: bool = True  # int8: per-class logit offset fitted on the calibration set


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 100])."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def prepare_model(model: nn.Module, settings: BenchSettings) -> nn.Module:
    """Eval mode, optional BN folding (weights stay fp32 here; the back end casts)."""
    model = model.eval()
    if settings.fuse_bn:
        from fasterseg.bench.fuse import fuse_conv_bn

        model = fuse_conv_bn(model)
    return model


def prepare_int8(model: nn.Module, settings: BenchSettings) -> tuple[nn.Module, dict[str, Any]]:
    """Quantize ``model`` to int8 at ``settings.size`` (``fasterseg.bench.quantize``).

    Also returns the share of pixels whose predicted class equals the fp32 model's on a held-out
    generated scene (``agreement``), so a fast but wrong int8 model cannot pass unnoticed.
    """
    from fasterseg.bench.quantize import calibration_images, int8_available, quantize_int8

    s = settings
    if s.backend != "torch" or torch.device(s.device).type != "cpu":
        raise UserError("--dtype int8 runs on the torch back end with --device cpu only")
    engine = int8_available()
    if engine is None:
        raise UserError("this torch build has no quantized CPU engine; --dtype int8 is unavailable")
    if s.calibration_images < 1:
        raise UserError("--calibration-images must be >= 1")
    model = model.eval()
    calib = calibration_images(s.size, s.calibration_images, seed=0)
    t0 = time.perf_counter()
    try:
        qmodel = quantize_int8(model, s.size, calib, engine=engine, keep_fp32=s.keep_fp32,
                               observer=s.observer, bias_correction=s.bias_correction)
    except ValueError as e:
        if "keep_fp32" not in str(e):
            raise
        raise UserError(f"--keep-fp32: {str(e).split(': ', 1)[1]}") from None
    calib_s = time.perf_counter() - t0
    (probe,) = calibration_images(s.size, 1, seed=0, split="val")  # not a calibration scene
    with torch.inference_mode():
        agree = (qmodel(probe).argmax(1) == model(probe).argmax(1)).float().mean().item()
    info = {"quant_engine": engine, "calibration_images": len(calib),
            "keep_fp32": list(s.keep_fp32), "observer": s.observer,
            "bias_correction": s.bias_correction,
            "calibration_s": calib_s, "agreement": agree}
    return qmodel, info


def benchmark(
    model: nn.Module, settings: BenchSettings, complexity: dict | None = None
) -> dict[str, Any]:
    """Time ``model`` as described in the module docstring; returns a JSON-ready dict."""
    s = settings
    dev = torch.device(s.device)
    if s.backend == "compile" and s.dtype == "fp16" and dev.type == "cpu":
        logger.warning("fp16 on CPU is slow and poorly supported; prefer fp32 or bf16")
    threads = set_threads(s.threads) if dev.type == "cpu" else torch.get_num_threads()
    if complexity is None:
        complexity = model_complexity(model, s.size)
    x = torch.randn(1, 3, *s.size, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if s.dtype == "int8":
        model, extra = prepare_int8(model, s)
        runner = prepare(model, [x], "torch", dev, "fp32", threads, False)
    else:
        model = prepare_model(model, s)
        runner = prepare(model, [x], s.backend, dev, s.dtype, threads, s.channels_last)
    first = time.perf_counter()
    runner.run()  # compilation / engine build / first allocation happen here
    first_ms = (time.perf_counter() - first) * 1e3
    prep_s = time.perf_counter() - t0
    max_warm = s.max_warmup_seconds if s.max_warmup_seconds is not None else max(2.0, s.seconds)
    warm = warm_until_steady(runner, max_seconds=max_warm)
    times = time_for(runner, s.seconds)
    med = statistics.median(times)
    p25, p75 = percentile(times, 25), percentile(times, 75)
    return {
        "latency_ms": med,
        "fps": 1000.0 / med,
        "iqr_ms": p75 - p25,
        "p25_ms": p25,
        "p75_ms": p75,
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "runs": len(times),
        "warmup_runs": warm + 1,
        "first_run_ms": first_ms,
        "prepare_s": prep_s,
        "backend": s.backend,
        "dtype": s.dtype,
        "channels_last": s.channels_last,
        "fuse_bn": s.fuse_bn,
        "device": str(dev),
        "device_name": device_name(dev),
        "threads": threads,
        "batch": 1,
        "size": list(s.size),
        "seconds": s.seconds,
        "macs": complexity.get("macs"),
        "params": complexity.get("params_inference"),
        "params_total": complexity.get("params_total"),
        "versions": library_versions(),
        **extra,
    }


def model_complexity(model: nn.Module, size: Sequence[int]) -> dict:
    """MACs / params via ``fasterseg.utils.complexity`` (inference-only params reported)."""
    try:
        from fasterseg.utils.complexity import count_complexity
    except ImportError:  # pragma: no cover - the module ships with the package
        n = sum(p.numel() for p in model.parameters())
        return {"macs": None, "params_total": n, "params_inference": n}
    return count_complexity(model, tuple(size))


def load_bench_model(spec: str, num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """NAME | ARCH.json | CKPT.pt -> (model on CPU, info); errors are one-line ``UserError``s."""
    from fasterseg.models import load_model

    try:
        return load_model(spec, num_classes=num_classes, device="cpu")
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"cannot build a model from {spec!r}: {e}") from None
