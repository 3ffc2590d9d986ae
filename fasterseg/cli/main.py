"""``fasterseg`` console script: argparse subcommands dispatched to ``fasterseg.cli.<name>``.

Each command module defines ``register(subparsers, parents)`` which adds its parser and sets
``func=run`` with ``run(args) -> int``. Heavy imports (torch) happen inside ``run`` so that
``fasterseg --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from fasterseg.errors import UserError

# Order = order in --help. A module that does not exist yet is simply skipped.
COMMANDS = (
    "info",
    "export",
    "env",
    "data",
    "train",
    "eval",
    "fit_offsets",
    "predict",
    "latency",
    "bench",
    "search",
    "derive",
    "demo",
    "pipeline",
    "ablate",
)

EPILOG = """examples:
  fasterseg info fasterseg_student --size 1024x2048
  fasterseg export fasterseg_student -o student.onnx --size 512x1024 --verify
  fasterseg env
"""


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: a subcommand's copy of --debug must not reset one given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="show full tracebacks for errors",
    )
    parser = argparse.ArgumentParser(
        prog="fasterseg",
        description="FasterSeg: search, derive, train, evaluate, benchmark and export "
        "real-time segmentation networks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    from fasterseg import __version__

    parser.add_argument("--version", action="version", version=f"fasterseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"fasterseg.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fasterseg.cli.{name}":
                continue
            raise
        module.register(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 on usage errors, 0 on --help
        return int(e.code or 0)
    args.debug = getattr(args, "debug", False)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
