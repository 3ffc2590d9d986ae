"""Whole-image inference for any image size: pad to /32, flip, multi-scale and sliding window.

The derived network only accepts sizes divisible by 32 (its 1/32 branch) and at least 64x64,
while real images are e.g. 360x480 (CamVid), 720x1280 (BDD) or a 20x400 strip. We pad
right/bottom with zeros (the mean colour after normalisation), run, and crop back, so the
prediction lines up pixel for pixel with the input. ``window`` bounds memory: a large (or
up-scaled) image is processed in overlapping tiles, so a big image never has to fit through the
network at once.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

STRIDE = 32
# the smallest input the network runs on (fasterseg.models.network.MIN_SIZE): its zoomed
# convolutions halve the 1/32 features, which needs at least 2 pixels there
MIN_SIZE = 2 * STRIDE


def pad_to_multiple(
    x: torch.Tensor, multiple: int = STRIDE, value: float = 0.0, min_size: int = 0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` [..., H, W] right/bottom to multiples of ``multiple`` of at least ``min_size``.

    Returns (padded, (H, W)) with the original size, to crop the result back.
    """
    h, w = x.shape[-2:]
    ph = max((multiple - h % multiple) % multiple, min_size - h)
    pw = max((multiple - w % multiple) % multiple, min_size - w)
    ph += (multiple - (h + ph) % multiple) % multiple
    pw += (multiple - (w + pw) % multiple) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=value)
    return x, (h, w)


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, (tuple, list)):  # a model left in train mode returns (main, *aux)
        out = out[0]
    return out


def _forward_padded(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities for a [1,3,H,W] batch of any size (padded to /32 and to at least
    64x64, cropped back)."""
    xp, (h, w) = pad_to_multiple(x, min_size=MIN_SIZE)
    return _forward(model, xp).float().softmax(1)[..., :h, :w]


def _forward_flip(model: torch.nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Sum of probabilities of the image and (optionally) its mirror, re-aligned."""
    probs = _forward_padded(model, x)
    if flip:  # pad after flipping so the padding stays on the right in both passes
        probs = probs + _forward_padded(model, x.flip(-1)).flip(-1)
    return probs


def _sliding(
    model: torch.nn.Module, x: torch.Tensor, window: tuple[int, int], flip: bool, num_classes: int
) -> torch.Tensor:
    """Overlapping tiles of size ``window`` (stride 2/3 window); overlaps averaged."""
    _, _, h, w = x.shape
    wh, ww = window
    if h <= wh and w <= ww:
        return _forward_flip(model, x, flip)
    sh, sw = max(1, math.ceil(wh * 2 / 3)), max(1, math.ceil(ww * 2 / 3))
    rows = max(1, math.ceil(max(h - wh, 0) / sh) + 1)
    cols = max(1, math.ceil(max(w - ww, 0) / sw) + 1)
    acc = torch.zeros(1, num_classes, h, w, device=x.device)
    count = torch.zeros(1, 1, h, w, device=x.device)
    for r in range(rows):
        for c in range(cols):
            y0 = min(r * sh, max(h - wh, 0))
            x0 = min(c * sw, max(w - ww, 0))
            y1, x1 = min(y0 + wh, h), min(x0 + ww, w)
            tile = x[..., y0:y1, x0:x1]
            acc[..., y0:y1, x0:x1] += _forward_flip(model, tile, flip)
            count[..., y0:y1, x0:x1] += 1
    return acc / count


@torch.inference_mode()
def infer_image(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window: tuple[int, int] | None = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Class probabilities [C, H, W] for one normalised image [3, H, W] (or [1, 3, H, W]).

    Softmax probabilities are averaged over scales and flips (the usual test-time augmentation);
    ``argmax(0)`` of the result is the prediction. The model must be in eval mode and on the
    image's device. ``num_classes`` is only needed with ``window`` when it cannot be inferred.
    """
    x = image if image.dim() == 4 else image.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError("infer_image takes one image; loop over the batch")
    _, _, h, w = x.shape
    if window is not None:
        if window[0] % STRIDE or window[1] % STRIDE:
            raise ValueError(f"window {window[0]}x{window[1]} must be divisible by {STRIDE}")
    total = None
    for s in scales:
        xs = x
        if s != 1.0:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if window is not None:
            if num_classes is None:
                num_classes = _forward_padded(model, xs[..., : window[0], : window[1]]).shape[1]
            p = _sliding(model, xs, window, flip, num_classes)
        else:
            p = _forward_flip(model, xs, flip)
        if p.shape[-2:] != (h, w):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        total = p if total is None else total + p
    return (total / (len(scales) * (2 if flip else 1)))[0]
