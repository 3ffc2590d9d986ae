"""Training losses: OHEM cross-entropy, deep supervision and knowledge distillation.

OHEM follows the official ``ProbOhemCrossEntropy2d`` semantics (threshold on the probability of
the true class, at least ``min_kept`` hardest pixels, ignore label excluded); the distillation term
is the paper's eq. 4 (KL per pixel, averaged over pixels) with the official averaging over classes
as an option.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

KDReduction = Literal["pixel", "official"]


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero with a graph to the logits, so ``backward()`` works on all-ignore batches."""
    return logits.sum() * 0.0


class OhemCrossEntropy:
    """Online hard example mining cross-entropy (callable ``(logits, labels) -> scalar``).

    Pixels whose true-class probability is at most ``thresh`` are kept; if fewer than
    ``min_kept = int(min_kept_ratio * B*H*W)`` pixels qualify, the threshold rises to the
    ``min_kept``-th smallest probability. If there are fewer valid pixels than ``min_kept``, all
    valid pixels are used. Logits [B,C,H,W] must already be at the labels' resolution [B,H,W].
    A batch with no valid pixel returns a zero loss that still backpropagates.
    """

    def __init__(
        self, thresh: float = 0.7, min_kept_ratio: float = 1 / 16, ignore_index: int = 255,
        class_weight: torch.Tensor | None = None,
    ):
        self.thresh = float(thresh)
        self.min_kept_ratio = float(min_kept_ratio)
        self.ignore_index = ignore_index
        # Per-class weights (rare thin classes up): the kept pixels' NLL is averaged with these
        # weights, like ``F.cross_entropy(weight=...)``. None: every class counts the same.
        self.class_weight = class_weight

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != labels.shape[-2:]:
            raise ValueError(
                f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in size; "
                "resize the logits first"
            )
        b, c, h, w = logits.shape
        target = labels.long()
        valid = (target != self.ignore_index) & (target >= 0) & (target < c)
        num_valid = int(valid.sum())
        if num_valid == 0:
            return _zero_loss(logits)
        min_kept = int(self.min_kept_ratio * b * h * w)
        return _OhemNLL.apply(logits.float(), target, valid, num_valid, self.thresh, min_kept,
                              self.class_weight)


def ohem_reference(
    logits: torch.Tensor, labels: torch.Tensor, thresh: float, min_kept_ratio: float,
    ignore_index: int = 255, class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same OHEM loss as plain autograd ops (``log_softmax`` + ``gather`` + mask): slower,
    kept as the reference the one-pass version is checked and timed against."""
    b, c, h, w = logits.shape
    logp = F.log_softmax(logits.float(), dim=1)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < c)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    min_kept = int(min_kept_ratio * b * h * w)
    keep = valid
    if 0 < min_kept <= int(valid.sum()):
        prob = torch.exp(-nll.detach())
        kth = torch.kthvalue(prob[valid], min_kept).values
        keep = valid & (prob <= torch.clamp_min(kth, thresh))
    elif min_kept <= 0:
        keep = valid & (torch.exp(-nll.detach()) <= thresh)
    wpx = keep.to(nll.dtype)
    if class_weight is not None:
        wpx = wpx * class_weight.to(nll.device, nll.dtype)[safe]
    return (nll * wpx).sum() / wpx.sum().clamp_min(1e-12)


def _classes_last(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A channels_last [B,C,H,W] tensor as its contiguous [B,H,W,C] view (class dim -1): softmax
    over a strided class dim copies the whole tensor first, over the last dim it does not."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1), -1
    return x, 1


class _OhemNLL(torch.autograd.Function):
    """OHEM NLL in one pass over the logits and a closed-form backward, ``coef * (p - onehot)``.

    The same loss and gradient as ``log_softmax`` + ``gather`` + mask through autograd, at about
    half the time: at full resolution (8 x 11 x 352 x 480 logits per head, three heads) the
    loss was a third of a CPU training step. Only the softmax is kept for the backward.
    """

    @staticmethod
    def forward(ctx, logits, target, valid, num_valid: int, thresh: float, min_kept: int,
                class_weight):
        z, dim = _classes_last(logits)
        p = torch.softmax(z, dim=dim)
        safe = torch.where(valid, target, 0).unsqueeze(dim)
        pt = p.gather(dim, safe).squeeze(dim)  # probability of the true class
        nll = -torch.log(pt)
        tiny = pt < 1e-30  # underflowed probability: the exact value from the logits
        if bool(tiny.any()):
            zt = z.gather(dim, safe).squeeze(dim)
            nll = torch.where(tiny, torch.logsumexp(z, dim) - zt, nll)
        keep = valid
        if 0 < min_kept <= num_valid:
            ranked = torch.where(valid, pt, 2.0).reshape(-1)  # ignored pixels rank last
            kth = torch.kthvalue(ranked, min_kept).values
            keep = valid & (pt <= torch.clamp_min(kth, thresh))
        elif min_kept <= 0:
            keep = valid & (pt <= thresh)
        coef = keep.to(nll.dtype)
        if class_weight is not None:
            coef = coef * class_weight.to(nll.device, nll.dtype)[safe.squeeze(dim)]
        coef = coef / coef.sum().clamp_min(1e-12)  # nothing kept: coef 0, loss 0, gradient 0
        ctx.dim = dim
        ctx.save_for_backward(p, safe, coef)
        return (nll * coef).sum()  # NaN logits give a NaN loss: divergence is not hidden

    @staticmethod
    def backward(ctx, grad_out):
        p, safe, coef = ctx.saved_tensors
        c = (coef * grad_out).unsqueeze(ctx.dim)
        grad = p * c
        grad.scatter_add_(ctx.dim, safe, -c)
        if ctx.dim == -1:
            grad = grad.permute(0, 3, 1, 2)
        return grad, None, None, None, None, None, None


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: KDReduction = "pixel"
) -> torch.Tensor:
    """KL(teacher || student) of the per-pixel class distributions (no temperature).

    ``pixel`` (paper eq. 4): KL summed over classes, averaged over the B*H*W pixels.
    ``official``: the authors' ``KLDivLoss`` mean over all B*C*H*W elements (= pixel / C).
    Always >= 0 and exactly 0 for identical logits. The teacher side carries no gradient.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} "
            "logits differ in shape"
        )
    log_s = F.log_softmax(student_logits.float(), dim=1)
    log_t = F.log_softmax(teacher_logits.detach().float(), dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)  # [B,H,W]
    if reduction == "pixel":
        return kl.mean()
    if reduction == "official":
        return kl.mean() / student_logits.shape[1]
    raise ValueError(f"kd reduction must be 'pixel' or 'official', got {reduction!r}")


class SegLoss:
    """Deep-supervision loss: OHEM(main) + ``aux_weight`` x OHEM(each auxiliary head).

    Accepts a tensor or the train-mode tuple ``(main, *aux)``; outputs at another resolution than
    the labels are bilinearly resized first. Returns (total, parts) with ``parts`` detached floats
    for logging.
    """

    def __init__(self, ohem: OhemCrossEntropy, aux_weight: float = 0.2):
        self.ohem = ohem
        self.aux_weight = float(aux_weight)

    def __call__(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        parts: dict[str, torch.Tensor] = {}
        total = None
        for i, o in enumerate(outs):
            if o.shape[-2:] != labels.shape[-2:]:
                o = F.interpolate(o, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            loss = self.ohem(o, labels)
            parts["main" if i == 0 else f"aux{i}"] = loss.detach()
            weighted = loss if i == 0 else self.aux_weight * loss
            total = weighted if total is None else total + weighted
        return total, parts
