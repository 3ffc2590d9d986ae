"""Segmentation metrics from one confusion matrix (mIoU, per-class IoU, aAcc, mAcc).

Every metric is derived from a single ``num_classes x num_classes`` count matrix (rows = ground
truth, columns = prediction), so per-image updates are cheap, shards can be summed across
processes with one all-reduce, and the numbers agree with mmsegmentation's definitions.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


class ConfusionMatrix:
    """Accumulates pixel counts; ``compute()`` turns them into the usual metrics.

    Pixels whose label is ``ignore_index`` (or outside ``[0, num_classes)``) are not counted.
    Classes absent from both ground truth and prediction get IoU ``nan`` and are skipped by the
    mean (nanmean), like the official evaluator.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: ``pred`` (class ids, or logits [B,C,H,W] / [C,H,W]) and ``target`` ids."""
        if pred.is_floating_point():
            pred = pred.argmax(dim=-3)
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != label shape {tuple(target.shape)}"
            )
        n = self.num_classes
        t = target.reshape(-1).to(self.mat.device, torch.int64)
        p = pred.reshape(-1).to(self.mat.device, torch.int64)
        valid = (t >= 0) & (t < n) & (t != self.ignore_index)
        idx = t[valid] * n + p[valid].clamp_(0, n - 1)
        self.mat += torch.bincount(idx, minlength=n * n).reshape(n, n)

    def all_reduce(self) -> None:
        """Sum the counts over all processes (no-op outside torch.distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """Metrics as plain Python numbers (fractions in [0, 1]; ``nan`` for absent classes)."""
        m = self.mat.double().cpu()
        diag = m.diag()
        gt = m.sum(1)
        pr = m.sum(0)
        union = gt + pr - diag
        iou = torch.where(union > 0, diag / union.clamp(min=1), torch.full_like(diag, math.nan))
        acc = torch.where(gt > 0, diag / gt.clamp(min=1), torch.full_like(diag, math.nan))
        total = m.sum().item()
        names = list(class_names) if class_names is not None else []
        if len(names) != self.num_classes:
            names = [str(i) for i in range(self.num_classes)]
        return {
            "miou": _nanmean(iou),
            "aacc": diag.sum().item() / total if total > 0 else math.nan,
            "macc": _nanmean(acc),
            "per_class_iou": {k: float(v) for k, v in zip(names, iou.tolist())},
            "per_class_acc": {k: float(v) for k, v in zip(names, acc.tolist())},
            "pixels": int(total),
        }


def _nanmean(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if ok.any() else math.nan
