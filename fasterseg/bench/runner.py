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
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from fasterseg.errors import UserError
from fasterseg.latency.backends import (
    Runner,
    device_name,
    library_versions,
    prepare,
    set_threads,
    time_for,
    warm_until_steady,
)

if TYPE_CHECKING:
    from fasterseg.deploy.predictor import Predictor

logger = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    size: tuple[int, int] = (1024, 2048)
    device: str = "cpu"
    backend: str = "torch"  # torch | compile | jit | onnxruntime | tensorrt | openvino
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (int8 and OpenVINO: pass a deploy ``predictor``)
    channels_last: bool = False
    fuse_bn: bool = False
    threads: int | None = None
    seconds: float = 6.0
    max_warmup_seconds: float | None = None  # default: max(2 s, seconds)


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


def benchmark(
    model: nn.Module, settings: BenchSettings, complexity: dict | None = None,
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    """Time ``model`` as described in the module docstring; returns a JSON-ready dict.

    ``predictor``: a path of ``model`` already prepared by ``fasterseg.deploy`` (int8, OpenVINO,
    the ``--auto`` choice) to time instead of preparing one from ``settings`` (whose size, device,
    threads and seconds still apply).
    """
    s = settings
    dev = torch.device(s.device)
    if s.backend == "compile" and s.dtype == "fp16" and dev.type == "cpu":
        logger.warning("fp16 on CPU is slow and poorly supported; prefer fp32 or bf16")
    threads = set_threads(s.threads) if dev.type == "cpu" else torch.get_num_threads()
    if complexity is None:
        complexity = model_complexity(model, s.size)
    x = torch.randn(1, 3, *s.size, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    if predictor is not None:
        runner = Runner(lambda: predictor(x), dev, predictor.name)
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
        "backend": predictor.backend if predictor is not None else s.backend,
        "dtype": predictor.dtype if predictor is not None else s.dtype,
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
