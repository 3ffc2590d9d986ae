"""``fasterseg predict``: segment images (files, globs, folders) and videos into label PNGs.

Decoding, the network and writing run as a three-stage stream (``fasterseg.deploy.stream``), so
the slowest stage sets the pace, not their sum; the run ends with end-to-end frames per second
next to the model-only time per frame.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg predict runs/camvid/best.pt frames/ -o preds --overlay --fast
  fasterseg predict best.pt drive.mp4 -o preds --video-out preds/drive_overlay.mp4 --fast
  fasterseg predict best.pt 'street/*.jpg' one.png -o preds --flip --device cuda
  fasterseg predict best.pt frames/ -o preds --deploy best.choice.json --json
  fasterseg predict fasterseg_student photo.jpg -o preds     # random weights: a smoke test

Writes OUT/labels/<name>.png (benchmark label ids when the label set maps them, e.g. Cityscapes
labelIds), OUT/color/<name>.png (a palette PNG) and, with --overlay, OUT/overlay/<name>.png; a
video's frames are named <video stem>_<frame:06d>. Existing files there are an error unless
--overwrite; OUT must not overlap a dataset's image or label folders, and never replaces an input.
Files under OUT's own labels/, color/ and overlay/ are never inputs. Videos (.mp4 .avi .mov .mkv
.webm, given as files or globs) need PyAV: pip install 'fasterseg[video]'.
"""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SUBDIRS = ("labels", "color", "overlay")
_CHANNELS_LAST = ("jit-fp32", "torch-bf16-cl", "torch-fp16-cl")  # paths that run NHWC
_OVERLAPPING = ("torch", "jit", "onnxruntime", "openvino")  # calls may overlap (--workers)


def register(subparsers, parents) -> None:
    from fasterseg.cli.common import add_device, add_json, parse_size

    p = subparsers.add_parser(
        "predict",
        parents=parents,
        help="segment images (files, globs, folders) and videos into label PNGs and overlays",
        description="Predict label maps for images of any size (padded to /32 and cropped back) "
        "and video frames; decoding, inference and writing overlap.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint, run dir, model name or arch JSON")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, globs, or folders (of images)")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays on the input")
    p.add_argument("--no-color", action="store_true", help="do not write OUT/color (faster)")
    p.add_argument("--video-out", metavar="FILE",
                   help="also encode the overlays into this video (.mp4/.mkv/.mov/.avi: H.264, "
                   ".webm: VP9), at the input video's frame rate (30 for images)")
    p.add_argument("--fast", action="store_true",
                   help="the path `fasterseg bench MODEL --auto` saved for this model, input "
                   "size and machine (beside the checkpoint); else TorchScript, BatchNorm "
                   "folded, channels_last fp32 (CPU): the same predictions, faster")
    p.add_argument("--deploy", metavar="CHOICE.json",
                   help="run the path chosen by `fasterseg bench MODEL --auto` (its saved choice)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the network (default: PyTorch's; with --deploy, "
                   "those the choice was measured with)")
    p.add_argument("--workers", type=int, metavar="K",
                   help="frames in the network at once, its CPU threads split among them "
                   "(default: 2 when it gets 2 or more threads and its path allows overlapping "
                   "calls, PyTorch or onnxruntime; 1: one frame at a time with every thread)")
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
    """(path, output name) for every image in folders (recursive) and every file or glob match.

    Files under a folder in ``exclude`` (the output's own labels/, color/, overlay/) are left out
    of folders and globs, so predictions written inside an input folder are not predicted again.
    Videos are taken as files or globs only: a folder's videos are usually the source of the
    frames next to them.
    """
    from fasterseg.data.video import is_video

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
                videos = [q for q in p.iterdir() if is_video(q)]
                hint = f" (videos are taken as files or globs, e.g. {p / '*'}{videos[0].suffix})" \
                    if videos else ""
                raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}{hint}")
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


def _check_options(args) -> None:
    from fasterseg.data.video import VIDEO_SUFFIXES

    if args.window and (args.window[0] % 32 or args.window[1] % 32):
        raise UserError(f"--window {args.window[0]}x{args.window[1]} must be divisible by 32")
    if any(s <= 0 for s in args.scales):
        raise UserError("--scales must be positive")
    if args.fast and args.deploy:
        raise UserError("--fast and --deploy both choose the inference path; give one of them")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.video_out and Path(args.video_out).suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"--video-out {args.video_out}: use one of {', '.join(VIDEO_SUFFIXES)}")


def _read_headers(inputs, skip_unreadable: bool):
    """Header of every input (cheap, before anything is written): sources, their sizes, the
    video infos, and the unreadable ones (a one-line error without --skip-unreadable)."""
    from fasterseg.data.io import image_size
    from fasterseg.data.video import is_video, probe
    from fasterseg.deploy.stream import Source

    sources, sizes, videos, skipped = [], [], [], []
    for path, name in inputs:
        try:
            if is_video(path):
                info = probe(path)
                videos.append(info)
                sources.append(Source(path, name, video=True))
                sizes.append((info.height, info.width))
            else:
                sizes.append(image_size(path))
                sources.append(Source(path, name))
        except UserError as e:
            if is_video(path) and "PyAV" in str(e):
                raise  # not installed: the same for every video
            skipped.append((path, str(e)))
    if skipped and not skip_unreadable:
        raise UserError(f"{len(skipped)} of {len(inputs)} input(s) cannot be read, e.g. "
                        f"{skipped[0][1]}; pass --skip-unreadable to skip them")
    if not sources:
        raise UserError(f"none of the {len(skipped)} input(s) could be read")
    return sources, sizes, videos, skipped


def _video_targets(writer, stem: str) -> list[Path]:
    """Existing per-frame files of a video named ``stem`` (their number is known only later)."""
    pattern = f"{glob.escape(stem)}_[0-9][0-9][0-9][0-9][0-9][0-9].png"
    return [q for d in writer.subdirs() if d.is_dir() for q in d.glob(pattern)]


def _saved_choice(args, sizes, device) -> tuple[dict | None, str | None]:
    """``--fast``: the choice ``fasterseg bench MODEL --auto`` saved for this model at the
    inputs' padded size, when it applies to this machine; else (None, why TorchScript runs)."""
    from fasterseg.deploy.auto import default_choice_path, load_choice, machine_mismatch
    from fasterseg.deploy.stream import padded_size

    padded = sorted({padded_size(h, w) for h, w in sizes})
    if len(padded) != 1:
        return None, None  # mixed sizes: one TorchScript model per size
    path = default_choice_path(args.checkpoint, padded[0])
    if not path.is_file():
        return None, None
    choice = load_choice(path)
    why = machine_mismatch(choice, device=device, threads=args.threads, size=padded[0])
    if why is not None:
        return None, f"the saved choice {path} does not apply ({why}): --fast runs jit-fp32"
    return choice, None


def _workers(args, device, threads: int, backend: str) -> tuple[int, int, str | None]:
    """(frames in the network at once, threads per network call, a note or None).

    On the CPU, two frames at once with half the threads each beat one frame with all of them
    (CamVid student, 2 cores: see docs/predict.md); only paths whose calls may overlap on one
    prepared model (PyTorch, onnxruntime, OpenVINO: one infer request per thread, compiled for
    k streams; not CUDA).
    """
    if device.type != "cpu" or backend not in _OVERLAPPING:
        note = None
        if args.workers and args.workers > 1:
            note = f"--workers {args.workers}: the {backend} path runs one frame at a time"
        return 1, threads, note
    k = args.workers if args.workers is not None else (2 if threads >= 2 else 1)
    return k, max(1, threads // k), None


def _segmenter(args, model, device, info, sizes=(), threads: int = 1):
    """The model stage, a line saying which path runs, a note or None, the threads per
    network call and in all."""
    from fasterseg.deploy.stream import EagerPredictor, Segmenter
    from fasterseg.latency.backends import set_threads

    tta = args.flip or args.scales != [1.0] or args.window is not None
    if tta:
        note = None
        if args.fast or args.deploy:
            note = ("--flip/--scales/--window run the eager model (--fast/--deploy apply to "
                    "plain prediction only)")
        k, per, _ = _workers(args, device, threads, "torch")
        if device.type == "cpu":
            set_threads(per)
        opts = {"flip": args.flip, "scales": args.scales, "window": args.window,
                "num_classes": info["num_classes"]}
        return (Segmenter(None, device, tta=opts, model=model, workers=k),
                "eager-fp32 + test-time aug.", note, per, threads)
    choice = None
    if args.deploy:
        try:
            from fasterseg.deploy.auto import load_choice
        except ImportError as e:
            raise UserError(f"--deploy needs fasterseg.deploy.auto, which cannot be imported: "
                            f"{e}") from None
        choice = load_choice(args.deploy)
    elif args.fast:
        if device.type != "cpu":
            raise UserError("--fast (TorchScript + oneDNN) is for --device cpu")
        choice, why = _saved_choice(args, sizes, device)
    if choice is not None:
        from fasterseg.deploy.auto import build_from_choice

        chosen = choice["chosen"]
        measured = choice.get("threads")
        # --threads means what it means on the other paths; without it, the measured count
        total = args.threads if args.threads is not None else int(measured or threads)
        k, per, note = _workers(args, device, total, chosen.get("backend", ""))
        if measured and total != measured:
            note = "; ".join(filter(None, [note, f"the choice was measured with {measured} "
                                           f"threads; running with {total}"]))
        built = {**choice, "threads": per}  # split among the workers

        def build(size):
            if k > 1 and chosen.get("backend") == "openvino":  # one model, k streams of `per`
                return build_from_choice(model, {**built, "threads": per * k}, size, streams=k)
            return build_from_choice(model, built, size)

        return (Segmenter(build, device, workers=k), chosen["name"], note, per, total)
    if args.fast:
        from fasterseg.bench.tuning import tune_malloc
        from fasterseg.deploy.paths import build_candidate

        tune_malloc()  # part of the fast CPU recipe: big activations stay in the heap
        k, per, _ = _workers(args, device, threads, "jit")
        return Segmenter(lambda size: build_candidate("jit-fp32", model, size, threads=per,
                                                      device=device),
                         device, workers=k), "jit-fp32", why, per, threads
    k, per, _ = _workers(args, device, threads, "torch")
    if device.type == "cpu":
        set_threads(per)
    eager = EagerPredictor(model, device)
    return Segmenter(lambda size: eager, device, workers=k), "eager-fp32", None, per, threads


def run(args) -> int:
    from fasterseg.cli.common import emit_json, resolve_device
    from fasterseg.deploy.stream import Normalizer, StreamWriter, padded_size, run_stream
    from fasterseg.engine import checkpoint as ckpt_io
    from fasterseg.evaluation import outputs
    from fasterseg.latency.backends import set_threads

    _check_options(args)
    device = resolve_device(args.device)
    threads = set_threads(args.threads) if device.type == "cpu" else None
    out = Path(args.out)
    video_out = Path(args.video_out) if args.video_out else None
    exclude = [out / d for d in _SUBDIRS] + ([video_out] if video_out else [])
    inputs = collect_inputs(args.inputs, exclude=exclude)
    # unreadable files (not an image, unknown format) are found from their headers, before
    # anything is written; a file that fails only while decoding stops (or is skipped) later
    sources, sizes, videos, skipped = _read_headers(inputs, args.skip_unreadable)
    all_inputs = [p for p, _ in inputs]
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
    writer = StreamWriter(out, palette, info["num_classes"],
                          train_id_to_label_id=labels.get("train_id_to_label_id"),
                          mean=mean, std=std, color=not args.no_color, overlay=args.overlay)
    # where predictions go is checked before the first image: not into a dataset's image or
    # label folders, not over an input, not over existing files without --overwrite
    folders = {s.path.parent for s in sources} | {Path(i) for i in args.inputs if Path(i).is_dir()}
    protected = outputs.nearby_dataset_folders(sorted(folders | {out}))
    outputs.check_not_in_dataset(writer.subdirs(), protected, "-o")
    targets = [f for s in sources if not s.video for f in writer.paths(s.name)]
    targets += [f for s in sources if s.video for f in _video_targets(writer, s.name)]
    outputs.check_not_inputs(targets, all_inputs, "-o")
    outputs.check_no_existing(targets, "-o", args.overwrite)
    if video_out is not None:
        outputs.check_not_in_dataset([video_out.parent], protected, "--video-out", recursive=False)
        outputs.check_not_inputs([video_out], all_inputs, "--video-out")
        outputs.check_no_existing([video_out], "--video-out", args.overwrite)
        outputs.ensure_writable(video_out.parent, "--video-out")
    outputs.ensure_writable(out, "-o")

    segment, path_name, note, per_call, used = _segmenter(args, model, device, info, sizes,
                                                          threads or 1)
    threads = used if threads else None
    if segment.tta is None:  # one prepared model per padded size, before the clock starts
        for size in sorted({padded_size(h, w) for h, w in sizes}):
            segment.predictor(size)
    normalize = Normalizer(mean, std, pad=segment.tta is None,
                           channels_last=path_name in _CHANNELS_LAST)
    if video_out is not None:
        from fasterseg.data.video import VideoWriter

        writer.video = VideoWriter(video_out, fps=videos[0].fps if videos else 30.0)
    n_img = sum(not s.video for s in sources)
    what = f"{n_img} image(s)" + (f" and {len(videos)} video(s)" if videos else "")
    how = ""
    if threads and segment.workers > 1:
        how = f", {segment.workers} frames at once with {per_call} thread(s) each"
    elif threads:
        how = f", {per_call} threads"
    print(f"predicting {what} with {args.checkpoint} ({info['source']} weights) on {path_name}"
          + how, flush=True)
    if note:
        print(f"note: {note}")
    frames = [v.frames for v in videos]
    total = n_img + sum(frames) if all(f is not None for f in frames) else None
    try:
        res = run_stream(sources, normalize, segment, writer, skip_unreadable=args.skip_unreadable,
                         total=total)
    except BaseException:
        if writer.video is not None:
            writer.video.abort()  # never a truncated video
        raise
    video_file = writer.video.close() if writer.video is not None else None
    skipped += res.skipped
    if res.scaled:
        print(f"note: {len(res.scaled)} image(s) with more than 8 bits per channel were scaled "
              f"to 8 bits, e.g. {res.scaled[0][0]} ({res.scaled[0][1]})")
    print(f"wrote {writer.count} prediction(s) to {args.out}"
          + (f" and the overlay video {video_file}" if video_file else ""))
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):")
        for _, why in skipped:
            print(f"  {why}")
    if writer.count == 0:
        raise UserError(f"none of the {len(inputs)} input(s) could be read")
    ms = res.stage_ms()
    fps = res.fps_end_to_end

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    print(f"speed: {f(fps)} frames/s end to end ({res.images} in {res.wall_s:.2f} s); model "
          f"{f(ms['model'])} ms/frame ({path_name}); median per frame: decode {f(ms['decode'])}, "
          f"normalise {f(ms['normalize'])}, argmax {f(ms['argmax'])}, write {f(ms['write'])} ms "
          f"(slowest stage: {res.bottleneck()})")
    if args.json:
        emit_json({
            "images": writer.count, "fps_end_to_end": fps, "model_ms": ms["model"],
            "decode_ms": ms["decode"], "write_ms": ms["write"], "stage_ms": ms,
            "bottleneck": res.bottleneck(), "wall_s": round(res.wall_s, 4),
            "prepare_s": round(segment.prepare_s, 4), "path": path_name, "threads": threads,
            "workers": segment.workers, "threads_per_call": per_call if threads else None,
            "out": str(args.out), "checkpoint": args.checkpoint, "weights": info["source"],
            "class_pixel_counts": writer.counts.tolist(),
            "videos": [{"file": str(v.path), "fps": v.fps, "frames": v.frames} for v in videos],
            "video_out": str(video_file) if video_file else None,
            "skipped": [{"file": str(p), "error": why} for p, why in skipped],
            "scaled_to_8bit": [str(p) for p, _ in res.scaled]})
    return 0
