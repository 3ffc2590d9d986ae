"""``results.json`` of a pipeline: the numbers other tools read, and the accuracy-latency plot.

Contract keys (mIoU as fractions in [0, 1]): ``best_student_val_miou``, ``min_class_iou`` (of
that student), ``searched`` and ``published`` (each with ``val_miou`` and measured
``latency_ms`` at the same input size and settings), ``kd_delta_mean``, ``kd_delta_std``,
``seeds``, ``wall_s`` and ``cross_sequence_miou`` (of the plain searched student trained
without the held-out sequences).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from fasterseg.config.pipeline import PipelineConfig
from fasterseg.pipeline.runner import load_marker
from fasterseg.pipeline.stages import train_runs
from fasterseg.utils.io import save_figure


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and \
        math.isfinite(v) else None


def network_summary(out: Path, name: str) -> dict:
    """mIoU, per-class IoU, measured latency, MACs and params of one trained network."""
    ev = load_marker(out, f"eval_{name}") or {}
    bn = load_marker(out, f"bench_{name}") or {}
    return {"val_miou": _f(ev.get("miou")), "per_class_iou": ev.get("per_class_iou"),
            "latency_ms": _f(bn.get("latency_ms")), "fps": _f(bn.get("fps")),
            "macs": bn.get("macs"), "params": bn.get("params")}


def trained_val_miou(out: Path, name: str) -> float | None:
    """The checkpoint's own val mIoU as training recorded it (``best.json``): before any offsets."""
    try:
        best = json.loads((out / name / "best.json").read_text())
    except (OSError, ValueError):
        return None
    return _f(best.get("value")) if best.get("name") == "val_miou" else None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(values) if values else None,
            statistics.stdev(values) if len(values) > 1 else None)


def kd_study(out: Path, cfg: PipelineConfig) -> dict:
    """Distilled minus plain val mIoU per seed; mean and sample standard deviation.

    With ``train.fit_offsets`` the evaluated checkpoints carry fitted logit offsets, a second
    fit per network; ``kd_delta_trained_*`` give the same difference for the checkpoints as
    trained (every pair whose two trainings finished, evaluated or not), so that the effect of
    distillation is not mixed with that of the offset fits.
    """
    pairs = [("student_kd", "student", None)]
    pairs += [(f"student_kd_seed{s}", f"student_seed{s}", s) for s in cfg.train.seeds]
    deltas, trained_deltas, rows = [], [], []
    for kd_name, plain_name, seed in pairs:
        row: dict[str, Any] = {"seed": seed}
        kd = _f((load_marker(out, f"eval_{kd_name}") or {}).get("miou"))
        plain = _f((load_marker(out, f"eval_{plain_name}") or {}).get("miou"))
        if kd is not None and plain is not None:
            deltas.append(kd - plain)
            row.update(kd_miou=kd, plain_miou=plain, delta=kd - plain)
        finished = all(load_marker(out, n) is not None for n in (kd_name, plain_name))
        if cfg.train.fit_offsets and finished:
            kd_t, plain_t = trained_val_miou(out, kd_name), trained_val_miou(out, plain_name)
            if kd_t is not None and plain_t is not None:
                row.update(kd_miou_trained=kd_t, plain_miou_trained=plain_t,
                           delta_trained=kd_t - plain_t)
                trained_deltas.append(kd_t - plain_t)
        if len(row) > 1:
            rows.append(row)
    mean, std = _mean_std(deltas)
    evaluated = [r for r in rows if "delta" in r]
    result = {
        "kd_deltas": rows,
        "kd_delta_mean": mean,
        "kd_delta_std": std,
        "kd_miou_mean": statistics.fmean(r["kd_miou"] for r in evaluated) if evaluated else None,
        "plain_miou_mean": (statistics.fmean(r["plain_miou"] for r in evaluated)
                            if evaluated else None),
        "seeds": len(deltas),
    }
    if trained_deltas:
        result["kd_delta_trained_mean"], result["kd_delta_trained_std"] = \
            _mean_std(trained_deltas)
        result["kd_trained_seeds"] = len(trained_deltas)
    return result


def collect_results(cfg: PipelineConfig, out: Path, wall_s: float | None = None) -> dict:
    names = {r.name for r in train_runs(cfg)}
    nets = {n: network_summary(out, n) for n in ("teacher", "student_kd", "student", "baseline")
            if n in names}
    students = {n: v for n, v in nets.items() if n in ("student_kd", "student")
                and v["val_miou"] is not None}
    best_name = max(students, key=lambda n: students[n]["val_miou"]) if students else None
    best = students.get(best_name, {}) if best_name else {}
    per_class = best.get("per_class_iou") or {}
    class_ious = [_f(v) for v in per_class.values() if _f(v) is not None]
    derive = load_marker(out, "derive") or {}
    searched = dict(best) if best else {}
    if searched:
        searched["name"] = best_name
        searched["latency_table_ms"] = _f(derive.get("latency_ms"))
    published = dict(nets.get("baseline", {}))
    if published:
        published["name"] = cfg.train.baseline
    xseq = {"holdout": cfg.cross_sequence.holdout}
    for n in ("xseq_student", "xseq_baseline"):
        if n in names:
            xseq[n] = {
                "holdout_miou": _f((load_marker(out, f"eval_{n}_holdout") or {}).get("miou")),
                "val_miou": _f((load_marker(out, f"eval_{n}") or {}).get("miou"))}
    stage_s = {}
    stages_dir = out / "stages"
    if stages_dir.is_dir():
        for p in sorted(stages_dir.glob("*.json")):
            sec = _f((load_marker(out, p.stem) or {}).get("stage_seconds"))
            if sec is not None:
                stage_s[p.stem] = round(sec, 1)
    ratio = None
    if searched.get("latency_ms") and published.get("latency_ms"):
        ratio = published["latency_ms"] / searched["latency_ms"]
    result = {
        "name": cfg.name,
        "best_student": best_name,
        "best_student_val_miou": best.get("val_miou"),
        "min_class_iou": min(class_ious) if class_ious else None,
        "min_class": min(per_class, key=lambda c: _f(per_class[c]) or 0.0) if per_class else None,
        "searched": searched,
        "published": published,
        "teacher": nets.get("teacher", {}),
        "speedup_searched_vs_published": ratio,
        "cross_sequence_miou": (xseq.get("xseq_student") or {}).get("holdout_miou"),
        "cross_sequence": xseq,
        **kd_study(out, cfg),
        "wall_s": wall_s if wall_s is not None else (sum(stage_s.values()) or None),
        "stage_seconds": stage_s,
        "input_size": list(cfg.latency.size),
        "bench": {"device": cfg.bench.device, "backend": cfg.bench.backend,
                  "dtype": cfg.bench.dtype, "threads": cfg.bench.threads},
    }
    return result


def plot_accuracy_latency(results: dict, path: Path) -> Path | None:
    """val mIoU against measured latency: searched student, published student, teacher."""
    points = [(label, results.get(key) or {}) for key, label in
              (("searched", "searched student"), ("published", "published student"),
               ("teacher", "teacher"))]
    points = [(lab, p) for lab, p in points
              if _f(p.get("latency_ms")) is not None and _f(p.get("val_miou")) is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (label, p), marker in zip(points, ("o", "s", "^")):
        ax.scatter(p["latency_ms"], 100 * p["val_miou"], s=60, marker=marker, label=label)
        ax.annotate(f"{100 * p['val_miou']:.1f}", (p["latency_ms"], 100 * p["val_miou"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    size = results.get("input_size") or ["?", "?"]
    ax.set(xlabel=f"measured latency (ms, {size[0]}x{size[1]}, batch 1)",
           ylabel="val mIoU (%)", title="accuracy vs latency on this device")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
