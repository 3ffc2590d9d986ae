"""``fasterseg demo``: the whole method on generated street scenes in minutes on a laptop CPU."""

from __future__ import annotations

import argparse

from fasterseg.cli.pipeline import add_pipeline_args, execute, resolve_config

EXAMPLES = """examples:
  fasterseg demo                        # generated scenes, output in runs/demo
  fasterseg demo --out runs/demo --estimate-only
  fasterseg demo --data camvid:/data/camvid --out runs/demo-camvid
"""


def register(sub, parents) -> None:
    p = sub.add_parser(
        "demo",
        parents=parents,
        help="the full pipeline on generated street scenes (minutes on a CPU)",
        description="Build a latency table for this machine, co-search teacher and student, "
        "derive them, train the teacher, distil the student, train the same student without "
        "distillation, evaluate and benchmark all three, and write report.md. Every stage is "
        "resumable: run the same command again after an interruption.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_args(p)
    p.add_argument("-c", "--config", default=None,
                   help="pipeline YAML or preset name, e.g. demo_smoke "
                   "(default: configs/pipeline/demo.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config or "configs/pipeline/demo.yaml", args)
    return execute(cfg, args, demo=True)
