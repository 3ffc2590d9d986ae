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
labelIds), OUT/color/<name>.png and, with --overlay, OUT/overlay/<name>.png. Existing files there
are an error unless --overwrite; OUT must not overlap a dataset's image or label folders, and
never replaces an input. Files under OUT's own labels/, color/ and overlay/ are never inputs.
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
                   help="classes of a randomly initialised model (default: the architecture's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace prediction files that already exist in OUT (without it, "
                   "existing files are an error before anything is predicted)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="skip images that cannot be read (listed at the end) instead of stopping")
    add_device(p)
    add_json(p)
    p.set_defaults(func=run)


def _excluded(path: Path, exclude: list[Path]) -> bool:
    rp = path.resolve()
    return any(rp.is_relative_to(e) for e in exclude)


def collect_inputs(
    items: list[str], exclude: list[Path] | None = None
) -> list[tuple[Path, str]]:
    """(path, output name) for every image in files / globs / folders (folders: recursive).

    Files under a folder in ``exclude`` (the output's own labels/, color/, overlay/) are left out
    of folders and globs, so predictions written inside an input folder are not predicted again.
    """
    ex = [Path(e).resolve() for e in (exclude or [])]
    found: list[tuple[Path, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                q for q in p.rglob("*")
                if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file() and not _excluded(q, ex)
            )
            if not files:
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            found += [(q, str(q.relative_to(p).with_suffix(""))) for q in files]
        elif p.is_file():
            found.append((p, p.stem))
        elif any(ch in item for ch in "*?["):
            files = sorted(Path(q) for q in glob.glob(item, recursive=True)
                           if Path(q).is_file() and not _excluded(Path(q), ex))
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
    from fasterseg.data.io import _open, image_size
    from fasterseg.engine import checkpoint as ckpt_io
    from fasterseg.evaluation import PredictionWriter, infer_image, outputs
    from fasterseg.evaluation.images import to_rgb8

    device = resolve_device(args.device)
    if args.window and (args.window[0] % 32 or args.window[1] % 32):
        raise UserError(f"--window {args.window[0]}x{args.window[1]} must be divisible by 32")
    if any(s <= 0 for s in args.scales):
        raise UserError("--scales must be positive")
    out = Path(args.out)
    inputs = collect_inputs(args.inputs, exclude=[out / d for d in ("labels", "color", "overlay")])
    # unreadable files (not an image, unknown format) are found from their headers, before
    # anything is written; a file that fails only while decoding is caught in the loop below
    skipped: list[tuple[Path, str]] = []
    for path, _ in inputs:
        try:
            image_size(path)
        except UserError as e:
            skipped.append((path, str(e)))
    if skipped and not args.skip_unreadable:
        raise UserError(f"{len(skipped)} of {len(inputs)} input(s) cannot be read, e.g. "
                        f"{skipped[0][1]}; pass --skip-unreadable to skip them")
    bad = {p for p, _ in skipped}
    all_inputs = [p for p, _ in inputs]
    inputs = [(p, n) for p, n in inputs if p not in bad]
    if not inputs:
        raise UserError(f"none of the {len(bad)} input(s) could be read")
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
    writer = PredictionWriter(out, palette,
                              train_id_to_label_id=labels.get("train_id_to_label_id"),
                              mean=mean, std=std, color=True, overlay=args.overlay)
    # where predictions go is checked before the first image: not into a dataset's image or
    # label folders, not over an input, not over existing files without --overwrite
    folders = {p.parent for p, _ in inputs} | {Path(i) for i in args.inputs if Path(i).is_dir()}
    protected = outputs.nearby_dataset_folders(sorted(folders | {out}))
    outputs.check_not_in_dataset(writer.subdirs(), protected, "-o")
    targets = [f for _, name in inputs for f in writer.paths(name)]
    outputs.check_not_inputs(targets, all_inputs, "-o")
    outputs.check_no_existing(targets, "-o", args.overwrite)
    outputs.ensure_writable(out, "-o")
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    print(f"predicting {len(inputs)} image(s) with {args.checkpoint} ({info['source']} weights)")
    counts = np.zeros(info["num_classes"], dtype=np.int64)
    scaled: list[tuple[Path, str]] = []
    for path, name in inputs:
        try:
            rgb, note = to_rgb8(_open(path, "image"))
        except UserError as e:
            if not args.skip_unreadable:
                raise UserError(f"{e} (pass --skip-unreadable to skip such files)") from None
            skipped.append((path, str(e)))
            continue
        if note:
            scaled.append((path, note))
        img = ((torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255 - m) / s).to(device)
        probs = infer_image(model, img, flip=args.flip, scales=args.scales, window=args.window,
                            num_classes=info["num_classes"])
        pred = probs.argmax(0).cpu().numpy()
        counts += np.bincount(pred.ravel(), minlength=len(counts))[: len(counts)]
        writer(name, pred, img.cpu())
    if scaled:
        print(f"note: {len(scaled)} image(s) with more than 8 bits per channel were scaled to "
              f"8 bits, e.g. {scaled[0][0]} ({scaled[0][1]})")
    print(f"wrote {writer.count} prediction(s) to {args.out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):")
        for _, why in skipped:
            print(f"  {why}")
    if writer.count == 0:
        raise UserError(f"none of the {len(inputs) + len(bad)} input(s) could be read")
    if args.json:
        emit_json({"images": writer.count, "out": str(args.out), "checkpoint": args.checkpoint,
                   "weights": info["source"], "class_pixel_counts": counts.tolist(),
                   "skipped": [{"file": str(p), "error": why} for p, why in skipped],
                   "scaled_to_8bit": [str(p) for p, _ in scaled]})
    return 0
