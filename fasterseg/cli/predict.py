"""``fasterseg predict``: segment image files, globs or folders of any size into label PNGs."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg predict runs/camvid/best.pt frames/ -o preds --overlay
  fasterseg predict best.pt 'street/*.jpg' one.png -o preds --flip --device cuda
  fasterseg predict fasterseg_student photo.jpg -o preds     # random weights: a smoke test

Writes OUT/labels/<name>.png (benchmark label ids when the label set maps them, e.g. Cityscapes
labelIds), OUT/color/<name>.png and, with --overlay, OUT/overlay/<name>.png.
"""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def register(subparsers, parents) -> None:
    from fasterseg.cli.common import add_device, add_json, parse_size

    p = subparsers.add_parser(
        "predict",
        parents=parents,
        help="segment images (files, globs, folders) into label PNGs and overlays",
        description="Predict label maps for images of any size (padded to /32 and cropped back).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint, run dir, model name or arch JSON")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, globs or folders")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays on the input")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="S",
                   help="test scales")
    p.add_argument("--window", type=parse_size, metavar="HxW",
                   help="sliding window for huge images")
    p.add_argument("--num-classes", type=int,
                   help="classes of a randomly initialised model (default 19)")
    add_device(p)
    add_json(p)
    p.set_defaults(func=run)


def collect_inputs(items: list[str]) -> list[tuple[Path, str]]:
    """(path, output name) for every image in files / globs / folders (folders: recursive)."""
    found: list[tuple[Path, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()
            )
            if not files:
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            found += [(q, str(q.relative_to(p).with_suffix(""))) for q in files]
        elif p.is_file():
            found.append((p, p.stem))
        elif any(ch in item for ch in "*?["):
            files = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not files:
                raise UserError(f"no files match {item!r}")
            found += [(q, q.stem) for q in files]
        else:
            raise UserError(f"input not found: {item}")
    names: dict[str, int] = {}
    unique = []
    for path, name in found:  # two inputs with the same stem must not overwrite each other
        n = names.get(name, 0)
        names[name] = n + 1
        unique.append((path, name if n == 0 else f"{name}_{n}"))
    return unique


def run(args) -> int:
    import numpy as np
    import torch

    from fasterseg.cli.common import emit_json, resolve_device
    from fasterseg.data.io import read_image
    from fasterseg.engine import checkpoint as ckpt_io
    from fasterseg.evaluation import PredictionWriter, infer_image

    device = resolve_device(args.device)
    inputs = collect_inputs(args.inputs)
    if args.window and (args.window[0] % 32 or args.window[1] % 32):
        raise UserError(f"--window {args.window[0]}x{args.window[1]} must be divisible by 32")
    if ckpt_io._is_checkpoint_path(args.checkpoint) and not Path(args.checkpoint).exists():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    model, info = ckpt_io.load_model(args.checkpoint, num_classes=args.num_classes, device=device)
    labels = info.get("label_set") or {}
    data_cfg = (info.get("config") or {}).get("data", {})
    mean = data_cfg.get("mean", (0.485, 0.456, 0.406))
    std = data_cfg.get("std", (0.229, 0.224, 0.225))
    palette = labels.get("palette")
    if not palette:
        from fasterseg.data.labels import CITYSCAPES_PALETTE, default_palette

        n = info["num_classes"]
        palette = CITYSCAPES_PALETTE if n == 19 else default_palette(n)
    writer = PredictionWriter(args.out, palette,
                              train_id_to_label_id=labels.get("train_id_to_label_id"),
                              mean=mean, std=std, color=True, overlay=args.overlay)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    print(f"predicting {len(inputs)} image(s) with {args.checkpoint} ({info['source']} weights)")
    counts = np.zeros(info["num_classes"], dtype=np.int64)
    for path, name in inputs:
        rgb = read_image(path)
        img = ((torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255 - m) / s).to(device)
        probs = infer_image(model, img, flip=args.flip, scales=args.scales, window=args.window,
                            num_classes=info["num_classes"])
        pred = probs.argmax(0).cpu().numpy()
        counts += np.bincount(pred.ravel(), minlength=len(counts))[: len(counts)]
        writer(name, pred, img.cpu())
    print(f"wrote {writer.count} prediction(s) to {args.out}")
    if args.json:
        emit_json({"images": writer.count, "out": str(args.out), "checkpoint": args.checkpoint,
                   "weights": info["source"], "class_pixel_counts": counts.tolist()})
    return 0
