"""``fasterseg bench``: end-to-end inference latency / FPS of a network (batch 1)."""

from __future__ import annotations

import argparse

from fasterseg.cli.common import add_json, emit_json, format_count, parse_size
from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg bench fasterseg_student --size 1024x2048 --device cpu --threads 2
  fasterseg bench fasterseg_student --size 1024x2048 --fast --threads 2
      # = --backend jit --channels-last --fuse-bn --tune-malloc (the fast CPU path)
  fasterseg bench runs/train/best.pt --size 512x1024 --backend onnxruntime --json
  fasterseg bench archs/my_arch.json --device cuda --backend tensorrt --dtype fp16
"""


def register(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "bench",
        parents=parents,
        help="measure inference latency and FPS",
        description="Batch-1 inference benchmark: warm-up until steady, then timed for --seconds; "
        "prints the median latency, IQR, FPS, MACs, params and the full method.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model",
                   help="published name (fasterseg_student), architecture JSON, checkpoint .pt "
                   "or run directory")
    p.add_argument("--size", type=parse_size, default=(1024, 2048),
                   help="input HxW (default 1024x2048)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--backend", default="torch",
                   choices=["torch", "compile", "jit", "onnxruntime", "tensorrt"],
                   help="torch (eager), compile (torch.compile/inductor, frozen), "
                   "jit (TorchScript + "
                   "oneDNN Graph fusion, CPU), onnxruntime, tensorrt (TensorRT 10, CUDA)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "int8"],
                   help="int8: static post-training quantization calibrated on generated street "
                   "scenes (torch back end, CPU; BN folded, channels-last; reports the share of "
                   "pixels whose class equals fp32's as 'agreement')")
    p.add_argument("--calibration-images", type=int, default=8,
                   help="int8: generated street scenes to calibrate activation ranges on "
                   "(default 8)")
    p.add_argument("--keep-fp32", default="",
                   help="int8: comma-separated trunk modules to leave in fp32, e.g. "
                   "net.stem.0.conv,net.head.classifier (more agreement, a little slower)")
    p.add_argument("--observer", default="histogram", choices=["histogram", "minmax"],
                   help="int8: activation range calibration (default histogram)")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="int8: do not add the per-class logit offset (fp32 - int8 mean on the "
                   "calibration scenes) to the int8 logits")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC memory format (torch back ends)")
    p.add_argument("--fuse-bn", action="store_true",
                   help="fold BatchNorm into the convolutions first")
    p.add_argument("--tune-malloc", action="store_true",
                   help="keep freed memory in the heap (glibc mallopt) so big activations are not "
                   "re-faulted every inference (CPU; changes speed only)")
    p.add_argument("--fast", action="store_true",
                   help="the fastest CPU recipe found here: --backend jit --channels-last "
                   "--fuse-bn --tune-malloc (fp32, identical predictions)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (set explicitly; default: torch's)")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="timed duration after warm-up (default 6, as the authors)")
    p.add_argument("--num-classes", type=int, default=None, help="override the classes of the head")
    p.add_argument("--out", default=None, help="also write the result JSON to this file")
    add_json(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from fasterseg.bench.runner import BenchSettings, benchmark, model_complexity
    from fasterseg.cli.common import resolve_device
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.models import check_input_size

    if args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    if args.fast:
        if args.backend not in ("torch", "jit"):
            raise UserError("--fast selects --backend jit; do not combine it with another backend")
        args.backend, args.channels_last, args.fuse_bn, args.tune_malloc = "jit", True, True, True
        if args.dtype == "int8":  # the int8 path runs on the torch back end
            args.backend = "torch"
    if args.dtype == "int8":
        if args.backend != "torch":
            raise UserError("--dtype int8 needs --backend torch (static quantization, CPU)")
        args.channels_last, args.fuse_bn = True, True  # what the int8 path does anyway
    check_input_size(*args.size)
    device = resolve_device(args.device)
    if args.backend == "tensorrt" and device.type != "cuda":
        raise UserError("backend tensorrt needs --device cuda")
    if args.channels_last and args.backend in ("onnxruntime", "tensorrt"):
        raise UserError("--channels-last applies to the torch, compile and jit back ends only")
    if args.tune_malloc:
        from fasterseg.bench.tuning import tune_malloc

        tune_malloc()
    model, info = load_model(args.model, num_classes=args.num_classes, device="cpu")
    settings = BenchSettings(size=tuple(args.size), device=str(device), backend=args.backend,
                             dtype=args.dtype, channels_last=args.channels_last,
                             fuse_bn=args.fuse_bn,
                             threads=args.threads, seconds=args.seconds,
                             calibration_images=args.calibration_images,
                             keep_fp32=tuple(n for n in args.keep_fp32.split(",") if n),
                             observer=args.observer,
                             bias_correction=not args.no_bias_correction)
    cx = model_complexity(model, settings.size)
    name = getattr(getattr(model, "arch", None), "name", args.model)
    print(f"benchmarking {name} ({info.get('weights', 'random')} weights) at "
          f"{args.size[0]}x{args.size[1]}, batch 1: {args.backend} {args.dtype}"
          f"{' channels_last' if args.channels_last else ''}{' fused-BN' if args.fuse_bn else ''}"
          f"{' tuned-malloc' if args.tune_malloc else ''} "
          f"on {device}", flush=True)
    res = benchmark(model, settings, cx)
    res["model"] = name
    res["malloc_tuned"] = bool(args.tune_malloc)
    res["weights"] = info.get("weights")
    iqr = f"{res['p25_ms']:.2f}-{res['p75_ms']:.2f}"
    print(f"  latency  {res['latency_ms']:.2f} ms median (IQR {iqr}, "
          f"{res['runs']} runs in {args.seconds:g} s after {res['warmup_runs']} warm-up runs)")
    print(f"  FPS      {res['fps']:.2f}")
    if "agreement" in res:
        print(f"  int8     {100 * res['agreement']:.2f}% of pixels predict the fp32 class "
              f"(held-out scene; calibrated on {res['calibration_images']} scenes in "
              f"{res['calibration_s']:.1f} s, engine {res['quant_engine']})")
    if res.get("macs") is not None:
        print(f"  MACs     {format_count(res['macs'])} (multiply-accumulates)   params "
              f"{format_count(res['params'])} (inference), "
              f"{format_count(res['params_total'])} (with aux heads)")
    v = res["versions"]
    print(f"  method   {res['device_name']}, {res['threads']} threads, torch {v.get('torch')}"
          + (f", onnxruntime {v['onnxruntime']}" if args.backend == "onnxruntime" else ""))
    if args.out:
        from fasterseg.utils.io import write_json

        print(f"wrote {write_json(args.out, res)}")
    if args.json:
        emit_json(res)
    return 0
