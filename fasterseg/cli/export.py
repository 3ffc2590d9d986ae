"""``fasterseg export``: a deployable file: ONNX (default, optionally verified with onnxruntime),
TorchScript, OpenVINO IR, int8 ONNX, or with ``--auto`` the fastest accurate path measured here."""

from __future__ import annotations

import argparse
from pathlib import Path

from fasterseg.cli.common import add_json, emit_json, parse_size
from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg export fasterseg_student -o student.onnx --size 1024x2048 --verify
  fasterseg export runs/train/best.pt -o model.onnx --size 720x960
  fasterseg export runs/train/best.pt -o model.pt --size 384x480 --format torchscript
  fasterseg export runs/train/best.pt -o model.xml --size 384x480 --format openvino --dtype int8 \\
      --calibration-data camvid:data/camvid
  fasterseg export runs/train/best.pt -o deploy/model --size 384x480 --threads 2 --auto \\
      --calibration-data camvid:data/camvid   # the fastest accurate path here + its choice JSON
"""

TOLERANCE = 1e-4
FORMATS = ("onnx", "torchscript", "openvino", "int8-onnx")


def register(sub, parents) -> None:
    from fasterseg.cli.bench import add_auto_args

    p = sub.add_parser(
        "export",
        parents=parents,
        help="export a model to ONNX, TorchScript or OpenVINO; --auto: the fastest path here",
        description="Export for deployment (eval mode, logits at input resolution). --format "
        "onnx (default; dynamic batch): --verify runs onnxruntime on a random input and fails "
        f"(exit 1) if the max abs difference to PyTorch exceeds {TOLERANCE:g} (times the "
        "largest |logit| when logits exceed 1, as in barely trained nets whose float32 logits "
        "are huge). torchscript: BN folded, NHWC, frozen (.pt). openvino: IR (.xml + .bin), "
        "--dtype fp32/bf16/int8. int8-onnx: the int8 path's ONNX file, calibrated on "
        "--calibration-data. --auto: measure the paths of `fasterseg bench --auto`, write the "
        "chosen one's file (its own suffix) and the choice JSON beside it "
        "(see docs/deployment.md).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model name, architecture JSON, checkpoint .pt or run directory")
    p.add_argument("-o", "--output", required=True,
                   help="output path (the suffix is set by the format: .onnx, .pt, .xml)")
    p.add_argument("--size", type=parse_size, default=(1024, 2048), help="input HxW (default 1024x2048)")
    p.add_argument("--format", default="onnx", choices=FORMATS,
                   help="onnx (default), torchscript, openvino (IR), int8-onnx")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "int8"],
                   help="--format openvino: precision of the IR (default fp32)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--verify", action="store_true",
                   help="--format onnx: compare onnxruntime with PyTorch")
    p.add_argument("--threads", type=int, default=None,
                   help="--auto: CPU threads to measure with (set it to the deployment's)")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="--auto: timed seconds per candidate (default 6)")
    p.add_argument("--device", default="cpu", help="--auto: cpu, cuda or cuda:N (default cpu)")
    add_auto_args(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.models.network import check_input_size

    h, w = args.size
    check_input_size(h, w)
    if args.verify and (args.auto or args.format != "onnx"):
        raise UserError("--verify compares an ONNX file with PyTorch: use it with --format onnx "
                        "(--auto checks the agreement of every path itself)")
    if args.dtype != "fp32" and args.format != "openvino":
        raise UserError("--dtype applies to --format openvino only")
    if args.seconds <= 0:
        raise UserError("--seconds must be > 0")
    model, info = load_model(args.model, num_classes=args.num_classes)
    if args.auto:
        return _run_auto(args, model, info)
    if args.format == "onnx":
        return _run_onnx(args, model, info)
    return _run_other(args, model, info)


def _run_onnx(args, model, info) -> int:
    from fasterseg.export.onnx import export_onnx, verify_onnx

    h, w = args.size
    path = export_onnx(model, args.output, (h, w), opset=args.opset)
    size_mb = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mb:.1f} MiB, opset {args.opset}, input 1x3x{h}x{w}, "
          f"weights: {info['weights']})")
    result = {"output": str(path), "format": "onnx", "size": [h, w], "opset": args.opset,
              "bytes": path.stat().st_size}
    rc = 0
    if args.verify:
        v = verify_onnx(model, path, (h, w))
        tol = TOLERANCE * max(1.0, v["max_abs_ref"])
        ok = v["max_abs_diff"] < tol
        print(f"onnxruntime vs PyTorch: max abs diff {v['max_abs_diff']:.2e} "
              f"(tolerance {tol:.3g}), argmax agreement {v['argmax_agreement']:.4%}: "
              f"{'OK' if ok else 'FAILED'}")
        result.update(v, tolerance=tol, verified=ok)
        rc = 0 if ok else 1
    if args.json:
        emit_json(result)
    return rc


def _written(path: Path) -> str:
    files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    size = sum(f.stat().st_size for f in files if f.is_file()) / 2**20
    return f"{' + '.join(str(f) for f in files)} ({size:.1f} MiB)"


def _export_checked(args, model, size: tuple[int, int], name: str, suffix: str,
                    result: dict) -> Path | None:
    """An int8 path built and checked against fp32 (fallback to --min-agreement), saved as
    OUTPUT with ``suffix``; its agreement, calibration and check images go into ``result``."""
    from fasterseg.deploy.auto import build_checked

    pred, binfo = build_checked(
        name, model, size, threads=args.threads, calib_spec=args.calibration_data,
        calibration_split=args.calibration_split, calibration_images=args.calibration_images,
        check_split=args.check_split, check_images=args.check_images,
        min_agreement=args.min_agreement)
    path = pred.save(Path(args.output).with_suffix(suffix))
    result.update(agreement=binfo["agreement"], calibration=binfo.get("calibration"),
                  check=binfo["check"], int8=binfo["path_info"])
    label = "openvino int8" if name.startswith("openvino") else "int8"
    print(f"{label}: {100 * binfo['agreement']:.2f}% of pixels agree with fp32 on "
          f"{binfo['check']['images']} held-out {binfo['check']['split']} images")
    return path


def _run_other(args, model, info) -> int:
    """torchscript, openvino (IR at --dtype) and int8-onnx."""
    from fasterseg.deploy import paths

    size = tuple(args.size)
    out = Path(args.output)
    result: dict = {"format": args.format, "size": list(size), "weights": info["weights"]}
    if args.format == "torchscript":
        path = paths.build_candidate("jit-fp32", model, size, threads=args.threads).save(out)
    elif args.format == "openvino":
        try:
            from fasterseg.deploy.openvino import export_ir
        except ImportError:
            raise UserError("OpenVINO is not installed: pip install 'fasterseg[openvino]'") \
                from None
        if args.dtype == "int8":  # the checked path: automatic fp32 fallback to the floor
            path = _export_checked(args, model, size, "openvino-int8", ".xml", result)
        else:
            path = export_ir(model, out.with_suffix(".xml"), size, dtype=args.dtype)
        result["dtype"] = args.dtype
    else:  # int8-onnx
        path = _export_checked(args, model, size, "int8", ".onnx", result)
        if path is None or Path(path).suffix != ".onnx":
            raise UserError("the int8 engine here writes no ONNX file; use --format openvino "
                            "--dtype int8 or --auto")
    path = Path(path)
    print(f"wrote {_written(path)}, input 1x3x{size[0]}x{size[1]}, weights: {info['weights']}")
    result.update(output=str(path), bytes=path.stat().st_size)
    if args.json:
        emit_json(result)
    return 0


def _run_auto(args, model, info) -> int:
    from fasterseg.cli.bench import auto_kwargs, print_choice
    from fasterseg.deploy import auto

    size = tuple(args.size)
    print(f"measuring the inference paths at {size[0]}x{size[1]}, batch 1, on {args.device} "
          f"({args.seconds:g} s each):", flush=True)
    choice, pred = auto.choose_and_build(model, size, **auto_kwargs(args))
    print_choice(choice)
    path = pred.save(Path(args.output))
    base = Path(path) if path is not None else Path(args.output)
    choice.update(model=str(args.model), artifact=None if path is None else Path(path).name)
    choice_path = (Path(args.choice_out) if args.choice_out
                   else base.with_name(f"{base.stem}.choice.json"))
    if path is None:
        print(f"the chosen path {choice['chosen']['name']} has no file of its own: rebuild it "
              f"from the choice (`fasterseg predict --deploy {choice_path}`)")
    else:
        print(f"wrote {_written(Path(path))}")
    print(f"wrote {auto.save_choice(choice_path, choice)}")
    if args.json:
        emit_json({"output": None if path is None else str(path), "choice": str(choice_path),
                   "format": choice["chosen"]["backend"], "size": list(size),
                   "chosen": choice["chosen"], "agreement": choice["chosen"]["agreement"],
                   "latency_ms": choice["chosen"]["latency_ms"],
                   "candidates": choice["candidates"]})
    return 0
