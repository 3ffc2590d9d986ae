"""``fasterseg fit-offsets``: per-class logit offsets fitted on the training images, folded into
a copy of the checkpoint (the input checkpoint is never modified)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg fit-offsets runs/camvid/student/best.pt            # -> runs/camvid/student/best.offsets.pt
  fasterseg fit-offsets runs/camvid/student --data camvid:../shared/data/camvid --json
  fasterseg eval runs/camvid/student/best.offsets.pt --data camvid:../shared/data/camvid

The offsets are chosen on the training split (never on the split you report); the checkpoint's
own data settings are used, including data.holdout_prefixes, so held-out sequences stay unseen.
"""

# resumable-training state that a derived inference checkpoint does not carry
_TRAINING_STATE = ("optimizer", "schedule", "scaler", "rng", "data_position", "pending_epoch",
                   "iter_in_epoch", "format", "version", "versions")


def register(sub, parents) -> None:
    from fasterseg.cli.common import add_device, add_json

    p = sub.add_parser(
        "fit-offsets",
        parents=parents,
        help="fit per-class logit offsets on the training images (zero-cost mIoU gain)",
        description="Fit one offset per class, added to the logits, that maximises mIoU on the "
        "training images (evaluation transform, pixels on a --stride grid), and write a copy of "
        "the checkpoint with the offsets folded into the classifier bias. Class-weighted training "
        "over-predicts rare classes; the offsets move the decision boundaries back at no "
        "inference cost. The input checkpoint is left unchanged.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="trained checkpoint .pt or run directory (its best.pt)")
    p.add_argument("--data", default=None,
                   help="PRESET[:ROOT] (default: the checkpoint's own data settings)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data setting, e.g. --set data.root=/data/camvid (repeatable)")
    p.add_argument("--split", default=None,
                   help="split to fit on (default: the training split; never the one you report)")
    p.add_argument("-o", "--out", default=None,
                   help="output checkpoint (default: <checkpoint>.offsets.pt beside it)")
    p.add_argument("--stride", type=int, default=8,
                   help="use every STRIDE-th pixel of each row and column (default 8)")
    p.add_argument("--max-images", type=int, default=None, help="fit on the first N images only")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_device(p)
    add_json(p)
    p.set_defaults(func=run)


def _data_config(args, ckpt_config: dict | None):
    """The checkpoint's data settings (holdout included), then --data, then --set."""
    from fasterseg.config.core import apply_overrides, from_dict
    from fasterseg.config.data import DataConfig

    data = dict((ckpt_config or {}).get("data") or {})
    if args.data:
        from fasterseg.cli.common import merge_data_spec

        data = merge_data_spec(data, args.data)
    if not data:
        raise UserError("the checkpoint has no data settings: pass --data PRESET[:ROOT]")
    tree = {"data": data}
    apply_overrides(tree, [s if s.startswith("data.") else f"data.{s}" for s in args.set])
    cfg = from_dict(DataConfig, tree["data"], "data")
    if cfg.root and cfg.preset != "synthetic" and not Path(cfg.root).exists():
        raise UserError(f"data root not found: {cfg.root} (pass --data PRESET:ROOT)")
    return cfg


def _default_out(file: Path) -> Path:
    return file.with_name(f"{file.stem}.offsets.pt")


def run(args: argparse.Namespace) -> int:
    import torch

    from fasterseg.cli.common import emit_json, resolve_device
    from fasterseg.data import build_dataset
    from fasterseg.engine import checkpoint as ckpt_io
    from fasterseg.evaluation import offsets as off

    t0 = time.perf_counter()
    if args.stride < 1:
        raise UserError(f"--stride must be >= 1, got {args.stride}")
    if args.max_images is not None and args.max_images < 1:
        raise UserError("--max-images must be >= 1")
    if not ckpt_io._is_checkpoint_path(args.checkpoint):
        raise UserError(f"{args.checkpoint}: pass a trained checkpoint .pt or a run directory "
                        "(offsets are fitted to trained weights)")
    device = resolve_device(args.device)
    file = ckpt_io._resolve_checkpoint_file(args.checkpoint)
    out = Path(args.out) if args.out else _default_out(file)
    if out.resolve() == file.resolve():
        raise UserError(f"--out {out} is the input checkpoint: fit-offsets never modifies it")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    ckpt = ckpt_io.load_checkpoint(file)
    data_cfg = _data_config(args, ckpt.get("config"))
    split = args.split or data_cfg.train_split
    if split == data_cfg.val_split or split == "holdout":
        print(f"warning: fitting on split {split!r}: numbers you then report on it are optimistic",
              file=sys.stderr)
    ds = build_dataset(data_cfg, split, train=False)
    num_classes = data_cfg.num_classes or ds.label_set.num_classes
    model, info = ckpt_io.load_model(file, num_classes=num_classes, device=device)
    print(f"fitting logit offsets for {file} on {data_cfg.preset} {split}: "
          f"{min(len(ds), args.max_images or len(ds))} images, every {args.stride}th pixel",
          flush=True)
    x, y = off.collect_log_probs(model, ds, num_classes=num_classes, stride=args.stride,
                                 device=device, max_images=args.max_images)
    offsets, before, after = off.fit_offsets(x, y)
    _, iou_before = off.miou_with_offsets(x, y, offsets * 0)
    _, iou_after = off.miou_with_offsets(x, y, offsets)

    model = model.cpu()
    off.fold_offsets(model, offsets)
    names = list(info.get("class_names") or ds.label_set.class_names)
    previous = ckpt.get("logit_offsets") or {}
    total = offsets.clone()
    if previous.get("offsets") and len(previous["offsets"]) == len(offsets):
        total += torch.tensor(previous["offsets"])  # fitted again on top: cumulative
    state = {k: v for k, v in ckpt.items() if k not in _TRAINING_STATE}
    state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state["logit_offsets"] = off.offsets_record(
        total, names, split=split, images=min(len(ds), args.max_images or len(ds)),
        pixels=int(y.numel()), stride=args.stride, fit_miou_before=before, fit_miou_after=after,
        source=str(file))
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_io.save_checkpoint(state, out)

    print(f"{'class':<14}{'offset':>8}{'IoU before':>12}{'after':>8}")
    for name, o, a, b in zip(names, offsets.tolist(), iou_before, iou_after):
        print(f"{name:<14}{o:>+8.2f}{100 * a:>12.1f}{100 * b:>8.1f}")
    print(f"mIoU on {split} (fit pixels): {100 * before:.2f} -> {100 * after:.2f}")
    print(f"saved {out} (evaluate it on a split it was not fitted on)")
    if args.json:
        emit_json({
            "checkpoint": str(out), "source": str(file), "split": split,
            "offsets": dict(zip(names, [round(float(v), 4) for v in offsets])),
            "fit_miou_before": before, "fit_miou_after": after,
            "images": state["logit_offsets"]["images"], "pixels": int(y.numel()),
            "seconds": time.perf_counter() - t0,
        })
    return 0
