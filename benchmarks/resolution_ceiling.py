"""How much IoU a head that predicts at 1/r of the input can reach at best, per class.

Why: a class a few pixels wide (CamVid's poles are a median 2 px wide at 360x480) cannot be
segmented from logits at 1/8 however well the network learns. The ideal low-resolution
prediction is the area-averaged one-hot label (each cell holds the true class proportions);
upsampled bilinearly like the network's logits and taken by argmax, it gives the IoU ceiling of
each output rate. Pure label arithmetic: no model, no training.

    python benchmarks/resolution_ceiling.py --labels ../shared/data/camvid/valannot --num-classes 11
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def ceiling_confusion(labels: list[Path], num_classes: int, rate: int) -> np.ndarray:
    """Confusion matrix of the ideal 1/``rate`` prediction against the labels (ignore: >= K)."""
    k = num_classes
    conf = np.zeros((k, k), np.int64)
    for f in labels:
        lab = torch.from_numpy(np.array(Image.open(f)).astype(np.int64))
        h, w = lab.shape
        valid = lab < k
        onehot = F.one_hot(lab.clamp(max=k - 1), k).permute(2, 0, 1).float() * valid
        hp, wp = -(-h // rate) * rate, -(-w // rate) * rate
        onehot = F.pad(onehot, (0, wp - w, 0, hp - h))
        low = F.avg_pool2d(onehot[None], rate)
        up = F.interpolate(low, size=(hp, wp), mode="bilinear", align_corners=False)[0, :, :h, :w]
        pred = up.argmax(0)
        conf += np.bincount((lab[valid] * k + pred[valid]).numpy(), minlength=k * k).reshape(k, k)
    return conf


def iou(conf: np.ndarray) -> np.ndarray:
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    return np.divide(inter, union, out=np.full(len(inter), np.nan), where=union > 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", required=True, help="folder of single-channel label PNGs")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--class-names", nargs="*", help="names in label order (default: numbers)")
    p.add_argument("--rates", type=int, nargs="+", default=[8, 4, 2])
    p.add_argument("--out", help="write the table as JSON here")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    files = sorted(Path(args.labels).glob("*.png"))
    if not files:
        print(f"error: no label PNGs in {args.labels}", file=sys.stderr)
        return 1
    names = args.class_names or [str(i) for i in range(args.num_classes)]
    if len(names) != args.num_classes:
        print("error: --class-names must name every class", file=sys.stderr)
        return 1
    rows = {}
    for r in args.rates:
        per = iou(ceiling_confusion(files, args.num_classes, r))
        rows[f"1/{r}"] = {"miou": float(np.nanmean(per)),
                          "per_class_iou": {n: float(v) for n, v in zip(names, per)}}
        worst = sorted(zip(per, names))[:3]
        print(f"1/{r}: mIoU ceiling {100 * np.nanmean(per):.1f}; lowest "
              + ", ".join(f"{n} {100 * v:.1f}" for v, n in worst))
    result = {"what": "IoU ceiling of an ideal prediction at 1/r of the input (area-averaged one-hot "
                      "labels, bilinear upsampling, argmax)", "labels": args.labels,
              "images": len(files), "rates": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
