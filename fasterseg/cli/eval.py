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

CKPT is a checkpoint (.pt or a run dir: its best.pt, else last.pt), or a model name / arch JSON
(random weights). Output folders are checked before the first image: they must be writable,
outside the dataset, and --save-pred must not hold files of the same names (--overwrite).
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
                   help="write label PNGs, colour maps and overlays to DIR/labels, DIR/color, "
                   "DIR/overlay (never inside the dataset's image or label folders)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace prediction files that already exist in --save-pred (without it, "
                   "existing files are an error before anything is evaluated)")
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
        from fasterseg.cli.common import merge_data_spec

        data = merge_data_spec(data, args.data)
    elif not data:
        raise UserError("pass --data PRESET[:ROOT] (e.g. camvid:/data/camvid or synthetic) "
                        "or -c CONFIG")
    tree = {"data": data}
    apply_overrides(tree, [s if s.startswith("data.") else f"data.{s}" for s in args.set])
    cfg = from_dict(DataConfig, tree["data"], "data")
    if cfg.root and not Path(cfg.root).exists():
        raise UserError(f"data root not found: {cfg.root}")
    return cfg


def _default_out(args, spec: str, is_ckpt: bool, split: str) -> Path:
    if args.out:
        return Path(args.out)
    if is_ckpt:
        p = Path(spec)
        return (p.parent if p.is_file() else p) / f"eval-{split}"
    return Path("runs/eval") / f"{Path(spec).stem}-{split}"


class _GuardedWriter:
    """Calls the prediction writer until a write fails, then stops writing (the evaluation goes
    on, so a full disk or a vanished folder does not lose the metrics)."""

    def __init__(self, writer):
        self.writer = writer
        self.error: str | None = None

    @property
    def count(self) -> int:
        return self.writer.count

    def __call__(self, name, pred, image) -> None:
        if self.error is not None:
            return
        try:
            self.writer(name, pred, image)
        except (OSError, UserError) as e:
            self.error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            print(f"warning: saving predictions stopped after {self.writer.count} image(s) "
                  f"({self.error}); the evaluation goes on", file=sys.stderr, flush=True)


def run(args) -> int:
    import torch

    from fasterseg.cli.common import emit_json, resolve_device
    from fasterseg.data import build_dataset, build_eval_loader
    from fasterseg.engine import checkpoint as ckpt_io
    from fasterseg.engine import distributed as D
    from fasterseg.evaluation import (
        PredictionWriter,
        evaluate,
        format_table,
        outputs,
        save_confusion,
    )
    from fasterseg.utils.io import write_json

    device = resolve_device(args.device)
    spec = args.checkpoint
    is_ckpt = ckpt_io._is_checkpoint_path(spec)
    if args.window and (args.window[0] % 32 or args.window[1] % 32):
        raise UserError(f"--window {args.window[0]}x{args.window[1]} must be divisible by 32")
    if any(s <= 0 for s in args.scales):
        raise UserError("--scales must be positive")
    if args.max_images is not None and args.max_images < 1:
        raise UserError("--max-images must be >= 1")
    ckpt_config = ckpt_io.load_checkpoint(spec).get("config") if is_ckpt else None
    data_cfg = build_data_config(args, ckpt_config)
    split = args.split or data_cfg.val_split
    out = _default_out(args, spec, is_ckpt, split)
    # where results go is checked before anything is evaluated (never into the dataset)
    protected = outputs.nearby_dataset_folders([p for p in (out, args.save_pred) if p])
    if data_cfg.root:
        protected += outputs.dataset_folders(data_cfg.root, data_cfg.preset)
    outputs.check_not_in_dataset([out], protected, "--out", recursive=False)
    info = D.init_from_env(device)
    if info.device.type == "cpu":
        from fasterseg.bench import tuning

        tuning.tune_malloc()  # speed only: big activations stay in the heap
    try:
        if info.is_main:
            outputs.ensure_writable(out, "--out", "" if args.out else "; pass --out DIR")
        ds = build_dataset(data_cfg, split, train=False)
        label_set = ds.label_set
        num_classes = data_cfg.num_classes or label_set.num_classes
        model, minfo = ckpt_io.load_model(spec, num_classes=num_classes, device=info.device)
        trained_on = (minfo.get("label_set") or {}).get("name")
        if trained_on and trained_on != label_set.name and info.is_main:
            print(f"warning: {spec} was trained on {trained_on!r} labels, evaluating on "
                  f"{label_set.name!r}: class ids may not correspond", file=sys.stderr)
        writer = None
        if args.save_pred:
            mapping = getattr(label_set, "train_id_to_label_id", None)
            pw = PredictionWriter(args.save_pred, label_set.palette,
                                  train_id_to_label_id=mapping,
                                  mean=data_cfg.mean, std=data_cfg.std)
            outputs.check_not_in_dataset(pw.subdirs(), protected, "--save-pred")
            names = list(getattr(ds, "names", []))[: args.max_images or None]
            outputs.check_no_existing([f for n in names for f in pw.paths(n)], "--save-pred",
                                      args.overwrite)
            outputs.ensure_writable(args.save_pred, "--save-pred")
            writer = _GuardedWriter(pw)
        loader = build_eval_loader(ds, workers=data_cfg.workers, distributed=info.enabled)
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
        confusion = m.pop("confusion")
        result = {k: v for k, v in m.items()}
        result.update(checkpoint=str(spec), weights=minfo["source"], data=data_cfg.preset,
                      split=split,
                      flip=args.flip, scales=list(args.scales),
                      window=list(args.window) if args.window else None, device=str(info.device),
                      torch=torch.__version__)
        # the metrics are shown first: a failure to save them below loses nothing
        print(format_table(m), flush=True)
        failures = []
        try:
            save_confusion(confusion, out, list(label_set.class_names), plot=args.plot)
            write_json(out / "metrics.json", _json_safe(result))
            print(f"confusion matrix and metrics: {out}")
        except (OSError, UserError) as e:
            why = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            failures.append(f"saving the metrics to {out} failed ({why})")
        if writer:
            print(f"predictions: {args.save_pred} ({writer.count} images)")
            if writer.error:
                failures.append(f"saving predictions to {args.save_pred} stopped after "
                                f"{writer.count} image(s) ({writer.error})")
        if args.json:
            emit_json(result)
        if failures:
            raise UserError("the evaluation finished (metrics above) but "
                            + "; ".join(failures))
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
