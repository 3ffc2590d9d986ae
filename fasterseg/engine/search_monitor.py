"""What the search reports each epoch: supernet head mIoU, collapse warnings, plots, records."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from fasterseg.engine.amp import autocast
from fasterseg.engine.cost import peak_memory_mb
from fasterseg.supernet import ARCHS, Supernet
from fasterseg.utils.io import atomic_write


@torch.no_grad()
def validate_heads(
    model: Supernet, loader, num_classes: int, device: torch.device, *, ignore_index: int = 255,
    max_images: int | None = None, amp: str = "off", channels_last: bool = False,
) -> dict[str, dict[str, float]]:
    """Validation mIoU of every head of both architectures: ``{arch: {combo: miou}}``.

    One forward per image and architecture gives all heads; the student uses its most likely
    widths (``argmax`` of gamma, what derivation picks), the teacher the widest.
    """
    from fasterseg.evaluation import ConfusionMatrix
    from fasterseg.evaluation.inference import pad_to_multiple

    was = model.training
    model.eval()
    cms = {a: {c: ConfusionMatrix(num_classes, ignore_index, device) for c in model.combos}
           for a in ARCHS}
    n = 0
    try:
        for batch in loader:
            imgs, labels = batch["image"], batch["label"]
            for b in range(imgs.shape[0]):
                if max_images is not None and n >= max_images:
                    break
                x, (h, w) = pad_to_multiple(imgs[b: b + 1].to(device), 32)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = labels[b: b + 1].to(device)
                for arch in ARCHS:
                    widths = "argmax" if arch == "student" else "max"
                    with autocast(amp, device):
                        out = model(x, arch, widths)
                    for combo, logits in out.items():
                        cms[arch][combo].update(logits[..., :h, :w].float().argmax(1), y)
                n += 1
            if max_images is not None and n >= max_images:
                break
    finally:
        model.train(was)
    scores: dict[str, dict[str, float]] = {}
    for arch in ARCHS:
        scores[arch] = {}
        for combo, cm in cms[arch].items():
            cm.all_reduce()
            m = cm.compute()["miou"]
            scores[arch][combo] = 0.0 if m != m else float(m)
    return scores


def collapse_warning(history: list[dict], window: int) -> str | None:
    """A message when skip share rises or latency drops sharply while student mIoU falls."""
    recs = [r for r in history if r.get("stage") == "search" and r.get("student_best_miou") is not None]
    if window < 1 or len(recs) <= window:
        return None
    old, new = recs[-window - 1], recs[-1]
    miou_fell = new["student_best_miou"] < old["student_best_miou"] - 0.01
    skip_rise = (new.get("student_skip_share") or 0) - (old.get("student_skip_share") or 0)
    lat_old, lat_new = old.get("student_latency_ms"), new.get("student_latency_ms")
    lat_drop = (lat_old - lat_new) / lat_old if lat_old and lat_new is not None else 0.0
    if miou_fell and (skip_rise > 0.2 or lat_drop > 0.3):
        return (
            f"possible architecture collapse: over the last {window} epochs the student's best "
            f"head mIoU fell {100 * old['student_best_miou']:.1f} -> {100 * new['student_best_miou']:.1f}"
            f" while the skip share rose by {100 * skip_rise:.0f} points and the estimated latency "
            f"dropped {100 * lat_drop:.0f}%; consider a lower search.latency_weight, "
            "search.latency_mode=decoupled or a search.latency_range_ms"
        )
    return None


def plot_history(history: list[dict], path: Path) -> Path | None:
    """``search.png``: head mIoU, latency, entropies and skip share per epoch."""
    if not history:
        return None
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["global_epoch"] for r in history]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    for arch, style in (("student", "-"), ("teacher", "--")):
        keys = sorted({k for r in history for k in r if k.startswith(f"val_miou_{arch}_")})
        for k in keys:
            ax.plot(x, [100 * r[k] if r.get(k) is not None else float("nan") for r in history],
                    style, label=f"{arch} {k.rsplit('_', 1)[1]}")
    ax.set_title("supernet val mIoU per head (%)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)
    ax = axes[0][1]
    for arch in ARCHS:
        ax.plot(x, [r.get(f"{arch}_latency_ms") or float("nan") for r in history], label=arch)
    ax.set_title("relaxed latency (ms)")
    ax.legend(fontsize=7)
    ax = axes[1][0]
    for arch in ARCHS:
        for name in ("alpha", "beta", "gamma"):
            vals = [r.get(f"{arch}_entropy_{name}") for r in history]
            if any(v is not None for v in vals):
                ax.plot(x, [float("nan") if v is None else v for v in vals], label=f"{arch} {name}")
    ax.set_title("normalised entropy")
    ax.legend(fontsize=6)
    ax = axes[1][1]
    for arch in ARCHS:
        ax.plot(x, [r.get(f"{arch}_skip_share") for r in history], label=arch)
    ax.set_title("share of cells whose top operator is skip")
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.set_xlabel("epoch")
    fig.tight_layout()
    try:  # atomic: a kill leaves a temp file that a resume's stale-temp cleanup recognises
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80), mode="wb")
    finally:
        plt.close(fig)


def epoch_record(model: Supernet, phase: str, epoch: int, g_epoch: int, pos: dict, lr: float,
                  lam: float, sums: dict, seconds: float, device: torch.device) -> dict:
    n = max(sums["n"], 1)
    rec: dict[str, Any] = {"type": "epoch", "stage": phase, "epoch": epoch + 1, "global_epoch": g_epoch,
                           "step": pos["step"], "lr": lr, "latency_weight": lam,
                           "weight_loss": sums["w"] / n,
                           "arch_loss": sums["a"] / n if phase == "search" else None,
                           "epoch_seconds": seconds, "peak_memory_mb": peak_memory_mb(device)}
    for a in ARCHS:
        ent = model.arch[a].entropy()
        for k, v in ent.items():
            rec[f"{a}_entropy_{k}"] = v
        rec[f"{a}_skip_share"] = model.arch[a].skip_share(list(model.space.operators).index("skip")
                                                           if "skip" in model.space.operators else -1)
    return rec


def describe(r: dict) -> str:
    parts = [f"{r['stage']} epoch {r['epoch']}", f"loss {r['weight_loss']:.3f}"]
    if r.get("arch_loss") is not None:
        parts.append(f"arch loss {r['arch_loss']:.3f}")
    if r.get("student_best_miou") is not None:
        parts.append(f"best head mIoU student {100 * r['student_best_miou']:.1f} / teacher "
                     f"{100 * r['teacher_best_miou']:.1f}")
    if r.get("student_latency_ms") is not None:
        parts.append(f"latency {r['student_latency_ms']:.2f} ms (lambda {r['latency_weight']:.3g})")
    cands = [v for k, v in r.items() if k.startswith("candidate_latency_ms_")]
    if cands:
        parts.append(f"derived candidates {min(cands):.2f}-{max(cands):.2f} ms")
    if r.get("latency_weight_next") is not None and r["latency_weight_next"] != r["latency_weight"]:
        parts.append(f"next lambda {r['latency_weight_next']:.3g}")
    parts.append(f"skip share {r['student_skip_share']:.2f}")
    return "  ".join(parts)
