"""``fasterseg bench``: end-to-end inference latency / FPS of a network (batch 1), and ``--auto``:
the fastest inference path of this machine whose predictions agree with fp32."""

from __future__ import annotations

import argparse
import sys

from fasterseg.cli.common import add_json, emit_json, format_count, parse_size
from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg bench fasterseg_student --size 1024x2048 --device cpu --threads 2
  fasterseg bench runs/train/best.pt --size 384x480 --threads 2 --auto \\
      --calibration-data camvid:data/camvid     # measure every path, keep the fastest accurate
  fasterseg bench runs/train/best.pt --size 384x480 --threads 2 --fast
      # the saved --auto choice for this model, size and machine (measured first if none)
  fasterseg bench runs/train/best.pt --size 384x480 --dtype int8 --calibration-data camvid:data/camvid
  fasterseg bench runs/train/best.pt --size 512x1024 --backend onnxruntime --json
  fasterseg bench fasterseg_student --backend openvino --dtype bf16 --threads 2
  fasterseg bench archs/my_arch.json --device cuda --backend tensorrt --dtype fp16
"""

DEPRECATED_INT8 = ("keep_fp32", "observer", "no_bias_correction")


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """Calibration / held-out images (shared by ``bench`` and ``export``)."""
    p.add_argument("--calibration-data", default=None, metavar="PRESET:ROOT",
                   help="real images of the model's dataset to calibrate int8 on and to check "
                   "agreement with fp32 on, e.g. camvid:data/camvid (default: generated street "
                   "scenes, with a warning)")
    p.add_argument("--calibration-split", default="train",
                   help="split to calibrate on (default train)")
    p.add_argument("--check-split", default="val",
                   help="held-out split the agreement with fp32 is measured on (default val; "
                   "must differ from --calibration-split)")
    p.add_argument("--calibration-images", type=int, default=8,
                   help="images to calibrate int8 on (default 8)")
    p.add_argument("--check-images", type=int, default=4,
                   help="held-out images to measure agreement on (default 4)")


def add_auto_args(p: argparse.ArgumentParser) -> None:
    """The ``--auto`` chooser's options (shared by ``bench`` and ``export``)."""
    from_names = "eager-fp32, jit-fp32, torch-bf16-cl, torch-fp16-cl, onnxruntime-fp32, int8, " \
        "openvino-fp32, openvino-bf16, openvino-int8"
    p.add_argument("--auto", action="store_true",
                   help="measure every inference path available here (latency, and pixel "
                   "agreement with eager fp32 on held-out images), keep the fastest whose "
                   "agreement reaches --min-agreement, save the choice as JSON")
    p.add_argument("--min-agreement", type=float, default=0.995,
                   help="--auto: agreement floor, share of pixels with fp32's class "
                   "(default 0.995)")
    p.add_argument("--candidates", default=None,
                   help=f"--auto: comma-separated paths to try (default: all available; "
                   f"from {from_names}; eager-fp32, the reference, is always measured)")
    p.add_argument("--choice-out", default=None,
                   help="--auto: where to write the choice JSON")
    add_calibration_args(p)


def register(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "bench",
        parents=parents,
        help="measure inference latency and FPS; --auto: pick this machine's fastest path",
        description="Batch-1 inference benchmark: warm-up until steady, then timed for --seconds; "
        "prints the median latency, IQR, FPS, MACs, params and the full method. --auto times "
        "every inference path available here (eager, TorchScript, bf16, onnxruntime, int8, "
        "OpenVINO), checks each against eager fp32 on held-out images, prints the table and "
        "keeps the fastest whose agreement reaches --min-agreement (see docs/deployment.md).",
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
                   choices=["torch", "compile", "jit", "onnxruntime", "tensorrt", "openvino"],
                   help="torch (eager), compile (torch.compile/inductor, frozen), "
                   "jit (TorchScript + oneDNN Graph fusion, CPU), onnxruntime, tensorrt "
                   "(TensorRT 10, CUDA), openvino (CPU; fp32, bf16 or int8; pip install "
                   "'fasterseg[openvino]')")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "int8"],
                   help="int8: post-training quantization calibrated on --calibration-data "
                   "(CPU; torch back end: the int8 engine of docs/int8.md; or --backend "
                   "openvino); reports the share of held-out pixels whose class equals fp32's "
                   "as 'agreement'")
    add_auto_args(p)
    p.add_argument("--fast", action="store_true",
                   help="the --auto choice saved for this model, size and machine (--choice, "
                   "default: the --choice-out place); measured first when there is none")
    p.add_argument("--choice", default=None,
                   help="a choice JSON from --auto to benchmark (implies --fast)")
    p.add_argument("--keep-fp32", default=None, help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--observer", default=None, help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--no-bias-correction", action="store_true", default=None,
                   help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC memory format (torch back ends)")
    p.add_argument("--fuse-bn", action="store_true",
                   help="fold BatchNorm into the convolutions first")
    p.add_argument("--tune-malloc", action="store_true",
                   help="keep freed memory in the heap (glibc mallopt) so big activations are not "
                   "re-faulted every inference (CPU; changes speed only; --auto does it)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (set explicitly; default: torch's)")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="timed duration after warm-up (default 6, as the authors; --auto: per "
                   "candidate)")
    p.add_argument("--num-classes", type=int, default=None, help="override the classes of the head")
    p.add_argument("--out", default=None, help="also write the result JSON to this file")
    add_json(p)
    p.set_defaults(func=run)


def parse_candidates(text: str | None) -> list[str] | None:
    """``a,b,c`` -> names (checked), None when not given."""
    if text is None:
        return None
    from fasterseg.deploy.paths import check_name

    names = [check_name(n.strip()) for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("--candidates is empty; give names like jit-fp32,int8")
    return names


def auto_kwargs(args) -> dict:
    """``choose_and_build`` keyword arguments from the shared ``--auto`` options."""
    return dict(threads=args.threads, calib_spec=args.calibration_data,
                calibration_split=args.calibration_split, check_split=args.check_split,
                calibration_images=args.calibration_images, check_images=args.check_images,
                min_agreement=args.min_agreement, seconds=args.seconds,
                candidates=parse_candidates(args.candidates), device=args.device,
                progress=lambda line: print(line, flush=True))


def print_choice(choice: dict) -> None:
    from fasterseg.deploy.auto import format_table

    for line in format_table(choice):
        print(line)
    c = choice["chosen"]
    where = "generated scenes" if choice["check"].get("generated") else \
        f"{choice['check']['images']} {choice['check']['split']} images"
    print(f"chose {c['name']} ({c['backend']} {c['dtype']}): {c['latency_ms']:.2f} ms median, "
          f"{100 * c['agreement']:.2f}% of pixels agree with eager fp32 on {where}")


def _warn_deprecated(args) -> None:
    given = [n for n in DEPRECATED_INT8 if getattr(args, n, None) is not None]
    for n in given:
        print(f"warning: --{n.replace('_', '-')} is deprecated and ignored: the int8 path now "
              "picks its fp32 layers itself (docs/int8.md)", file=sys.stderr)


def run(args) -> int:
    from fasterseg.bench.runner import BenchSettings, benchmark, model_complexity
    from fasterseg.cli.common import resolve_device
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.models import check_input_size

    if args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    _warn_deprecated(args)
    fast = args.fast or args.choice is not None
    auto = args.auto
    if auto and fast:
        raise UserError("--auto measures a new choice and --fast/--choice reuses one: pick one")
    if (auto or fast) and (args.backend != "torch" or args.dtype != "fp32" or args.channels_last
                           or args.fuse_bn):
        raise UserError(f"--{'auto' if auto else 'fast'} chooses the back end, dtype and memory "
                        "format itself; restrict it with --candidates instead")
    if args.dtype == "int8" and args.backend not in ("torch", "openvino"):
        raise UserError("--dtype int8 runs on --backend torch (the int8 engine of docs/int8.md) "
                        "or --backend openvino")
    if args.backend == "openvino" and args.dtype == "fp16":
        raise UserError("--backend openvino runs --dtype fp32, bf16 or int8")
    check_input_size(*args.size)
    device = resolve_device(args.device)
    if args.backend == "tensorrt" and device.type != "cuda":
        raise UserError("backend tensorrt needs --device cuda")
    if args.channels_last and args.backend in ("onnxruntime", "tensorrt", "openvino"):
        raise UserError("--channels-last applies to the torch, compile and jit back ends only")
    if args.tune_malloc:
        from fasterseg.bench import tuning

        tuning.tune_malloc()
    model, info = load_model(args.model, num_classes=args.num_classes, device="cpu")
    settings = BenchSettings(size=tuple(args.size), device=str(device), backend=args.backend,
                             dtype=args.dtype, channels_last=args.channels_last,
                             fuse_bn=args.fuse_bn, threads=args.threads, seconds=args.seconds)
    cx = model_complexity(model, settings.size)
    name = getattr(getattr(model, "arch", None), "name", args.model)
    weights = info.get("weights", "random")
    size_txt = f"{args.size[0]}x{args.size[1]}"
    if auto or fast:
        return _run_auto(args, model, name, weights, cx, settings, fast)
    extra: dict = {}
    predictor = None
    if args.dtype == "int8" or args.backend == "openvino":
        from fasterseg.deploy.auto import build_checked

        path = "int8" if args.backend == "torch" else f"openvino-{args.dtype}"
        print(f"preparing {path} of {name} at {size_txt} ...", flush=True)
        predictor, extra = build_checked(
            path, model, settings.size, threads=args.threads, device=device,
            calib_spec=args.calibration_data, calibration_split=args.calibration_split,
            calibration_images=args.calibration_images, check_split=args.check_split,
            check_images=args.check_images, min_agreement=args.min_agreement)
        if path == "int8":
            extra["quant_engine"] = extra["path_info"].get("method")
    print(f"benchmarking {name} ({weights} weights) at {size_txt}, batch 1: "
          f"{args.backend} {args.dtype}"
          f"{' channels_last' if args.channels_last else ''}{' fused-BN' if args.fuse_bn else ''}"
          f"{' tuned-malloc' if args.tune_malloc else ''} on {device}", flush=True)
    res = benchmark(model, settings, cx, predictor=predictor)
    res.update(extra)
    res["model"] = name
    res["malloc_tuned"] = bool(args.tune_malloc)
    res["weights"] = info.get("weights")
    _print_result(res, args)
    if "agreement" in res:
        cal = res.get("calibration") or {}
        what = (f"calibrated on {cal.get('images')} {cal.get('split')} images of "
                f"{cal.get('source')}, " if cal else "")
        print(f"  check    {100 * res['agreement']:.2f}% of pixels predict the fp32 class on "
              f"{res['check']['images']} held-out {res['check']['split']} images of "
              f"{res['check']['source']} ({what}{res['path']})")
    return _finish(res, args)


def _print_result(res: dict, args) -> None:
    iqr = f"{res['p25_ms']:.2f}-{res['p75_ms']:.2f}"
    print(f"  latency  {res['latency_ms']:.2f} ms median (IQR {iqr}, "
          f"{res['runs']} runs in {args.seconds:g} s after {res['warmup_runs']} warm-up runs)")
    print(f"  FPS      {res['fps']:.2f}")
    if res.get("macs") is not None:
        print(f"  MACs     {format_count(res['macs'])} (multiply-accumulates)   params "
              f"{format_count(res['params'])} (inference), "
              f"{format_count(res['params_total'])} (with aux heads)")
    v = res["versions"]
    print(f"  method   {res['device_name']}, {res['threads']} threads, torch {v.get('torch')}"
          + (f", onnxruntime {v['onnxruntime']}" if res["backend"] == "onnxruntime" else ""))


def _finish(res: dict, args) -> int:
    if args.out:
        from fasterseg.utils.io import write_json

        print(f"wrote {write_json(args.out, res)}")
    if args.json:
        emit_json(res)
    return 0


def _run_auto(args, model, name: str, weights: str, cx: dict, settings, fast: bool) -> int:
    """``--auto`` (measure, choose, save) and ``--fast`` (reuse the saved choice, else --auto)."""
    from pathlib import Path

    from fasterseg.bench.runner import benchmark
    from fasterseg.deploy import auto
    from fasterseg.latency.backends import device_name, library_versions

    size = tuple(args.size)
    size_txt = f"{size[0]}x{size[1]}"
    default_out = Path(args.choice_out) if args.choice_out else auto.default_choice_path(
        args.model, size, args.out)
    if fast:
        path = Path(args.choice) if args.choice else default_out
        if args.choice is not None or path.is_file():
            choice = auto.load_choice(path)
            why = auto.machine_mismatch(choice, device=args.device, threads=args.threads,
                                        size=size)
            if why is None:
                c = choice["chosen"]
                print(f"benchmarking {name} ({weights} weights) at {size_txt}, batch 1: the "
                      f"saved choice {c['name']} ({c['backend']} {c['dtype']}) from {path}",
                      flush=True)
                pred = auto.build_from_choice(model, choice, size)
                settings.threads = choice["threads"]
                res = benchmark(model, settings, cx, predictor=pred)
                res.update(model=name, weights=weights, path=c["name"], choice=str(path),
                           agreement=c["agreement"], malloc_tuned=bool(choice["malloc_tuned"]),
                           channels_last=bool(pred.info.get("channels_last", False)),
                           fuse_bn=bool(pred.info.get("fuse_bn", False)))
                _print_result(res, args)
                return _finish(res, args)
            print(f"the saved choice {path} does not apply: {why}; measuring again", flush=True)
    print(f"measuring the inference paths of {name} ({weights} weights) at {size_txt}, batch 1, "
          f"on {args.device} ({args.seconds:g} s each):", flush=True)
    choice, pred = auto.choose_and_build(model, size, **auto_kwargs(args))
    choice["model"] = str(args.model)
    print_choice(choice)
    out = default_out
    print(f"wrote {auto.save_choice(out, choice)}")
    best = next(r for r in choice["candidates"] if r["chosen"])
    keys = ("latency_ms", "fps", "iqr_ms", "p25_ms", "p75_ms", "min_ms", "runs", "prepare_s",
            "first_run_ms")
    res = {k: best.get(k) for k in keys}
    res.update(
        backend=best["backend"], dtype=best["dtype"], path=best["name"],
        agreement=best["agreement"], candidates=choice["candidates"],
        channels_last=bool((best.get("info") or {}).get("channels_last", False)),
        fuse_bn=bool((best.get("info") or {}).get("fuse_bn", False)),
        device=choice["device"], device_name=device_name(args.device), threads=choice["threads"],
        batch=1, size=list(size), seconds=args.seconds, macs=cx.get("macs"),
        params=cx.get("params_inference"), params_total=cx.get("params_total"),
        versions={**library_versions(), **{k: v for k, v in choice["versions"].items() if v}},
        model=name, weights=weights, malloc_tuned=choice["malloc_tuned"], choice=str(out),
        calibration=choice["calibration"], check=choice["check"],
        cpu_flags=choice["machine"]["cpu_flags"], min_agreement=choice["min_agreement"],
    )
    del pred  # the chosen path was measured inside the table already
    return _finish(res, args)
