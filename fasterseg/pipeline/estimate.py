"""Cost estimates printed before any work starts.

Two sources: for the demo, the stage times measured on the reference 2-core CPU scaled by a
short calibration workload run now; for real-scale pipelines, the configured iteration counts
times a measured forward+backward of the published networks at the configured crop (batch 1,
scaled by the batch size). Both are estimates: they say so and how they were made.
"""

from __future__ import annotations

import time
from pathlib import Path

from fasterseg.config.core import load_yaml
from fasterseg.config.pipeline import PipelineConfig
from fasterseg.pipeline.stages import Stage

# Seconds per stage of `fasterseg demo` on the reference machine (2-core Xeon; measured
# 2026-11-21, 344 s in all with a calibration factor of 1.28, divided by that factor).
REFERENCE_DEMO_SECONDS = {
    "lut": 7, "lut_check": 9, "search": 140, "derive": 3,
    "teacher": 32, "student_kd": 35, "student": 29,
    "eval_teacher": 3, "eval_student_kd": 3, "eval_student": 3,
    "bench_teacher": 5, "bench_student_kd": 5, "bench_student": 5,
}
REFERENCE_CALIBRATION_S = 0.25  # `calibration_seconds()` on the reference machine


def calibration_seconds() -> float:
    """A fixed small conv workload (forward + backward), best of 3."""
    import torch

    conv = torch.nn.Sequential(
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 32, 3, padding=1)
    )
    x = torch.randn(4, 32, 64, 128)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(5):
            conv(x).sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def _train_step_seconds(arch: str, crop: tuple[int, int], device: str = "cpu") -> float:
    """Forward + backward of one image at ``crop``: timed at <= 256x512, scaled by pixel count.

    Convolution cost grows linearly with pixels, so a small probe keeps the estimate itself
    cheap (seconds) even for 1024x2048 crops on a CPU.
    """
    import torch

    from fasterseg.models import create_model

    h, w = crop
    scale = 1.0
    while h * w > 256 * 512 and h % 64 == 0 and w % 64 == 0:
        h, w, scale = h // 2, w // 2, scale * 4
    model = create_model(arch).to(device).train()
    x = torch.randn(1, 3, h, w, device=device)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        sum(o.mean() for o in model(x)).backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[-1] * scale


def estimate_demo(stages: list[Stage]) -> tuple[dict[str, float], str]:
    factor = calibration_seconds() / REFERENCE_CALIBRATION_S
    est = {s.name: REFERENCE_DEMO_SECONDS.get(s.name, 10) * factor for s in stages}
    how = f"reference stage times x {factor:.2f} (calibration workload on this machine)"
    return est, how


def _effective(path: str, overrides: list[str], schema: type):
    """A stage's config (YAML + the pipeline's ``--set`` overrides) through its schema, so the
    estimate reads the values (and defaults) the stage will run with."""
    from fasterseg.config.core import apply_overrides, from_dict
    from fasterseg.pipeline.paths import resolve_preset

    p = Path(resolve_preset(path))
    data = load_yaml(p) if p.is_file() else {}
    return from_dict(schema, apply_overrides(data, overrides))


def estimate_pipeline(cfg: PipelineConfig, stages: list[Stage]) -> tuple[dict[str, float], str]:
    """Iterations x measured step time for training; the search as a multiple of a teacher step.

    The published teacher and student stand in for the networks the search will find. Every
    training stage (teacher, students, baseline, seed repeats, cross-sequence runs) is costed
    from its own run settings: same budget, same cost, whatever the stage is called.
    """
    import torch

    from fasterseg.config.search import SearchRunConfig
    from fasterseg.config.train import TrainRunConfig
    from fasterseg.pipeline.stages import train_runs

    device = cfg.device
    note = ""
    if device.startswith("cuda") and not torch.cuda.is_available():
        device, note = "cpu", " (CUDA is not available here: measured on this CPU, a GPU is far faster)"
    data_sets = cfg.data_overrides()
    measured: dict[tuple, float] = {}

    def step_seconds(arch: str, crop: tuple[int, int]) -> float:
        key = (arch, tuple(crop))
        if key not in measured:  # one probe per network and crop, however many stages use it
            measured[key] = _train_step_seconds(arch, tuple(crop), device)
        return measured[key]

    def train_cost(extra: list[str], arch: str, with_teacher: bool) -> tuple[float, float]:
        c = _effective(cfg.train.config, data_sets + extra, TrainRunConfig)
        t, crop = c.train, c.data.crop_size
        images = t.batch_size * t.accumulate  # per optimiser step
        step = step_seconds(arch, crop) * images
        if with_teacher:  # frozen teacher forward ~ 1/3 of its training step
            step += step_seconds("fasterseg_teacher", crop) * images / 3
        total = t.epochs * t.iters_per_epoch * step
        budget = t.time_budget_min
        return (min(total, 60 * budget) if budget else total), step

    runs = {r.name: r for r in train_runs(cfg)}
    est: dict[str, float] = {}
    steps: dict[str, float] = {}
    for s in stages:
        r = runs.get(s.name)
        if r is not None:
            # searched nets are not derived yet: the published one of the same role stands in
            stand_in = "fasterseg_teacher" if r.role == "teacher" else "fasterseg_student"
            arch = r.arch if not r.arch.endswith(".json") else stand_in
            est[s.name], step = train_cost(r.sets, arch, r.teacher)
            if r.name in ("teacher", "student"):
                steps[r.name] = step
        elif s.name == "search":
            c = _effective(cfg.search.config, data_sets + cfg.search.set, SearchRunConfig)
            sea = c.search.resolved()
            iters = sea.iters_per_epoch or sea.min_iters_per_epoch
            epochs = sea.pretrain_epochs + sea.search_epochs
            per_iter = step_seconds("fasterseg_teacher", sea.crop_size) * sea.batch_size * 24
            est[s.name] = epochs * iters * per_iter
        elif s.kind in ("eval", "bench", "derive"):
            est[s.name] = 30.0
        else:
            est[s.name] = 120.0
    how = ("published nets as stand-ins, measured fwd+bwd on " + device + ": "
           + ", ".join(f"{k} {v:.2f} s/iter" for k, v in steps.items())
           + "; a search iteration ~ 24 teacher passes (8 supernet passes, 5 ops per cell)" + note)
    return est, how


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
