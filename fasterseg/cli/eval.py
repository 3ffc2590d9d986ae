"""``fasterseg eval``: mIoU / per-class IoU / aAcc / mAcc of a checkpoint on a dataset split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg eval runs/tiny/best.pt -c runs/tiny/config.yaml        # data as in training
  fasterseg eval runs/camvid/best.pt --data camvid:/data/camvid --flip --scales 0.75 1 1.25
  fasterseg eval best.pt --data cityscapes:/data/cityscapes --window 512x1024 --save-pred preds
  fasterseg eval fasterseg_student --data synthetic --set data.synthetic_val=4 --json  # smoke test

CKPT is a checkpoint (.pt or a run dir), or a model name / arch JSON (random weights).
"""


def register(subparsers, parents) -> None:
    from fasterseg.cli.common import add_device, add_json, parse_size

    p = subparsers.add_parser(
        "eval",
        parents=parents,
        help="evaluate a checkpoint (mIoU, per-class IoU, aAcc, mAcc)",
        description="Whole-image evaluation (padding to /32, optional flip, multi-scale and "
        "sliding window); metrics from one confusion matrix, saved with the matrix itself.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint, run dir, model name or arch JSON")
    p.add_argument("--data", metavar="PRESET[:ROOT]",
                   help="dataset, e.g. camvid:/data/camvid or synthetic "
                   "(default: from -c or the checkpoint)")
    p.add_argument("-c", "--config", help="YAML config whose data: section describes the dataset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data value, e.g. --set data.synthetic_val=8")
    p.add_argument("--split", help="split to evaluate (default: data.val_split, usually val)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="S",
                   help="test scales, probabilities averaged (default 1)")
    p.add_argument("--window", type=parse_size, metavar="HxW",
                   help="sliding-window size (multiples of 32) for images too large to fit at once")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--save-pred", metavar="DIR",
                   help="write label PNGs, colour maps and overlays here")
    p.add_argument("--out", metavar="DIR", help="where metrics.json and the confusion matrix go "
                   "(default: <ckpt dir>/eval-<split>)")
    p.add_argument("--plot", action="store_true", help="also save confusion.png")
    add_device(p)
    add_json(p)
    p.set_defaults(func=run)


def build_data_config(args, ckpt_config: dict | None):
    """DataConfig from -c CONFIG / the checkpoint's config, then --data, then --set."""
    from fasterseg.config.core import apply_overrides, from_dict, load_yaml
    from fasterseg.config.data import DataConfig

    data: dict = {}
    if args.config:
        from fasterseg.cli.train import resolve_config_path

        raw = load_yaml(resolve_config_path(args.config))
        data = dict(raw.get("data", {}))
    elif ckpt_config and not args.data:
        data = dict(ckpt_config.get("data", {}))
    if args.data:
        preset, _, root = args.data.partition(":")
        if preset != data.get("preset"):  # another dataset: keep only geometry-free defaults
            data = {k: v for k, v in data.items() if k in ("mean", "std", "workers")}
        data["preset"] = preset
        if root:
            data["root"] = root
    elif not data:
        raise UserError("pass --data PRESET[:ROOT] (e.g. camvid:/data/camvid or synthetic) "
                        "or -c CONFIG")
    tree = {"data": data}
    apply_overrides(tree, [s if s.startswith("data.") else f"data.{s}" for s in args.set])
    cfg = from_dict(DataConfig, tree["data"], "data")
    if cfg.root and not Path(cfg.root).exists():
        raise UserError(f"data root not found: {cfg.root}")
    return cfg


def run(args) -> int:
    import torch

    from fasterseg.cli.common import emit_json, resolve_device
    from fasterseg.data import build_dataset, build_eval_loader
    from fasterseg.engine import checkpoint as ckpt_io
    from fasterseg.engine import distributed as D
    from fasterseg.evaluation import PredictionWriter, evaluate, format_table, save_confusion
    from fasterseg.utils.io import write_json

    device = resolve_device(args.device)
    spec = args.checkpoint
    is_ckpt = ckpt_io._is_checkpoint_path(spec)
    if is_ckpt and not Path(spec).exists():
        raise UserError(f"checkpoint not found: {spec}")
    if args.window and (args.window[0] % 32 or args.window[1] % 32):
        raise UserError(f"--window {args.window[0]}x{args.window[1]} must be divisible by 32")
    if any(s <= 0 for s in args.scales):
        raise UserError("--scales must be positive")
    ckpt_config = ckpt_io.load_checkpoint(spec).get("config") if is_ckpt else None
    data_cfg = build_data_config(args, ckpt_config)
    split = args.split or data_cfg.val_split
    info = D.init_from_env(device)
    try:
        ds = build_dataset(data_cfg, split, train=False)
        label_set = ds.label_set
        num_classes = data_cfg.num_classes or label_set.num_classes
        model, minfo = ckpt_io.load_model(spec, num_classes=num_classes, device=info.device)
        trained_on = (minfo.get("label_set") or {}).get("name")
        if trained_on and trained_on != label_set.name and info.is_main:
            print(f"warning: {spec} was trained on {trained_on!r} labels, evaluating on "
                  f"{label_set.name!r}: class ids may not correspond", file=sys.stderr)
        loader = build_eval_loader(ds, workers=data_cfg.workers, distributed=info.enabled)
        writer = None
        if args.save_pred:
            mapping = getattr(label_set, "train_id_to_label_id", None)
            writer = PredictionWriter(args.save_pred, label_set.palette,
                                      train_id_to_label_id=mapping,
                                      mean=data_cfg.mean, std=data_cfg.std)
        if info.is_main:
            print(f"evaluating {spec} ({minfo['source']} weights) on {data_cfg.preset} {split}: "
                  f"{len(ds)} images, {num_classes} classes, flip={args.flip}, "
                  f"scales={args.scales}, window={args.window}", flush=True)
        m = evaluate(model, loader, num_classes=num_classes, device=info.device,
                     ignore_index=getattr(label_set, "ignore_index", 255), flip=args.flip,
                     scales=args.scales, window=args.window, class_names=label_set.class_names,
                     max_images=args.max_images, on_prediction=writer)
        if not info.is_main:
            return 0
        if m["images"] == 0:
            raise UserError(f"no images in split {split!r} of {data_cfg.preset}")
        out = Path(args.out) if args.out else (
            (Path(spec).parent if Path(spec).is_file() else Path(spec)) / f"eval-{split}"
            if is_ckpt else Path("runs/eval") / f"{Path(spec).stem}-{split}")
        confusion = m.pop("confusion")
        save_confusion(confusion, out, list(label_set.class_names), plot=args.plot)
        result = {k: v for k, v in m.items()}
        result.update(checkpoint=str(spec), weights=minfo["source"], data=data_cfg.preset,
                      split=split,
                      flip=args.flip, scales=list(args.scales),
                      window=list(args.window) if args.window else None, device=str(info.device),
                      torch=torch.__version__)
        write_json(out / "metrics.json", _json_safe(result))
        print(format_table(m))
        print(f"confusion matrix and metrics: {out}")
        if writer:
            print(f"predictions: {args.save_pred} ({writer.count} images)")
        if args.json:
            emit_json(result)
        return 0
    finally:
        D.cleanup(info)


def _json_safe(obj):
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
