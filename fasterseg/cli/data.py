"""``fasterseg data``: check a dataset tree, write synthetic scenes, list presets."""

from __future__ import annotations

import argparse

from fasterseg.cli.common import add_json, emit_json, parse_size

EXAMPLES = """examples:
  fasterseg data check /data/cityscapes --preset cityscapes --split val
  fasterseg data check /data/camvid --preset camvid --json
  fasterseg data synth out/synth --num 32 --size 256x512 --seed 0
  fasterseg data check out/synth --preset folder
  fasterseg data presets
"""

PRESET_CHOICES = ("cityscapes", "camvid", "bdd100k", "folder")


def register(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "data",
        parents=parents,
        help="check datasets, write synthetic scenes, list presets",
        description="Dataset tools: `check` pairs every image with its label and reports "
        "problems; `synth` writes procedural street scenes as a folder-preset tree; "
        "`presets` lists the built-in dataset layouts and label sets.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    c = sub.add_parser(
        "check",
        parents=parents,
        help="report missing partners, corrupt files, bad label values, class frequencies",
        description="Pair every image with its label and report missing partners, size "
        "mismatches, unreadable files, label values outside the classes and ignore value, "
        "splits whose labels are all void/ignore (no pixel of any class), sizes not divisible "
        "by 32 (informational), counts per split and per-class pixel frequencies. Single "
        "all-void label files are warnings. Exit 0 when clean (warnings allowed), 1 when there "
        "are problems.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("root", help="dataset root folder")
    c.add_argument("--preset", required=True, choices=PRESET_CHOICES, help="dataset layout")
    c.add_argument("--split", action="append", help="split to check (repeatable; default: all)")
    c.add_argument(
        "--dataset-yaml", help="folder preset: dataset.yaml path (default ROOT/dataset.yaml)"
    )
    c.add_argument("--workers", type=int, default=0, help="processes that decode files (default 0)")
    c.add_argument("--max-rows", type=int, default=50, help="problem rows printed (default 50)")
    add_json(c)
    c.set_defaults(func=run_check)

    s = sub.add_parser(
        "synth",
        parents=parents,
        help="write synthetic street scenes as a folder-preset tree",
        description="Write procedural street scenes (deterministic by seed) to OUT in the "
        "folder layout: images/{train,val}, labels/{train,val} and dataset.yaml.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("out", help="output folder")
    s.add_argument("--num", type=int, default=16, help="training scenes (default 16)")
    s.add_argument("--val", type=int, default=None, help="validation scenes (default num/4, >= 1)")
    s.add_argument("--size", type=parse_size, default=(256, 512), help="HxW (default 256x512)")
    s.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    add_json(s)
    s.set_defaults(func=run_synth)

    ps = sub.add_parser("presets", parents=parents, help="list dataset presets and their layouts")
    add_json(ps)
    ps.set_defaults(func=run_presets)

    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def run(args) -> int:  # dispatcher convention: `data` itself needs an action
    return args.func(args)


def run_check(args) -> int:
    from fasterseg.data.check import check_dataset, format_report

    report = check_dataset(
        args.preset, args.root, args.split, spec_path=args.dataset_yaml, workers=args.workers
    )
    print(format_report(report, max_rows=args.max_rows))
    if args.json:
        emit_json(report)
    return 0 if report["ok"] else 1


def run_synth(args) -> int:
    from fasterseg.data.synthetic import write_folder_tree
    from fasterseg.errors import UserError

    if args.num < 0 or (args.val is not None and args.val < 0):
        raise UserError("--num and --val must be >= 0")
    h, w = args.size
    if h < 8 or w < 8:
        raise UserError(f"--size must be at least 8x8, got {h}x{w}")
    val = max(1, args.num // 4) if args.val is None else args.val
    info = write_folder_tree(args.out, args.num, val, (h, w), args.seed)
    print(f"wrote {args.num} train + {val} val scenes ({h}x{w}, seed {args.seed}) to {args.out}")
    print(f"next: fasterseg data check {args.out} --preset folder")
    if args.json:
        emit_json(info)
    return 0


def run_presets(args) -> int:
    from fasterseg.data.presets import LAYOUTS, preset_label_set

    rows = []
    for name in ("synthetic", "cityscapes", "camvid", "bdd100k", "folder"):
        if name == "folder":
            rows.append({"preset": name, "layout": LAYOUTS[name], "classes": "from dataset.yaml"})
            continue
        ls = preset_label_set(name)
        layout = LAYOUTS.get(name, "generated on the fly (no files)")
        rows.append({"preset": name, "layout": layout, "num_classes": ls.num_classes,
                     "classes": ls.class_names})  # fmt: skip
    for r in rows:
        cls = r["classes"] if isinstance(r["classes"], str) else ", ".join(r["classes"])
        n = f" ({r['num_classes']} classes)" if "num_classes" in r else ""
        print(f"{r['preset']}{n}\n  layout:  {r['layout']}\n  classes: {cls}")
    if args.json:
        emit_json({"presets": rows})
    return 0
