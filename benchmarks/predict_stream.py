"""``fasterseg predict`` end to end on CamVid frames: frames/s, model time and where the rest goes.

Issue 12's target: >= 25 frames/s end to end (first read to last write) on 360x480 CamVid frames
with 2 cores. Two parts, both on the CamVid-trained searched student and CamVid val:

1. ``stages``: every step of one frame timed alone, in this process, over the first frames:
   decode, normalise + pad, the model (eager and ``--fast``), argmax, colourise, PNG encodes
   (the old RGB/zlib-6 writes next to the palette/zlib-1 ones), overlay blending (float vs
   integer) and the atomic write with and without fsync. Wall and CPU medians: under a loaded
   machine the CPU time is the steadier number.
2. ``runs``: ``fasterseg predict FOLDER -o TMP --json`` in-process, eager and ``--fast``
   interleaved, with the JSON it prints (``fps_end_to_end``, ``model_ms``, stage medians) and the
   process CPU time per frame; plus the pixel agreement of ``--fast`` with eager.

3. ``--deploy CHOICE.json``: instead of 1 and 2, the ``bench --auto`` choice's path built once
   (``--onnx FILE``: a saved int8 model instead of calibrating again) and the stream run
   in-process in three configurations, interleaved: ``before`` (the stages as they were: two-pass
   normalisation, ``np.argmax``, Pillow PNGs, one frame at a time with all threads), ``after``
   (table normalisation, running-max argmax, Up-filtered PNGs) with 1 worker x N threads, and
   ``after`` with 2 workers x N/2 threads (the new default). Process CPU per frame next to fps.

    .venv/bin/python benchmarks/predict_stream.py                 # defaults below
    .venv/bin/python benchmarks/predict_stream.py --repeats 3 --note "quiet machine"
    .venv/bin/python benchmarks/predict_stream.py --ckpt runs/camvid-cpu-cw/student/best.pt \
        --deploy runs/camvid-cpu-cw/student/best.384x480.choice.json --ab-frames 101
    .venv/bin/python benchmarks/predict_stream.py --ckpt runs/camvid-cpu-cw/student/best.pt \
        --io-ab --threads 1     # 4. decode and write CPU: Pillow/zlib vs libspng/ISA-L

Writes ``benchmarks/results/predict_stream.json`` (``--deploy``: the ``ab`` key of
``benchmarks/results/predict_deploy.json``, other keys kept). Needs the checkpoint and
../shared/data/camvid.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _med(xs: list[float]) -> float:
    return round(1000 * statistics.median(xs), 3)


def _timed(fn, n: int, cpu=time.thread_time) -> dict:
    wall, cpus = [], []
    out = None
    for _ in range(n):
        w, c = time.perf_counter(), cpu()
        out = fn()
        cpus.append(cpu() - c)
        wall.append(time.perf_counter() - w)
    return {"wall_ms": _med(wall), "cpu_ms": _med(cpus), "result": out}


def profile_stages(ckpt: str, files: list[Path], threads: int, reps: int) -> dict:
    """Median wall/CPU ms of each step of one frame, each step alone."""
    import torch
    from PIL import Image

    from fasterseg.data.io import _open
    from fasterseg.deploy.paths import build_candidate
    from fasterseg.deploy.stream import Normalizer, padded_size
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.evaluation.images import to_rgb8
    from fasterseg.evaluation.inference import MIN_SIZE, pad_to_multiple
    from fasterseg.evaluation.predictions import _palette_array, denormalize
    from fasterseg.utils.io import atomic_write

    torch.set_num_threads(threads)
    model, info = load_model(ckpt)
    data = (info.get("config") or {}).get("data", {})
    mean, std = data.get("mean", (0.485, 0.456, 0.406)), data.get("std", (0.229, 0.224, 0.225))
    pal = _palette_array((info.get("label_set") or {}).get("palette") or [], 256)
    h, w = np.asarray(Image.open(files[0])).shape[:2]
    size = padded_size(h, w)
    jit = build_candidate("jit-fp32", model, size, threads=threads)
    norm, norm_cl = Normalizer(mean, std), Normalizer(mean, std, channels_last=True)
    rows: dict[str, list[dict]] = {}

    def add(name: str, fn, cpu=time.thread_time) -> object:
        r = _timed(fn, 1, cpu)
        rows.setdefault(name, []).append(r)
        return r["result"]

    tmp = Path(tempfile.mkdtemp(prefix="predict-stream-bench-"))
    for k in range(reps):
        f = files[k % len(files)]
        rgb = add("decode (PIL open + to_rgb8)", lambda: to_rgb8(_open(f, "image"))[0])
        m, sd = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        add("normalise + pad, torch (old predict)", lambda: pad_to_multiple(
            ((torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255 - m) / sd)[None],
            min_size=MIN_SIZE))
        x = add("normalise + pad, numpy (stream, NCHW)", lambda: norm(rgb))
        xc = add("normalise + pad, numpy (stream, NHWC for --fast)", lambda: norm_cl(rgb))
        with torch.inference_mode():
            logits = add("model eager fp32", lambda: model(x), cpu=time.process_time)
        add("model --fast (jit-fp32)", lambda: jit(xc), cpu=time.process_time)
        add("softmax + argmax (old predict)",
            lambda: logits.float().softmax(1)[0, :, :h, :w].argmax(0).cpu().numpy())
        add("argmax torch -> uint8", lambda: logits[0, :, :h, :w].argmax(0).to(torch.uint8).numpy())
        ids = add("argmax numpy -> uint8 (stream)",
                  lambda: logits[0, :, :h, :w].numpy().argmax(0).astype(np.uint8))
        col = add("colourise (palette lookup)", lambda: pal[ids])
        add("PNG label, zlib 6 (old)", lambda: Image.fromarray(ids).save(io.BytesIO(), "PNG"))
        add("PNG label, zlib 1", lambda: Image.fromarray(ids).save(io.BytesIO(), "PNG",
                                                                  compress_level=1))
        add("PNG label, zlib 1 + RLE (stream)", lambda: Image.fromarray(ids).save(
            io.BytesIO(), "PNG", compress_level=1, compress_type=zlib.Z_RLE))
        add("PNG colour RGB, zlib 6 (old)", lambda: Image.fromarray(col).save(io.BytesIO(), "PNG"))

        def pmode():
            im = Image.fromarray(ids)
            im.putpalette(pal.tobytes())
            im.save(io.BytesIO(), "PNG", compress_level=1, compress_type=zlib.Z_RLE)

        add("PNG colour palette, zlib 1 + RLE (stream)", pmode)
        add("overlay float from normalised (old)", lambda: (
            0.5 * denormalize(x[0, :, :h, :w], mean, std).astype(np.float32)
            + 0.5 * col.astype(np.float32)).round().astype(np.uint8))
        mix = add("overlay integer from uint8", lambda: (
            (rgb.astype(np.uint16) * 128 + col.astype(np.uint16) * 128 + 128) >> 8
        ).astype(np.uint8))
        add("PNG overlay RGB, zlib 1", lambda: Image.fromarray(mix).save(io.BytesIO(), "PNG",
                                                                       compress_level=1))
        add("PNG overlay RGB, zlib 1 + RLE (stream)", lambda: Image.fromarray(mix).save(
            io.BytesIO(), "PNG", compress_level=1, compress_type=zlib.Z_RLE))
        data_b = io.BytesIO()
        Image.fromarray(ids).save(data_b, "PNG", compress_level=1)
        add("atomic write with fsync (old)", lambda: atomic_write(
            tmp / f"a{k}.png", lambda fo: fo.write(data_b.getvalue()), mode="wb"))
        add("atomic write without fsync", lambda: atomic_write(
            tmp / f"b{k}.png", lambda fo: fo.write(data_b.getvalue()), mode="wb", fsync=False))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return {name: {"wall_ms": round(statistics.median(r["wall_ms"] for r in rs), 3),
                   "cpu_ms": round(statistics.median(r["cpu_ms"] for r in rs), 3)}
            for name, rs in rows.items()} | {"_input": f"{h}x{w} padded to {size[0]}x{size[1]}"}


def run_predict(ckpt: str, data: Path, out: Path, threads: int, fast: bool) -> dict:
    from fasterseg.cli.main import main

    argv = ["predict", ckpt, str(data), "-o", str(out), "--overwrite", "--threads", str(threads),
            "--json"] + (["--fast"] if fast else [])
    buf = io.StringIO()
    c0 = time.process_time()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    cpu = time.process_time() - c0
    if rc != 0:
        raise SystemExit(f"predict failed ({rc}): {buf.getvalue()[-500:]}")
    res = json.loads(buf.getvalue().strip().splitlines()[-1])
    keep = ("images", "fps_end_to_end", "model_ms", "stage_ms", "bottleneck", "wall_s",
            "prepare_s", "path", "threads")
    row = {k: res[k] for k in keep}
    row["cpu_ms_per_frame"] = round(1000 * cpu / res["images"], 2)  # whole process, all threads
    return row


def agreement(a: Path, b: Path) -> float:
    from PIL import Image

    same = total = 0
    for p in sorted((a / "labels").glob("*.png")):
        x, y = np.asarray(Image.open(p)), np.asarray(Image.open(b / "labels" / p.name))
        same += int((x == y).sum())
        total += x.size
    return same / total


def _legacy_stages():
    """The stream's stages as they were before the table normalisation, the running-max argmax
    and the Up-filtered PNGs (for the before/after comparison)."""
    from PIL import Image

    from fasterseg.deploy.stream import Normalizer, Segmenter, StreamWriter
    from fasterseg.utils.io import atomic_write

    class OldNormalizer(Normalizer):
        def __call__(self, rgb):
            import torch

            from fasterseg.deploy.stream import padded_size

            h, w = rgb.shape[:2]
            hp, wp = padded_size(h, w) if self.pad else (h, w)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            x = torch.empty(1, 3, hp, wp, memory_format=fmt)
            x[..., h:, :].zero_()
            x[..., :h, w:].zero_()
            hwc = x[0].permute(1, 2, 0).numpy()[:h, :w]
            np.subtract(rgb, self.shift, out=hwc)
            np.multiply(hwc, self.scale, out=hwc)
            return x

    class OldSegmenter(Segmenter):
        def __call__(self, x, size):
            h, w = size
            pred = self.predictor(tuple(x.shape[-2:]))
            t0 = time.perf_counter()
            logits = pred(x)
            t1 = time.perf_counter()
            ids = logits[0, :, :h, :w].numpy().argmax(0).astype(np.uint8)
            return ids, t1 - t0, time.perf_counter() - t1

    class OldWriter(StreamWriter):
        def _save(self, path, img, palette=None):
            im = Image.fromarray(img)
            if palette is not None:
                im.putpalette(palette)
            atomic_write(path, lambda f: im.save(f, format="PNG", compress_level=1,
                                                 compress_type=zlib.Z_RLE), mode="wb", fsync=False)

    return OldNormalizer, OldSegmenter, OldWriter


def deploy_ab(args, files: list[Path]) -> dict:
    """``before`` vs ``after`` (1 and 2 workers) on the choice's path, built once, interleaved."""
    import torch

    from fasterseg.deploy.auto import build_from_choice, load_choice
    from fasterseg.deploy.stream import (
        Normalizer,
        Segmenter,
        Source,
        StreamWriter,
        padded_size,
        run_stream,
    )
    from fasterseg.engine.checkpoint import load_model

    model, info = load_model(args.ckpt)
    data = (info.get("config") or {}).get("data", {})
    mean, std = data.get("mean", (0.485, 0.456, 0.406)), data.get("std", (0.229, 0.224, 0.225))
    pal = (info.get("label_set") or {}).get("palette")
    choice = load_choice(args.deploy)
    from PIL import Image

    h, w = Image.open(files[0]).size[::-1]
    size = padded_size(h, w)
    n = args.threads
    t0 = time.perf_counter()
    if args.onnx:
        from fasterseg.deploy.int8 import OrtInt8Predictor

        blob = Path(args.onnx).read_bytes()
        full = OrtInt8Predictor(blob, size, n, {})
    else:
        full = build_from_choice(model, {**choice, "threads": n}, size)
    half = None
    if hasattr(full, "_bytes"):  # an onnxruntime int8 model: the same bytes at n/2 threads
        from fasterseg.deploy.int8 import OrtInt8Predictor

        half = OrtInt8Predictor(full._bytes, size, max(1, n // 2), full.info)
    else:
        half = build_from_choice(model, {**choice, "threads": max(1, n // 2)}, size)
    prepare_s = time.perf_counter() - t0
    OldNormalizer, OldSegmenter, OldWriter = _legacy_stages()
    sources = [Source(f, f.stem) for f in files[:args.ab_frames]]
    configs = {
        f"before (1 worker x {n} threads)": (OldNormalizer, OldSegmenter, OldWriter, full, 1),
        f"after (1 worker x {n} threads)": (Normalizer, Segmenter, StreamWriter, full, 1),
        f"after (2 workers x {max(1, n // 2)} thread(s))": (Normalizer, Segmenter, StreamWriter,
                                                            half, 2),
    }
    import fasterseg.utils.png as png

    fast_read, overlay = png.read_rgb8, False
    if args.io_compare:  # --workers 2 as above, overlays on: Pillow/zlib vs libspng/ISA-L
        class ZlibWriter(StreamWriter):
            def __init__(self, *a, **kw):
                super().__init__(*a, deflate="zlib", **kw)

        w2 = f"2 workers x {max(1, n // 2)} thread(s)"
        configs = {f"Pillow decode + zlib PNGs ({w2})": (Normalizer, Segmenter, ZlibWriter,
                                                         half, 2),
                   f"libspng decode + ISA-L PNGs ({w2})": (Normalizer, Segmenter, StreamWriter,
                                                           half, 2)}
        overlay = True
    tmp = Path(tempfile.mkdtemp(prefix="predict-deploy-ab-"))
    runs, labels = [], {}
    for r in range(args.repeats):
        for k, (name, (norm_cls, seg_cls, writer_cls, pred, workers)) in enumerate(
                configs.items()):
            out = tmp / str(k)
            png.read_rgb8 = (lambda path: None) if name.startswith("Pillow") else fast_read
            writer = writer_cls(out, pal or [], info["num_classes"], mean=mean, std=std,
                                overlay=overlay)
            seg = seg_cls(lambda s, p=pred: p, torch.device("cpu"), workers=workers)
            torch.set_num_threads(n if workers == 1 else max(1, n // 2))
            c0 = time.process_time()
            res = run_stream(sources, norm_cls(mean, std), seg, writer)
            cpu = time.process_time() - c0
            row = {"config": name, "repeat": r, "images": res.images,
                   "fps_end_to_end": round(res.fps_end_to_end, 3),
                   "stage_ms": res.stage_ms(), "bottleneck": res.bottleneck(),
                   "cpu_ms_per_frame": round(1000 * cpu / res.images, 2),
                   "load_average": round(os.getloadavg()[0], 2)}
            runs.append(row)
            print(f"  {name:34s} {row['fps_end_to_end']:.2f} frames/s, CPU "
                  f"{row['cpu_ms_per_frame']} ms/frame, stages {row['stage_ms']}", flush=True)
            labels[name] = {p.name: np.asarray(Image.open(p)) for p in (out / "labels").iterdir()}
    png.read_rgb8 = fast_read
    ref = labels[list(configs)[0]]
    identical = {name: all(np.array_equal(ref[f], lab[f]) for f in ref)
                 for name, lab in labels.items()}
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    for name in configs:
        rs = [r for r in runs if r["config"] == name]
        summary[name] = {
            "fps_end_to_end_median": round(statistics.median(r["fps_end_to_end"] for r in rs), 2),
            "cpu_ms_per_frame_median": round(statistics.median(r["cpu_ms_per_frame"]
                                                               for r in rs), 2),
            "stage_ms_median": {s: round(statistics.median(r["stage_ms"][s] for r in rs), 3)
                                for s in rs[0]["stage_ms"]},
            "labels_identical_to_before": identical[name]}
    return {"choice": args.deploy, "path": choice["chosen"]["name"],
            "model": (f"saved int8 model {Path(args.onnx).name} (--onnx)" if args.onnx else "built from the choice"), "frames": len(sources),
            "threads": n, "prepare_s": round(prepare_s, 2), "runs": runs, "summary": summary}


def io_ab(args, files: list[Path]) -> dict:
    """CPU (``thread_time``) of the reader's decode and the writer's whole ``write`` (label,
    palette colour and overlay PNGs, blend, class counts, atomic writes), ``before`` (Pillow
    decode, zlib run-length deflate) and ``after`` (libspng decode, ISA-L deflate), interleaved
    frame by frame in this process; label PNGs decoded and compared; file sizes."""
    import shutil

    import torch
    from PIL import Image

    import fasterseg.utils.png as png
    from fasterseg.data.io import _open, to_rgb8
    from fasterseg.deploy.stream import EagerPredictor, Normalizer, StreamWriter, argmax_labels
    from fasterseg.engine.checkpoint import load_model

    if png.read_rgb8(files[0]) is None or png.deflate_engine("auto") != "isal":
        raise SystemExit("--io-ab needs pyspng and isal installed")
    torch.set_num_threads(args.threads)
    model, info = load_model(args.ckpt)
    data = (info.get("config") or {}).get("data", {})
    mean, std = data.get("mean", (0.485, 0.456, 0.406)), data.get("std", (0.229, 0.224, 0.225))
    pal = (info.get("label_set") or {}).get("palette") or []
    norm, eager = Normalizer(mean, std), EagerPredictor(model, "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="predict-io-ab-"))
    writers = {k: StreamWriter(tmp / k, pal, info["num_classes"], mean=mean, std=std,
                               overlay=True, deflate=d) for k, d in (("before", "zlib"),
                                                                      ("after", "auto"))}
    cpu: dict[str, list[float]] = {}
    sizes_l: dict[str, list[float]] = {}
    identical = True

    def timed(key: str, fn):
        c = time.thread_time()
        out = fn()
        cpu.setdefault(key, []).append(time.thread_time() - c)
        return out

    for k, f in enumerate(files[:args.ab_frames]):
        order = ("before", "after") if k % 2 == 0 else ("after", "before")
        rgbs = {}
        for which in order:
            rgbs[which] = timed(f"decode {which}", (lambda: to_rgb8(_open(f, "image"))[0])
                                if which == "before" else (lambda: png.read_rgb8(f)))
        identical &= np.array_equal(rgbs["before"], rgbs["after"])
        h, w = rgbs["before"].shape[:2]
        ids = argmax_labels(eager(norm(rgbs["before"]))[0, :, :h, :w].numpy())
        for which in order:
            timed(f"write {which}", lambda: writers[which].write(f.stem, ids, rgbs[which]))
        for which in order:
            lab = np.asarray(Image.open(tmp / which / "labels" / f"{f.stem}.png"))
            identical &= np.array_equal(lab, ids)
        if k < args.level_frames:  # the overlay alone: size vs CPU per deflate level
            col = writers["after"].pal[ids].astype(np.uint16)
            mix = ((rgbs["before"].astype(np.uint16) * 128 + col * 128 + 128) >> 8)
            mix = mix.astype(np.uint8)
            for name, kw in _DEFLATES:
                data = timed(f"overlay {name}", lambda: png.encode_png(mix, **kw))
                sizes_l.setdefault(name, []).append(len(data) / 1024)
    sizes = {which: {d: round(sum(p.stat().st_size for p in (tmp / which / d).iterdir())
                              / 1024 / len(list((tmp / which / d).iterdir())), 1)
                     for d in ("labels", "color", "overlay")} for which in writers}
    shutil.rmtree(tmp, ignore_errors=True)
    med = {k: _med(v) for k, v in cpu.items() if not k.startswith("overlay ")}
    levels = {k: {"cpu_ms": _med(cpu[f"overlay {k}"]), "kib": round(statistics.median(v), 1)}
              for k, v in sizes_l.items()}
    return {"what": "CPU ms per frame (thread_time, median) of decode and write, before = "
                    "Pillow decode + zlib level-1 run-length deflate, after = libspng decode + "
                    "ISA-L level-1 deflate, interleaved frame by frame in one process",
            "frames": min(len(files), args.ab_frames), "cpu_ms_median": med,
            "saved_ms_per_frame": round(med["decode before"] - med["decode after"]
                                        + med["write before"] - med["write after"], 2),
            "kib_per_file": sizes, "pixels_and_labels_identical": bool(identical),
            "overlay_png_by_deflate": levels, "level_frames": min(args.level_frames, len(files)),
            "versions": {"isal": _version("isal"), "pyspng": _version("pyspng"),
                         "pillow": _version("pillow")}}


_DEFLATES = [(f"zlib L{lv} run-length", {"level": lv, "deflate": "zlib"}) for lv in range(1, 7)]
_DEFLATES += [(f"zlib L{lv} default strategy", {"level": lv, "deflate": "zlib", "strategy": 0})
              for lv in range(1, 7)]
_DEFLATES += [(f"ISA-L L{lv}", {"level": lv, "deflate": "isal"}) for lv in range(4)]


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default="runs/camvid-cpu/student/best.pt")
    ap.add_argument("--data", default="../shared/data/camvid/val")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="end-to-end runs per path")
    ap.add_argument("--stage-frames", type=int, default=20, help="frames for the stage profile")
    ap.add_argument("--note", default="", help="free text stored with the result (machine load)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/predict_stream.json "
                    "(--deploy: predict_deploy.json, key ab)")
    ap.add_argument("--deploy", metavar="CHOICE.json", help="before/after on this choice's path")
    ap.add_argument("--onnx", metavar="FILE", help="--deploy: a saved int8 .onnx (no calibration)")
    ap.add_argument("--ab-frames", type=int, default=101, help="--deploy/--io-ab: frames")
    ap.add_argument("--level-frames", type=int, default=20, help="--io-ab: frames for the "
                    "overlay size vs CPU table per deflate level")
    ap.add_argument("--io-compare", action="store_true", help="--deploy: Pillow/zlib vs "
                    "libspng/ISA-L with overlays, --workers 2 (predict_deploy.json, key ab_io)")
    ap.add_argument("--io-ab", action="store_true", help="CPU of decode and write, Pillow/zlib "
                    "vs libspng/ISA-L (predict_deploy.json, key io_ab)")
    args = ap.parse_args()
    os.chdir(ROOT)
    data = Path(args.data)
    if not Path(args.ckpt).is_file() or not data.is_dir():
        print(f"needs {args.ckpt} and {data}", file=sys.stderr)
        return 1
    files = sorted(data.glob("*.png"))
    from fasterseg.latency.backends import device_name, library_versions
    from fasterseg.utils.io import write_json

    if args.io_ab:
        out = Path(args.out or "benchmarks/results/predict_deploy.json")
        kept = json.loads(out.read_text()) if out.is_file() else {}
        res = io_ab(args, files) | {"checkpoint": args.ckpt, "note": args.note,
                                    "load_average": list(os.getloadavg()),
                                    "cpu": device_name("cpu"), "cores": os.cpu_count()}
        write_json(out, kept | {"io_ab": res})
        print(json.dumps({k: res[k] for k in ("cpu_ms_median", "saved_ms_per_frame",
                                              "kib_per_file", "pixels_and_labels_identical",
                                              "overlay_png_by_deflate")}, indent=1))
        print(f"wrote {out}")
        return 0
    if args.deploy:
        out = Path(args.out or "benchmarks/results/predict_deploy.json")
        kept = json.loads(out.read_text()) if out.is_file() else {}
        load0 = list(os.getloadavg())
        ab = deploy_ab(args, files)
        ab |= {"note": args.note, "load_average_before": load0,
               "load_average_after": list(os.getloadavg()), "cpu": device_name("cpu"),
               "cores": os.cpu_count()}
        write_json(out, kept | {"ab_io" if args.io_compare else "ab": ab})
        print(json.dumps(ab["summary"], indent=1))
        print(f"wrote {out}")
        return 0

    result: dict = {
        "what": "fasterseg predict on CamVid val (360x480), end to end (first read to last "
                "write) and per stage",
        "checkpoint": args.ckpt, "data": args.data, "frames": len(files),
        "threads": args.threads, "cpu": device_name("cpu"), "cores": os.cpu_count(),
        "load_average_before": list(os.getloadavg()), "note": args.note,
        "versions": library_versions() | {"platform": platform.platform()},
    }
    print("profiling stages ...", flush=True)
    result["stages"] = profile_stages(args.ckpt, files, args.threads, args.stage_frames)
    for k, v in result["stages"].items():
        print(f"  {k:40s} {v}")
    runs: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="predict-stream-out-"))
    for r in range(args.repeats):
        for fast in (False, True):  # interleaved, so a change of load hits both alike
            row = run_predict(args.ckpt, data, tmp / ("fast" if fast else "eager"), args.threads,
                              fast)
            row["repeat"] = r
            runs.append(row)
            print(f"  {row['path']:10s} {row['fps_end_to_end']:.2f} frames/s, model "
                  f"{row['model_ms']:.1f} ms, stages {row['stage_ms']}", flush=True)
    result["runs"] = runs
    result["fast_vs_eager_pixel_agreement"] = agreement(tmp / "eager", tmp / "fast")
    summary = {}
    for path in ("eager-fp32", "jit-fp32"):
        rs = [r for r in runs if r["path"] == path]
        summary[path] = {
            "fps_end_to_end_median": round(statistics.median(r["fps_end_to_end"] for r in rs), 2),
            "model_ms_median": round(statistics.median(r["model_ms"] for r in rs), 2),
            "cpu_ms_per_frame_median": round(statistics.median(r["cpu_ms_per_frame"]
                                                               for r in rs), 2)}
    result["summary"] = summary
    result["load_average_after"] = list(os.getloadavg())
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    write_json(args.out or "benchmarks/results/predict_stream.json", result)
    print(json.dumps(summary), f"agreement {result['fast_vs_eager_pixel_agreement']:.6f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
