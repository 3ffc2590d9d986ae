"""Training-loader throughput: 512x1024 crops from full-size (1024x2048) images.

Writes a few full-size synthetic scenes as a folder-preset tree of PNGs in a temp folder (like
Cityscapes: PNG images and labels), then times ``build_train_loader`` with 2 workers, and the
per-sample stages in one process. Also times the on-the-fly synthetic preset at 1024x2048 and
scene generation at 256x512.

    OMP_NUM_THREADS=1 python benchmarks/data_loader.py [--workers 2] [--iters 30]

Prints a table and writes benchmarks/results/data_loader.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# OMP_WAIT_POLICY is left to the caller: PASSIVE helps on a loaded machine but slows a quiet
# 2-thread run by up to 1.5x; the result records which policy the numbers came from.

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fasterseg.config.data import DataConfig  # noqa: E402
from fasterseg.data import build_dataset, build_train_loader, generate_scene  # noqa: E402
from fasterseg.data.io import read_image, read_label  # noqa: E402
from fasterseg.data.synthetic import write_folder_tree  # noqa: E402
from fasterseg.utils.io import write_json  # noqa: E402


def loader_rate(ds, batch: int, iters: int, workers: int, warmup: int = 2) -> float:
    """Images per second over ``iters`` batches, after ``warmup`` batches (worker start-up)."""
    it = iter(build_train_loader(ds, batch, iters + warmup, seed=0, epoch=0, workers=workers))
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    n = 0
    for b in it:
        n += b["image"].shape[0]
    return n / (time.perf_counter() - t)


def stage_times(ds, reps: int = 8) -> dict:
    """Milliseconds per sample for each stage, in this process."""
    img_p, lab_p = ds.files[0]
    out = {}
    t = time.perf_counter()
    for _ in range(reps):
        image = read_image(img_p)
    out["read_image_ms"] = (time.perf_counter() - t) / reps * 1e3
    t = time.perf_counter()
    for _ in range(reps):
        label = read_label(lab_p)
    out["read_label_ms"] = (time.perf_counter() - t) / reps * 1e3
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(reps):
        ds.transform(image, label, rng)
    out["augment_ms"] = (time.perf_counter() - t) / reps * 1e3
    t = time.perf_counter()
    for i in range(reps):
        ds[(i % len(ds), i)]
    out["sample_total_ms"] = (time.perf_counter() - t) / reps * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=6, help="full-size images written (default 6)")
    ap.add_argument("--iters", type=int, default=24, help="timed batches (default 24)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_loader.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    full, crop = (1024, 2048), (512, 1024)
    res: dict = {
        "setup": {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                  "full_size": list(full), "crop_size": list(crop), "batch": args.batch,
                  "workers": args.workers, "iters": args.iters, "scales": [0.75, 1.0, 1.25],
                  "flip": True, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                  "torch": torch.__version__, "machine": platform.machine(),
                  "load_average_at_start": list(os.getloadavg())},
    }  # fmt: skip
    t = time.perf_counter()
    for i in range(10):
        generate_scene(0, "train", i, (256, 512))
    res["synthetic_scene_256x512_ms"] = (time.perf_counter() - t) / 10 * 1e3
    t = time.perf_counter()
    for i in range(3):
        generate_scene(0, "train", i, full)
    res["synthetic_scene_1024x2048_ms"] = (time.perf_counter() - t) / 3 * 1e3

    with tempfile.TemporaryDirectory() as tmp:
        write_folder_tree(tmp, args.images, 0, full, seed=0, progress=False)
        cfg = DataConfig(preset="folder", root=tmp, crop_size=crop, workers=args.workers)
        ds = build_dataset(cfg, "train", train=True)
        res["png_folder"] = {
            "images_per_s": loader_rate(ds, args.batch, args.iters, args.workers),
            "images_per_s_0_workers": loader_rate(ds, args.batch, max(2, args.iters // 4), 0, 1),
            **stage_times(ds),
        }
    cfg = DataConfig(preset="synthetic", synthetic_size=full, synthetic_train=64, crop_size=crop)
    ds = build_dataset(cfg, "train", train=True)
    res["synthetic_on_the_fly"] = {
        "images_per_s": loader_rate(ds, args.batch, max(4, args.iters // 2), args.workers)
    }
    for key in ("png_folder", "synthetic_on_the_fly"):
        for k, v in res[key].items():
            print(f"{key:<22}{k:<26}{v:9.1f}")
    print(f"{'synthetic scene':<22}{'256x512 ms':<26}{res['synthetic_scene_256x512_ms']:9.1f}")
    print(f"{'synthetic scene':<22}{'1024x2048 ms':<26}{res['synthetic_scene_1024x2048_ms']:9.1f}")
    res["setup"]["load_average_at_end"] = list(os.getloadavg())
    print(f"load average (start/end): {res['setup']['load_average_at_start'][0]:.1f} / "
          f"{res['setup']['load_average_at_end'][0]:.1f} on {os.cpu_count()} cores")
    write_json(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
