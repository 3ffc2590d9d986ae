"""``fasterseg train``: train a derived network (optionally distilled from a teacher)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fasterseg.errors import UserError

EXAMPLES = """examples:
  fasterseg train -c synthetic_tiny --out runs/tiny            # < 1 minute on 2 CPU cores
  fasterseg train -c configs/train/camvid.yaml --set data.root=/data/camvid --device cuda
  fasterseg train -c cityscapes --set data.root=/data/cityscapes --arch fasterseg_teacher
  fasterseg train -c cityscapes --set data.root=/data/cityscapes --teacher runs/teacher/best.pt
  fasterseg train --resume runs/tiny --set train.epochs=10       # continue (and extend) a run
  fasterseg train -c synthetic_tiny --out runs/tiny --force     # start runs/tiny over
  torchrun --nproc-per-node 4 -m fasterseg.cli.main train -c cityscapes --out runs/c4 --device cuda

-c takes a YAML file or a preset name from configs/train/ (cityscapes, camvid, bdd100k,
synthetic_tiny). Ctrl-C or SIGTERM saves last.pt; --resume continues exactly where it stopped.
A new run never writes into a non-empty --out without --force (which removes that run's files).
"""


def register(subparsers, parents) -> None:
    from fasterseg.cli.common import add_device, add_json

    p = subparsers.add_parser(
        "train",
        parents=parents,
        help="train a network (OHEM + aux heads, optional distillation)",
        description="Train a derived FasterSeg network. Every run gets a directory with the "
        "resolved config.yaml, env.json, metrics.jsonl, summary.csv, last.pt and best.pt.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", help="YAML config or preset name (configs/train/NAME.yaml)")
    p.add_argument("--arch", help="model name or architecture JSON (default: train.arch)")
    p.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint for distillation")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN",
                   help="continue a run from its last.pt (default: --out or the newest run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/train/<arch>-<data>-<time>)")
    p.add_argument("--force", action="store_true",
                   help="start a new run in a non-empty --out: removes its previous run's "
                   "checkpoints, config, metrics and summary first (other files are kept)")
    p.add_argument("--seed", type=int, help="shorthand for --set train.seed=S")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels and seeding (bit-exact resume on CPU)")
    add_device(p)
    add_json(p)
    p.set_defaults(func=run)


def resolve_config_path(name: str, kind: str = "train") -> Path:
    """A YAML path, or a preset name of ``configs/<kind>/`` (see :mod:`fasterseg.config.presets`)."""
    from fasterseg.config.presets import resolve_preset

    return resolve_preset(name, kind)


def _resolve_resume_dir(args) -> Path:
    from fasterseg.engine.rundir import resolve_resume_dir

    return resolve_resume_dir(args.resume, args.out, "runs/train")


def build_config(args) -> tuple[object, Path | None]:
    """Config dict from (resumed run | -c) + --set + flags -> TrainRunConfig, resume dir."""
    from fasterseg.config.core import apply_overrides, from_dict, load_yaml
    from fasterseg.config.train import TrainRunConfig
    from fasterseg.engine.rundir import read_config

    resume_dir = None
    if args.resume is not None:
        resume_dir = _resolve_resume_dir(args)
        data = read_config(resume_dir)
        stored_arch = data.get("train", {}).get("arch")
        if args.arch and args.arch != stored_arch:
            raise UserError(f"--resume: the run was trained with --arch {stored_arch}; "
                            "the architecture cannot change on resume")
    else:
        if not args.config:
            raise UserError("pass -c CONFIG (a YAML file or a preset such as synthetic_tiny, "
                            "camvid, cityscapes, bdd100k) or --resume RUN")
        data = load_yaml(resolve_config_path(args.config))
    overrides = list(args.set)
    if args.arch:
        overrides.append(f"train.arch={args.arch}")
    if args.teacher:
        overrides.append(f"train.teacher={args.teacher}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.deterministic:
        overrides.append("train.deterministic=true")
    apply_overrides(data, overrides)
    cfg = from_dict(TrainRunConfig, data)
    if cfg.train.teacher and not Path(cfg.train.teacher).is_file():
        raise UserError(f"teacher checkpoint not found: {cfg.train.teacher}")
    return cfg, resume_dir


def run(args) -> int:
    import torch  # noqa: F401  (heavy import only when the command runs)

    from fasterseg.cli.common import emit_json, interrupted, resolve_device
    from fasterseg.engine import distributed as D
    from fasterseg.engine.cost import format_duration
    from fasterseg.engine.rundir import choose_run_dir, default_run_dir, prepare_run_dir
    from fasterseg.engine.signals import exit_code, sigterm_as_interrupt
    from fasterseg.engine.trainer import train
    from fasterseg.models import resolve_arch

    cfg, resume_dir = build_config(args)
    device = resolve_device(args.device)
    if resume_dir is None:
        resolve_arch(cfg.train.arch)  # unknown name / bad JSON: fail before creating anything
    info = D.init_from_env(device)
    try:
        run_dir = choose_run_dir(resume_dir, args.out, default_run_dir(
            cfg.train.runs_root, Path(cfg.train.arch).stem, cfg.data.preset), "run",
            force=args.force)
        run_dir = Path(D.broadcast_str(str(run_dir), info.device))
        main = info.is_main
        if main:
            print(f"run dir: {run_dir}", flush=True)
            for note in prepare_run_dir(run_dir, resume=resume_dir is not None, force=args.force):
                print(note, flush=True)
        try:
            with sigterm_as_interrupt():
                result = train(cfg, run_dir, device=info.device, resume=resume_dir is not None)
        except KeyboardInterrupt as e:
            if main and not (run_dir / "last.pt").is_file():
                print("interrupted before the first checkpoint: nothing to resume", flush=True)
                return exit_code(e)
            interrupted(run_dir, "train", main)
            return exit_code(e)
        if not main:
            return 0
        best = result.best
        if result.cost:
            c = result.cost
            print(f"cost: {c['seconds_per_iter']:.3f} s/iter, {format_duration(c['epoch_seconds'])}"
                  f"/epoch, peak memory {c['peak_memory_mb']:.0f} MiB")
        if best:
            value = "undefined" if best["value"] is None else f"{best['value']:.4f}"
            print(f"best: {best['name']} {value} at epoch {best['epoch']} "
                  f"-> {run_dir / 'best.pt'}")
        print(f"trained {result.epoch} epochs ({result.step} steps), last loss "
              f"{result.last_loss if result.last_loss is None else round(result.last_loss, 4)}")
        eval_data = f"-c {run_dir / 'config.yaml'}"
        ckpt = run_dir / ("best.pt" if (run_dir / "best.pt").is_file() else "last.pt")
        print(f"next: fasterseg eval {ckpt} {eval_data}", flush=True)
        if args.json:
            ev = result.last_eval or {}
            emit_json({
                "run_dir": str(run_dir), "epochs": result.epoch, "steps": result.step,
                "last_loss": result.last_loss, "best": best,
                "miou": ev.get("miou"), "aacc": ev.get("aacc"), "macc": ev.get("macc"),
                "per_class_iou": ev.get("per_class_iou"), "cost": result.cost,
                "world_size": result.world_size,
                "last": str(run_dir / "last.pt"), "best_checkpoint": str(run_dir / "best.pt"),
            })
        return 0
    finally:
        D.cleanup(info)
