"""``fasterseg search``: pretrain the supernet, then co-search teacher and student architectures."""

from __future__ import annotations

import argparse
from pathlib import Path

from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg latency build --space configs/search/synthetic_tiny.yaml --size 256x512 -o lut_tiny.json
  fasterseg search -c synthetic_tiny --lut lut_tiny.json --out runs/search/tiny   # ~2 min, 2 CPU cores
  fasterseg search -c synthetic_tiny --set search.latency_weight=0 --out runs/search/nolat
  fasterseg search -c cityscapes --set data.root=/data/cityscapes --lut lut_1080ti.json --device cuda
  fasterseg search -c camvid --set search.preset_values=official --lut lut.json --stage pretrain
  fasterseg search --resume runs/search/tiny                 # continue exactly where it stopped
  torchrun --nproc-per-node 2 -m fasterseg.cli.main search -c cityscapes --lut lut.json --device cuda

-c takes a YAML file or a preset name from configs/search/ (synthetic_tiny, camvid, cityscapes).
The run directory gets config.yaml, env.json, metrics.jsonl, summary.csv, search.png, last.pt and
arch_params.json (rewritten every epoch). Then: fasterseg derive RUN_DIR.
"""


def register(subparsers, parents) -> None:
    from fasterseg.cli.common import add_device, add_json

    p = subparsers.add_parser(
        "search",
        parents=parents,
        help="search teacher and student architectures (supernet pretraining + co-search)",
        description="Pretrain the FasterSeg supernet (weights only, sandwich widths), then "
        "alternate architecture steps on trainB and weight steps on trainA with a latency penalty "
        "from a lookup table on the student. Writes RUN_DIR/arch_params.json for `fasterseg "
        "derive`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", help="YAML config or preset name (configs/search/NAME.yaml)")
    p.add_argument("--stage", choices=["pretrain", "search", "all"], default="all",
                   help="run only the pretraining, only the search, or both (default all)")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN",
                   help="continue a run from its last.pt (RUN dir; default --out or the newest run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set search.search_epochs=5 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/search/<data>-L<layers>-<time>)")
    p.add_argument("--force", action="store_true",
                   help="start a new run in a non-empty --out: removes its previous run's "
                   "checkpoints, config, metrics and arch params first (other files are kept)")
    p.add_argument("--lut", help="latency table JSON (default: the config's search.lut)")
    p.add_argument("--seed", type=int, help="shorthand for --set search.seed=S")
    add_device(p)
    add_json(p)
    p.set_defaults(func=run)


def _resolve_resume_dir(args) -> Path:
    from fasterseg.engine.rundir import resolve_resume_dir

    return resolve_resume_dir(args.resume, args.out, "runs/search")


def build_config(args):
    """(SearchRunConfig, resume dir or None) from (resumed run | -c) + --set + flags."""
    from fasterseg.cli.train import resolve_config_path
    from fasterseg.config.core import apply_overrides, from_dict, load_yaml
    from fasterseg.config.search import SearchRunConfig
    from fasterseg.engine.rundir import read_config

    resume_dir = None
    if args.resume is not None:
        resume_dir = _resolve_resume_dir(args)
        data = read_config(resume_dir)
        space_before = dict(data.get("space") or {})
    else:
        if not args.config:
            raise UserError("pass -c CONFIG (a YAML file or a preset such as synthetic_tiny, "
                            "camvid, cityscapes) or --resume RUN")
        data = load_yaml(resolve_config_path(args.config, kind="search"))
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"search.seed={args.seed}")
    apply_overrides(data, overrides)
    if resume_dir is not None and dict(data.get("space") or {}) != space_before:
        raise UserError("--resume: the search space (space.*) cannot change on resume")
    cfg = from_dict(SearchRunConfig, data)
    return cfg, resume_dir


def run(args) -> int:
    import torch  # noqa: F401  (heavy import only when the command runs)

    from fasterseg.cli.common import emit_json, interrupted, resolve_device
    from fasterseg.engine import distributed as D
    from fasterseg.engine.cost import format_duration
    from fasterseg.engine.rundir import choose_run_dir, default_run_dir, prepare_run_dir
    from fasterseg.engine.search_loop import search
    from fasterseg.engine.signals import exit_code, sigterm_as_interrupt

    cfg, resume_dir = build_config(args)
    device = resolve_device(args.device)
    if args.lut and not Path(args.lut).is_file():
        raise UserError(f"latency table not found: {args.lut}")
    info = D.init_from_env(device)
    try:
        run_dir = choose_run_dir(resume_dir, args.out, default_run_dir(
            cfg.search.runs_root, cfg.data.preset, f"L{cfg.space.num_layers}"), "search",
            force=args.force)
        run_dir = Path(D.broadcast_str(str(run_dir), info.device))
        main = info.is_main
        if main:
            print(f"run dir: {run_dir}", flush=True)
            for note in prepare_run_dir(run_dir, resume=resume_dir is not None, force=args.force):
                print(note, flush=True)
        try:
            with sigterm_as_interrupt():
                result = search(cfg, run_dir, device=info.device, stage=args.stage,
                                resume=resume_dir is not None, lut=args.lut)
        except KeyboardInterrupt as e:
            interrupted(run_dir, "search", main)
            return exit_code(e)
        if not main:
            return 0
        if result.cost:
            c = result.cost
            print(f"cost ({c['stage']}): {c['seconds_per_iter']:.3f} s/iter, "
                  f"{format_duration(c['epoch_seconds'])}/epoch, peak memory "
                  f"{c['peak_memory_mb']:.0f} MiB")
        last = result.history[-1] if result.history else {}
        print(f"{result.phase}: {result.epoch} epochs done ({result.step} steps)", flush=True)
        for arch, per in result.branch_scores.items():
            line = ", ".join(f"{k}: {100 * v:.1f}" for k, v in per.items())
            print(f"supernet val mIoU {arch}: {line}")
        print(f"arch params: {run_dir / 'arch_params.json'}")
        print(f"next: fasterseg derive {run_dir}", flush=True)
        if args.json:
            emit_json({
                "run_dir": str(run_dir), "stage": result.phase, "epochs": result.epoch,
                "steps": result.step, "arch_params": str(run_dir / "arch_params.json"),
                "branch_scores": result.branch_scores, "latency_weight": result.latency_weight,
                "student_latency_ms": last.get("student_latency_ms"),
                "skip_share": last.get("student_skip_share"), "cost": result.cost,
                "last": str(run_dir / "last.pt"),
            })
        return 0
    finally:
        D.cleanup(info)
