"""``fasterseg env``: versions and hardware, to paste into bug reports."""

from __future__ import annotations

import argparse

from fasterseg.cli.common import add_json, emit_json


def register(sub, parents) -> None:
    p = sub.add_parser(
        "env",
        parents=parents,
        help="versions, CPU/GPU and threads (for bug reports)",
        description="Print library versions, CPU/GPU, threads and relevant environment variables.",
        epilog="example:\n  fasterseg env --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fasterseg.utils.environment import collect_env

    info = collect_env()
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        emit_json(info)
    return 0
