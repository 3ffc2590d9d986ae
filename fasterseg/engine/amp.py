"""Mixed precision: one autocast context for training and search (fp32 stays the reference).

``auto`` chooses per machine, because the faster choice differs: CPUs with native bf16
(AVX-512 BF16 / AMX) run bf16 convolutions about 2x faster than fp32, others run them slower.
The choice on a CPU is measured once (a few forward+backward passes of a small conv net in
both precisions) and cached per CPU model, thread count and torch version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import torch

from fasterseg.utils.io import cache_dir

logger = logging.getLogger(__name__)


def autocast(amp: str, device: torch.device):
    """``off`` -> no-op; ``bf16`` / ``fp16`` -> ``torch.autocast`` on the device's type."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _cache_path() -> Path:
    return cache_dir() / "amp_choice.json"


def _machine_key() -> str:
    from fasterseg.utils.environment import cpu_name

    return f"{cpu_name()}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def _time_step(amp: str, reps: int) -> float:
    """Median seconds of a forward+backward of a small conv net, like a segmentation step."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 32, 1))
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(4, 32, 64, 96).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        with autocast(amp, torch.device("cpu")):
            y = net(x)
        y.float().square().mean().backward()
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return times[len(times) // 2]


def measure_cpu_amp(reps: int = 5) -> dict:
    """Time fp32 and bf16 on this CPU; bf16 is chosen only when clearly (>= 10 %) faster."""
    fp32 = _time_step("off", reps)
    bf16 = _time_step("bf16", reps)
    choice = "bf16" if bf16 < 0.9 * fp32 else "off"
    return {"choice": choice, "fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16}


def resolve_amp(amp: str, device: torch.device, *, use_cache: bool = True) -> str:
    """Turn ``auto`` into ``off``/``bf16``/``fp16`` for ``device``; other values pass through."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu":
        return "off"
    key = _machine_key()
    path = _cache_path()
    cache: dict = {}
    if use_cache and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        if isinstance(cache.get(key), dict) and cache[key].get("choice") in ("off", "bf16"):
            return cache[key]["choice"]
    result = measure_cpu_amp()
    logger.info("amp auto: fp32 %.1f ms, bf16 %.1f ms per step on this CPU -> %s",
                1e3 * result["fp32_s"], 1e3 * result["bf16_s"],
                "bf16" if result["choice"] == "bf16" else "fp32")
    if use_cache:
        try:
            from fasterseg.utils.io import write_json

            path.parent.mkdir(parents=True, exist_ok=True)
            cache = cache if isinstance(cache, dict) else {}
            cache[key] = result
            write_json(path, cache)
        except OSError:
            pass  # an unwritable cache only costs a re-measurement next time
    return result["choice"]
