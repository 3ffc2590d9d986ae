"""``fasterseg export``: ONNX file with weights inside, optionally verified with onnxruntime."""

from __future__ import annotations

import argparse

from fasterseg.cli.common import add_json, emit_json, parse_size

EXAMPLES = """examples:
  fasterseg export fasterseg_student -o student.onnx --size 1024x2048 --verify
  fasterseg export runs/train/best.pt -o model.onnx --size 720x960
"""

TOLERANCE = 1e-4


def register(sub, parents) -> None:
    p = sub.add_parser(
        "export",
        parents=parents,
        help="export a model to ONNX (and check it with onnxruntime)",
        description="Export to ONNX (eval mode, logits at input resolution, dynamic batch). "
        f"--verify runs onnxruntime on a random input and fails (exit 1) if the max abs "
        f"difference to PyTorch exceeds {TOLERANCE:g} (times the largest |logit| when logits "
        f"exceed 1, as in barely trained nets whose float32 logits are huge).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model name, architecture JSON, checkpoint .pt or run directory")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--size", type=parse_size, default=(1024, 2048), help="input HxW (default 1024x2048)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--verify", action="store_true", help="compare onnxruntime with PyTorch")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.export.onnx import export_onnx, verify_onnx
    from fasterseg.models.network import check_input_size

    h, w = args.size
    check_input_size(h, w)
    model, info = load_model(args.model, num_classes=args.num_classes)
    path = export_onnx(model, args.output, (h, w), opset=args.opset)
    size_mb = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mb:.1f} MiB, opset {args.opset}, input 1x3x{h}x{w}, "
          f"weights: {info['weights']})")
    result = {"output": str(path), "size": [h, w], "opset": args.opset, "bytes": path.stat().st_size}
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
