"""``fasterseg info``: parameters, MACs, output shape and a per-module breakdown."""

from __future__ import annotations

import argparse

from fasterseg.cli.common import add_json, emit_json, format_count, parse_size

EXAMPLES = """examples:
  fasterseg info fasterseg_student
  fasterseg info fasterseg_teacher --size 512x1024 --json
  fasterseg info runs/derive/student.json --num-classes 11
  fasterseg info runs/quick                     # a run directory: its best.pt (else last.pt)
"""


def register(sub, parents) -> None:
    p = sub.add_parser(
        "info",
        parents=parents,
        help="parameters, MACs and structure of a model",
        description="Report parameters (total incl. auxiliary heads, and inference-only), "
        "multiply-accumulates (MACs, the paper's 'FLOPs') at an input size, the output shape and "
        "a per-module breakdown.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model name, architecture JSON, checkpoint .pt or run directory")
    p.add_argument("--size", type=parse_size, default=(1024, 2048), help="input HxW (default 1024x2048)")
    p.add_argument("--num-classes", type=int, default=None, help="override the number of classes")
    p.add_argument("--cells", action="store_true", help="also list every cell")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fasterseg.engine.checkpoint import load_model
    from fasterseg.models.network import check_input_size
    from fasterseg.utils.complexity import count_complexity

    h, w = args.size
    check_input_size(h, w)
    model, _ = load_model(args.model, num_classes=args.num_classes)
    stats = count_complexity(model, (h, w))
    arch = model.arch
    out_shape = [1, model.num_classes, h, w]
    print(f"model:        {arch.name}  ({args.model})")
    print(f"input:        1x3x{h}x{w}   output: {'x'.join(map(str, out_shape))}")
    print(f"params:       {format_count(stats['params_total'])} total (incl. auxiliary heads), "
          f"{format_count(stats['params_inference'])} for inference")
    print(f"MACs:         {format_count(stats['macs'])} (multiply-accumulates; the paper's 'FLOPs')")
    rates = [b.output_rate for b in arch.branches]
    print(f"branches:     output rates {rates}, {arch.shared_prefix()} shared leading cells, "
          f"{len(model.cells)} unique cells")
    print(f"stem/head:    ratio {arch.stem_ratio} / {arch.head_ratio}   classes: {model.num_classes}")
    print()
    print(f"{'module':<14}{'params':>12}{'MACs':>14}")
    for row in stats["breakdown"]:
        print(f"{row['module']:<14}{format_count(row['params']):>12}{format_count(row['macs']):>14}")
    if args.cells:
        print()
        for b, branch in enumerate(arch.branches):
            print(f"branch {b} (1/{branch.output_rate}):")
            for i, (cell, idx) in enumerate(zip(branch.cells, model.branch_plan[b])):
                shared = " shared" if b > 0 and i < arch.shared_prefix() else ""
                print(f"  {i:2d} {cell.op:<15} rate 1/{cell.rate:<3} stride {cell.stride} "
                      f"ratio {cell.ratio:<3} -> {cell.out_channels} ch  [cell {idx}]{shared}")
    if args.json:
        emit_json({
            "model": arch.name,
            "params_total": stats["params_total"],
            "params_inference": stats["params_inference"],
            "macs": stats["macs"],
            "output_shape": out_shape,
            "size": [h, w],
            "branches": rates,
            "shared_cells": arch.shared_prefix(),
            "breakdown": stats["breakdown"],
        })
    return 0
