"""``fasterseg latency``: build a latency lookup table, check it, estimate an architecture."""

from __future__ import annotations

import argparse

from fasterseg.cli.common import add_json, emit_json, parse_size
from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg latency build --space configs/search/synthetic_tiny.yaml --size 256x512 \\
      --device cpu --backend torch --threads 2 -o lut.json
  fasterseg latency check --lut lut.json --samples 30 --plot fig3.png
  fasterseg latency estimate fasterseg_student --lut lut_paper.json
"""


def register(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "latency",
        parents=parents,
        help="build / check a latency lookup table",
        description="Latency lookup tables keyed by block signature (operator, input HxW, widths, "
        "stride), measured on this machine; the relaxed latency of the search uses them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="latency_command", metavar="ACTION")

    b = sub.add_parser(
        "build", parents=parents, help="measure every block a search space can use",
        description="Time every block of the search space at one input size (median after "
        "warm-up). Resumable: rerunning with the same -o skips the entries already measured.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--space", required=True, help="YAML file with a 'space:' section")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set space.num_layers=8")
    b.add_argument("--size", type=parse_size, default=(1024, 2048),
                   help="input HxW (default 1024x2048)")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    b.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    b.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    b.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's current setting)")
    b.add_argument("--warmup", type=int, default=10, help="untimed runs per entry (default 10)")
    b.add_argument("--reps", type=int, default=30,
                   help="timed runs per entry; the median is stored (default 30)")
    b.add_argument("--rounds", type=int, default=3,
                   help="passes over all entries the reps are split into, so bursts of load from "
                   "other processes spread over many entries (default 3)")
    b.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time (default); cpu: CPU time of the single compute thread "
                   "(needs --threads 1; robust on a shared machine where other processes steal "
                   "the core)")
    b.add_argument("--num-classes", type=int, default=19,
                   help="classes of the head entries (default 19)")
    b.add_argument("-o", "--out", required=True, help="output table (JSON)")
    add_json(b)
    b.set_defaults(func=run_build)

    c = sub.add_parser(
        "check", parents=parents, help="compare table estimates with real networks (Fig. 3)",
        description="Sample random derived architectures of the table's space, time each whole "
        "network with the table's back end/device/dtype/threads and compare with the estimate.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--lut", required=True, help="latency table (JSON)")
    c.add_argument("--samples", type=int, default=30, help="random architectures (default 30)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--role", default="student", choices=["student", "teacher"])
    c.add_argument("--warmup", type=int, default=5)
    c.add_argument("--reps", type=int, default=20,
                   help="timed runs per network; median (default 20)")
    c.add_argument("--rounds", type=int, default=4,
                   help="round-robin passes over the networks (default 4)")
    c.add_argument("--plot", default=None, help="write the scatter plot (PNG/PDF/SVG)")
    c.add_argument("--out", default=None, help="write all points and the method as JSON")
    add_json(c)
    c.set_defaults(func=run_check)

    e = sub.add_parser(
        "estimate", parents=parents, help="latency of an architecture from a table",
        description="Sum of the table entries of a derived architecture, per part.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("model", help="published name or architecture JSON")
    e.add_argument("--lut", required=True, help="latency table (JSON)")
    e.add_argument("--num-classes", type=int, default=None)
    add_json(e)
    e.set_defaults(func=run_estimate)

    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _load_space(path: str, overrides: list[str]):
    from fasterseg.config.core import apply_overrides, from_dict, load_yaml
    from fasterseg.config.presets import resolve_preset
    from fasterseg.config.search_space import SearchSpaceConfig

    data = apply_overrides(load_yaml(resolve_preset(path, "search")), overrides)
    if "space" not in data:
        raise UserError(f"{path} has no 'space:' section")
    return from_dict(SearchSpaceConfig, data["space"], "space")


def run_build(args) -> int:
    from fasterseg.cli.common import resolve_device
    from fasterseg.latency.build import build_table

    space = _load_space(args.space, args.set)
    device = str(resolve_device(args.device))
    if args.backend == "tensorrt":
        try:
            import tensorrt  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise UserError(
                "backend tensorrt: the tensorrt package (TensorRT 10) is not installed"
            ) from None

    def on_plan(todo: int, done: int, seconds: float) -> None:
        extra = f" ({done} already in {args.out}, skipped)" if done else ""
        print(f"measuring {todo} blocks{extra} at {args.size[0]}x{args.size[1]} on {device} "
              f"[{args.backend}, {args.dtype}]; estimated time ~{_human(seconds)}", flush=True)

    table = build_table(space, args.size, args.out, backend=args.backend, device=device,
                        dtype=args.dtype, threads=args.threads, warmup=args.warmup, reps=args.reps,
                        rounds=args.rounds, clock=args.clock, num_classes=args.num_classes,
                        on_plan=on_plan)
    print(f"wrote {args.out}: {len(table)} entries ({table.meta['device_name']}, "
          f"{table.meta['threads']} threads)")
    print(f"next: fasterseg latency check --lut {args.out} --samples 30 --plot fig3.png")
    if args.json:
        emit_json({"out": str(args.out), "entries": len(table), "meta": table.meta})
    return 0


def _human(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_check(args) -> int:
    from fasterseg.latency.check import check_table, ensure_measurable, plot_check
    from fasterseg.latency.table import LatencyTable

    table = LatencyTable.load(args.lut)
    m = table.meta
    ensure_measurable(table, source=args.lut)
    table.check_compatible(device=m.get("device", "cpu"), source=args.lut)
    print(f"checking {args.lut}: {args.samples} random {args.role} networks at "
          f"{m['input_size'][0]}x{m['input_size'][1]} [{m.get('backend')}, {m.get('dtype')}, "
          f"{m.get('device')}, {m.get('threads')} threads]", flush=True)
    res = check_table(table, args.samples, seed=args.seed, warmup=args.warmup, reps=args.reps,
                      rounds=args.rounds, role=args.role)
    print(f"{'network':<12}{'estimated ms':>14}{'measured ms':>13}{'error':>8}")
    for n, e, me in zip(res.names, res.estimated_ms, res.measured_ms):
        print(f"{n:<12}{e:>14.3f}{me:>13.3f}{100 * (e - me) / me:>7.1f}%")
    print(f"pearson r = {res.pearson_r:.4f}, mean relative error = {100 * res.mean_rel_error:.2f}% "
          f"({len(res.names)} samples; paper: r = 0.993); whole networks take "
          f"{res.offset_ms:+.3f} ms more than the sum of their blocks (median)")
    if args.plot:
        print(f"wrote {plot_check(res, args.plot)}")
    if args.out:
        from fasterseg.utils.io import write_json

        print(f"wrote {write_json(args.out, res.to_dict())}")
    if args.json:
        d = res.to_dict()
        emit_json({"pearson_r": d["pearson_r"], "mean_rel_error": d["mean_rel_error"],
                   "samples": d["samples"], "offset_ms": d["offset_ms"], "points": d["points"],
                   "method": d["method"]})
    return 0


def run_estimate(args) -> int:
    from fasterseg.latency.model import latency_breakdown
    from fasterseg.latency.table import LatencyTable
    from fasterseg.models import resolve_arch

    table = LatencyTable.load(args.lut)
    arch = resolve_arch(args.model)
    if args.num_classes:
        arch = arch.with_num_classes(args.num_classes)
    parts = latency_breakdown(arch, table)
    size = table.meta.get("input_size")
    where = f"{table.meta.get('backend')}, {table.meta.get('device_name')}"
    print(f"{arch.name} at {size[0]}x{size[1]} ({where}):")
    for k, v in parts.items():
        print(f"  {k:<12}{v:9.3f} ms")
    if args.json:
        emit_json({"model": arch.name, "latency_ms": parts["total"], "parts": parts, "size": size})
    return 0
