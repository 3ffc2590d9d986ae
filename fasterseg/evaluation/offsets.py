"""Per-class logit offsets fitted on the training images (post-hoc logit adjustment).

Why: training with class weights (``train.class_weights``) teaches rare classes but also moves
the decision boundaries towards them. On CamVid the searched student trained with square-root
inverse-frequency weights predicts pedestrian on 4.7 % of the val pixels (0.7 % are), fence on
6.2 % (3.1 %). One offset per class added to the logits, chosen to maximise mIoU on the
**training** images (evaluation transform, never the validation split), moves the boundaries
back where mIoU wants them. The offsets fold into the classifier's bias (a bilinear resize
keeps per-channel constants), so they cost nothing at inference and every export path keeps
them. Measured gains and the protocol: docs/camvid_cpu.md.

The fit is coordinate ascent on mIoU over a grid (coarse, then fine), deterministic, on pixels
sampled every ``stride`` pixels of each image (1/8 of a CamVid image's pixels per axis is
enough: about a million labelled pixels for 367 images).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

import numpy as np
import torch

from fasterseg.errors import UserError

__all__ = ["collect_log_probs", "fit_offsets", "fold_offsets", "miou_with_offsets"]

# coarse grid first (-3..3 by 0.25), then two passes of a finer one around the current value
_COARSE = np.arange(-3.0, 3.0001, 0.25)
_FINE = np.arange(-0.75, 0.7501, 0.0625)


def collect_log_probs(
    model: torch.nn.Module,
    dataset,
    *,
    num_classes: int,
    stride: int = 8,
    device: str | torch.device = "cpu",
    ignore_index: int = 255,
    max_images: int | None = None,
    progress: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities ``[N, C]`` and labels ``[N]`` of the labelled pixels on a ``stride`` grid.

    Log-probabilities differ from the logits by a per-pixel constant, so an offset that changes
    the argmax of one changes the argmax of the other in the same way.
    """
    from tqdm import tqdm

    from fasterseg.evaluation.inference import infer_image

    if stride < 1:
        raise UserError(f"--stride must be >= 1, got {stride}")
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    if n == 0:
        raise UserError("no images to fit the offsets on")
    device = torch.device(device)
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    logps, labels = [], []
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in tqdm(range(n), desc="offsets", disable=disable, leave=False):
                sample = dataset[i]
                label = sample.get("label")
                if label is None:
                    raise UserError("the offsets are fitted on labelled images: this split has "
                                    "no labels")
                probs = infer_image(model, sample["image"].to(device), flip=False, scales=[1.0],
                                    window=None, num_classes=num_classes)
                lp = probs[:, ::stride, ::stride].clamp_min(1e-12).log().float().cpu()
                y = label[::stride, ::stride].reshape(-1).long()
                lp = lp.reshape(num_classes, -1).t()
                keep = y != ignore_index
                logps.append(lp[keep])
                labels.append(y[keep])
    finally:
        model.train(was)
    x, y = torch.cat(logps), torch.cat(labels)
    if y.numel() == 0:
        raise UserError("no labelled pixels in the images the offsets would be fitted on")
    return x.contiguous(), y.contiguous()


def miou_with_offsets(
    log_probs: torch.Tensor, labels: torch.Tensor, offsets: torch.Tensor
) -> tuple[float, np.ndarray]:
    """mIoU (classes absent from labels and predictions excluded) and per-class IoU."""
    c = log_probs.shape[1]
    pred = (log_probs + offsets).argmax(1)
    cm = torch.bincount(labels * c + pred, minlength=c * c).view(c, c).double()
    union = cm.sum(0) + cm.sum(1) - cm.diag()
    iou = torch.where(union > 0, cm.diag() / union.clamp_min(1), torch.full_like(union, math.nan))
    iou = iou.numpy()
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0, iou


def fit_offsets(
    log_probs: torch.Tensor, labels: torch.Tensor, *, rounds: int = 3
) -> tuple[torch.Tensor, float, float]:
    """Offsets maximising mIoU on these pixels: (offsets, mIoU before, mIoU after).

    Classes with no labelled pixel keep offset 0 (nothing says where their boundary belongs).
    A step is taken only if it raises mIoU, so the result is never worse than no offsets.
    """
    c = log_probs.shape[1]
    offsets = torch.zeros(c)
    before, _ = miou_with_offsets(log_probs, labels, offsets)
    best = before
    present = torch.bincount(labels, minlength=c)[:c] > 0
    for r in range(max(1, rounds)):
        grid = _COARSE if r == 0 else _FINE
        for k in range(c):
            if not present[k]:
                continue
            start = best_v = float(offsets[k])
            for g in grid:
                offsets[k] = start + float(g)
                score, _ = miou_with_offsets(log_probs, labels, offsets)
                if score > best + 1e-7:
                    best, best_v = score, float(offsets[k])
            offsets[k] = best_v
    return offsets, before, best


def fold_offsets(model: torch.nn.Module, offsets: Sequence[float] | torch.Tensor) -> None:
    """Add ``offsets`` to the final classifier's bias (same argmax as adding them to the logits)."""
    head = getattr(model, "head", None)
    classifier = getattr(head, "classifier", None)
    bias = getattr(classifier, "bias", None)
    if bias is None:
        raise UserError("this model has no classifier bias to fold the offsets into")
    off = torch.as_tensor(offsets, dtype=bias.dtype, device=bias.device)
    if off.shape != bias.shape:
        raise UserError(f"{off.numel()} offsets for a classifier with {bias.numel()} classes")
    with torch.no_grad():
        bias.add_(off)


def offsets_record(offsets: torch.Tensor, class_names: Sequence[str] | None,
                   **facts: Any) -> dict[str, Any]:
    """What the checkpoint stores about the fit (plain types: loads with weights_only)."""
    names = list(class_names) if class_names else [str(i) for i in range(len(offsets))]
    return {"offsets": [round(float(v), 6) for v in offsets], "class_names": names, **facts}
