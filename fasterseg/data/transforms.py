"""Paired image/label transforms (numpy + PIL, no torchvision).

Training follows the authors' order: integer downsampling, random scale, random crop with
ignore padding (image 0 after normalisation, label 255), horizontal flip, photometric jitter,
ImageNet normalisation, optional label downsampling. Labels are always resized with nearest
neighbour. For speed the downsample, scale and crop are fused: only the part of the image that
lands in the crop is resampled (PIL's ``box`` argument), which gives the same pixels as scaling
the whole image and then cropping.

All randomness comes from the ``numpy.random.Generator`` passed in, so a sample's augmentation
is a pure function of its seed (see :mod:`fasterseg.data.loader`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fasterseg.data.labels import IGNORE_INDEX


def nearest_index(n_in: int, scale: float, start: int, count: int) -> np.ndarray:
    """Source indices for output pixels ``start..start+count`` of a nearest resize by ``scale``.

    Pixel-centre convention (output centre ``i + 0.5`` maps to ``(i + 0.5) / scale``), the same
    one PIL uses for the image, so image and label stay aligned.
    """
    idx = np.floor((np.arange(start, start + count) + 0.5) / scale).astype(np.int64)
    return np.clip(idx, 0, n_in - 1)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``(H, W)``."""
    h, w = label.shape[:2]
    oh, ow = size
    if (oh, ow) == (h, w):
        return label
    rows = nearest_index(h, oh / h, 0, oh)
    cols = nearest_index(w, ow / w, 0, ow)
    return label[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``[H, W, 3]`` uint8 image to ``(H, W)``."""
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def downsample_pair(
    image: np.ndarray, label: np.ndarray | None, factor: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer downsampling: image bilinear, label nearest (sizes floor(H/f) x floor(W/f))."""
    if factor <= 1:
        return image, label
    h, w = image.shape[:2]
    size = (max(1, h // factor), max(1, w // factor))
    return resize_image(image, size), (None if label is None else resize_label(label, size))


def _writable(a: np.ndarray) -> np.ndarray:
    """Contiguous, writable array (PIL-backed arrays are read-only; torch warns on those)."""
    return np.require(a, requirements=["C", "W"])


def _normalize_hwc(image: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> normalised float ``[H, W, 3]`` (in place on the float copy)."""
    x = torch.from_numpy(_writable(image)).float()
    x.sub_(torch.tensor(mean, dtype=torch.float32) * 255)
    x.mul_(1.0 / (torch.tensor(std, dtype=torch.float32) * 255))
    return x


def normalize(image: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, H, W]``: ``(x / 255 - mean) / std``."""
    return _normalize_hwc(image, mean, std).permute(2, 0, 1).contiguous()


def denormalize(image: torch.Tensor, mean, std) -> np.ndarray:
    """Inverse of :func:`normalize` for visualisation: ``[3, H, W]`` -> uint8 ``[H, W, 3]``."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    x = (image.detach().float().cpu() * s + m).clamp(0, 1) * 255
    return x.round().byte().permute(1, 2, 0).numpy()


def jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Photometric jitter (brightness, contrast, saturation, each by 1 +- strength)."""
    b, c, s = 1 + rng.uniform(-strength, strength, 3)
    if strength <= 0:
        return image
    x = image.astype(np.float32)
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = gray[..., None] + (x - gray[..., None]) * s
    x = (x - gray.mean()) * c + gray.mean()
    x *= b
    return np.clip(x, 0, 255).astype(np.uint8)


@dataclass
class TrainTransform:
    """Random scale + crop (+ ignore padding) + flip + jitter + normalise, to a fixed crop."""

    crop_size: tuple[int, int]
    scales: tuple[float, ...] = (0.75, 1.0, 1.25)
    scale_range: tuple[float, float] | None = None
    flip: bool = True
    jitter: float = 0.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    downsample: int = 1
    label_downsample: int = 1
    ignore_index: int = IGNORE_INDEX

    @classmethod
    def from_config(cls, cfg) -> TrainTransform:
        return cls(
            crop_size=tuple(cfg.crop_size), scales=tuple(cfg.scales),
            scale_range=None if cfg.scale_range is None else tuple(cfg.scale_range),
            flip=cfg.flip, jitter=cfg.jitter, mean=tuple(cfg.mean), std=tuple(cfg.std),
            downsample=cfg.downsample, label_downsample=cfg.label_downsample,
        )  # fmt: skip

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = image.shape[:2]
        # Draw every random number up front, in a fixed order, whatever the branch taken.
        if self.scale_range is not None:
            s = float(rng.uniform(*self.scale_range))
        else:
            s = float(self.scales[int(rng.integers(0, len(self.scales)))])
        u_y, u_x = rng.random(2)
        do_flip = bool(rng.random() < 0.5) and self.flip
        s /= self.downsample
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        sy, sx = sh / h, sw / w
        ch, cw = self.crop_size
        # Crop offset in the scaled image (y0, x0) or, when smaller, pad offset (oy, ox).
        y0, oy = (int(u_y * (sh - ch + 1)), 0) if sh >= ch else (0, int(u_y * (ch - sh + 1)))
        x0, ox = (int(u_x * (sw - cw + 1)), 0) if sw >= cw else (0, int(u_x * (cw - sw + 1)))
        hh, ww = min(ch, sh), min(cw, sw)
        if (sh, sw) == (h, w):
            region = image[y0 : y0 + hh, x0 : x0 + ww]
            lab = label[y0 : y0 + hh, x0 : x0 + ww]
        else:
            box = (x0 / sx, y0 / sy, (x0 + ww) / sx, (y0 + hh) / sy)
            region = np.asarray(Image.fromarray(image).resize((ww, hh), Image.BILINEAR, box=box))
            rows = nearest_index(h, sy, y0, hh)
            cols = nearest_index(w, sx, x0, ww)
            lab = label[rows[:, None], cols[None, :]]
        if do_flip:
            region, lab = region[:, ::-1], lab[:, ::-1]
        region = jitter(region, self.jitter, rng)
        out = torch.zeros(3, ch, cw)
        x = _normalize_hwc(region, self.mean, self.std)
        out[:, oy : oy + hh, ox : ox + ww] = x.permute(2, 0, 1)
        out_l = torch.full((ch, cw), self.ignore_index, dtype=torch.long)
        out_l[oy : oy + hh, ox : ox + ww] = torch.from_numpy(_writable(lab)).long()
        k = self.label_downsample
        if k > 1:
            out_l = out_l[k // 2 :: k, k // 2 :: k][: ch // k, : cw // k].contiguous()
        return out, out_l


@dataclass
class EvalTransform:
    """Whole image after integer downsampling, normalised; the label keeps its train ids."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    downsample: int = 1

    @classmethod
    def from_config(cls, cfg) -> EvalTransform:
        return cls(mean=tuple(cfg.mean), std=tuple(cfg.std), downsample=cfg.downsample)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = downsample_pair(image, label, self.downsample)
        return normalize(image, self.mean, self.std), torch.from_numpy(_writable(label)).long()
