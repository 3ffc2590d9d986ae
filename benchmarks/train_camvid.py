"""Train the published FasterSeg student on real CamVid for a fixed CPU budget, then evaluate.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/train_camvid.py --minutes 8 [--root ../shared/data/camvid]

What it measures: how far the student gets on real street scenes within a small CPU budget
(seconds per iteration, iterations done, val mIoU), i.e. that training on real data works end to
end and how expensive it is. Images are trained and evaluated at half resolution (180x240,
``data.downsample=2``) so that a few hundred iterations fit in the budget; the mIoU is NOT
comparable to published CamVid numbers (which train for ~100x longer at 360x480 or 720x960).
Prints the numbers and writes benchmarks/results/train_camvid.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the shared folder sits next to the checkout (../shared); FASTERSEG_SHARED / FASTERSEG_CAMVID
# point elsewhere
SHARED = Path(os.environ.get("FASTERSEG_SHARED") or REPO.parent / "shared")
DEFAULT_ROOT = str(SHARED / "data" / "camvid")


def recorded_path(path: str | Path) -> str:
    """A path as written into results: relative to the checkout when inside it, else its name."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget (wall clock)")
    ap.add_argument("--root", default=os.environ.get("FASTERSEG_CAMVID", DEFAULT_ROOT))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--downsample", type=int, default=2)
    ap.add_argument("--crop", default="160x224", help="training crop HxW (multiples of 32)")
    ap.add_argument("--out", default=None, help="run directory (default runs/bench/train_camvid-<time>)")
    ap.add_argument("--result", default="benchmarks/results/train_camvid.json")
    args = ap.parse_args(argv)

    if not Path(args.root, "train").is_dir():
        print(f"CamVid not found at {args.root}: skipping (pass --root)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from fasterseg.config.core import apply_overrides, from_dict, load_yaml
    from fasterseg.config.presets import resolve_preset
    from fasterseg.config.train import TrainRunConfig
    from fasterseg.engine.trainer import train
    from fasterseg.utils.io import write_json

    h, w = (int(v) for v in args.crop.lower().split("x"))
    data = load_yaml(resolve_preset("camvid", "train"))
    apply_overrides(data, [
        f"data.root={args.root}", f"data.downsample={args.downsample}", f"data.crop_size=[{h},{w}]",
        "data.scales=[0.75,1.0,1.25]", "data.workers=0",
        f"train.batch_size={args.batch}", f"train.lr={args.lr}", "train.lr_decay=1.0",
        "train.epochs=100000", "train.iters_per_epoch=50", "train.eval_every=100000",
        f"train.time_budget_min={args.minutes}", "train.log_every=10", "train.seed=0",
        "train.cost_warmup=2", "train.cost_measure=5",
    ])
    cfg = from_dict(TrainRunConfig, data)
    run_dir = Path(args.out or f"runs/bench/train_camvid-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    res = train(cfg, run_dir, device="cpu")
    wall = time.perf_counter() - t0
    ev = res.last_eval or {}
    spi = res.cost["seconds_per_iter"] if res.cost else None
    out = {
        "benchmark": "train_camvid",
        "model": "fasterseg_student",
        "budget_minutes": args.minutes,
        "threads": args.threads,
        "batch_size": args.batch,
        "crop": [h, w],
        "downsample": args.downsample,
        "eval_resolution": [360 // args.downsample, 480 // args.downsample],
        "lr": args.lr,
        "iterations": res.step,
        "images_seen": res.step * args.batch,
        "seconds_per_iter_estimate": spi,
        "seconds_per_iter_overall": wall / max(res.step, 1),
        "wall_seconds_incl_eval": wall,
        "final_train_loss": res.history[-1]["train_loss"] if res.history else res.last_loss,
        "val_images": ev.get("images"),
        "val_miou": ev.get("miou"),
        "val_aacc": ev.get("aacc"),
        "val_macc": ev.get("macc"),
        "val_per_class_iou": ev.get("per_class_iou"),
        "peak_memory_mb": res.cost["peak_memory_mb"] if res.cost else None,
        "run_dir": recorded_path(run_dir),
        "torch": torch.__version__,
        "load_average_1_5_15": list(os.getloadavg()),  # shared machine: contention inflates s/iter
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(args.result, json.loads(json.dumps(out, default=float).replace("NaN", "null")))
    print(f"budget {args.minutes} min, {args.threads} thread(s): {res.step} iterations x batch "
          f"{args.batch} at {h}x{w} crops, {out['seconds_per_iter_overall']:.2f} s/iteration "
          f"(estimate {spi:.2f})" if spi else "")
    if ev:
        print(f"CamVid val ({ev['images']} images at {out['eval_resolution'][0]}x"
              f"{out['eval_resolution'][1]}): mIoU {100 * ev['miou']:.2f}  aAcc {100 * ev['aacc']:.2f}"
              f"  mAcc {100 * ev['macc']:.2f}")
    print(f"wrote {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
