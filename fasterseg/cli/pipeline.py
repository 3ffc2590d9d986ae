"""``fasterseg pipeline``: the whole chain at real scale, each stage skipped when done."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fasterseg.cli.common import add_json, emit_json

EXAMPLES = """examples:
  fasterseg pipeline -c configs/pipeline/camvid.yaml --estimate-only
  fasterseg pipeline -c configs/pipeline/camvid.yaml --set data.root=/data/camvid
  fasterseg pipeline -c configs/pipeline/cityscapes.yaml --out runs/cityscapes --device cuda
"""


def register(sub, parents) -> None:
    p = sub.add_parser(
        "pipeline",
        parents=parents,
        help="search -> derive -> train teacher -> distil student -> eval -> bench -> report",
        description="Run the full FasterSeg chain from a pipeline config. Each stage writes "
        "OUT/stages/<stage>.json when it finishes and is skipped on the next run; an "
        "interrupted stage resumes from its checkpoint. A cost estimate is printed first.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_args(p)
    p.add_argument("-c", "--config", required=True,
                   help="pipeline YAML or preset name (configs/pipeline/NAME.yaml)")
    p.set_defaults(func=run)


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output directory (default: the config's out)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline config value, e.g. data.root=/data/camvid")
    p.add_argument("--data", metavar="PRESET[:ROOT]", help="dataset, e.g. camvid:/data/camvid")
    p.add_argument("--device", help="device for search/train/eval (default: config)")
    p.add_argument("--estimate-only", action="store_true", help="print the cost estimate and exit")
    p.add_argument("--verbose", action="store_true", help="echo every stage's output")
    p.add_argument("--until", metavar="STAGE",
                   help="run the stages up to and including STAGE, then stop (e.g. derive)")
    p.add_argument("--only", metavar="STAGES",
                   help="run only these comma-separated stages (their inputs must exist)")
    add_json(p)


def resolve_config(path: str | None, args: argparse.Namespace):
    from fasterseg.config.core import apply_overrides, from_dict, load_yaml
    from fasterseg.config.pipeline import PipelineConfig
    from fasterseg.config.presets import resolve_preset
    from fasterseg.errors import UserError

    data = load_yaml(resolve_preset(path, "pipeline")) if path else {}
    apply_overrides(data, args.set)
    if args.data:
        preset, _, root = args.data.partition(":")
        data.setdefault("data", {})["preset"] = preset
        if root:
            data["data"]["root"] = root
        elif preset != "synthetic":
            raise UserError(f"--data {args.data}: give the dataset root as PRESET:ROOT")
    if args.device:
        data["device"] = args.device
    if args.out:
        data["out"] = args.out
    return from_dict(PipelineConfig, data)


def select_stages(stages: list, until: str | None, only: str | None) -> list:
    """The stages ``--until`` / ``--only`` ask for (unknown names are a one-line error)."""
    from fasterseg.errors import UserError

    names = [s.name for s in stages]
    wanted = [n.strip() for n in only.split(",") if n.strip()] if only else []
    for n in wanted + ([until] if until else []):
        if n not in names:
            raise UserError(f"no stage named {n!r}; stages: {', '.join(names)}")
    if until:
        stages = stages[: names.index(until) + 1]
    if wanted:
        stages = [s for s in stages if s.name in wanted]
    return stages


def execute(cfg, args: argparse.Namespace, demo: bool) -> int:
    import yaml

    from fasterseg.config.core import to_dict
    from fasterseg.pipeline.estimate import estimate_demo, estimate_pipeline, format_duration
    from fasterseg.pipeline.report import build_report
    from fasterseg.pipeline.runner import StageInterrupted, is_done, run_stages
    from fasterseg.pipeline.stages import build_stages
    from fasterseg.utils.environment import collect_env
    from fasterseg.utils.io import write_json, write_text

    out = Path(cfg.out)
    stages = select_stages(build_stages(cfg, out), getattr(args, "until", None),
                           getattr(args, "only", None))
    todo = [s for s in stages if not is_done(out, s)]
    print(f"{'demo' if demo else 'pipeline'} {cfg.name}: output in {out}")
    est, how = estimate_demo(todo) if demo else estimate_pipeline(cfg, todo)
    if demo and cfg.data.get("preset", "synthetic") != "synthetic":
        how += "; measured on the generated scenes: real images of another size take longer"
    total = sum(est.values())
    print(f"cost estimate: {format_duration(total)} for {len(todo)} of {len(stages)} stages "
          f"({how})")
    for s in todo:
        print(f"  {s.name:<18} ~{format_duration(est[s.name])}")
    if args.estimate_only:
        if args.json:
            emit_json({"estimate_s": total, "stages": {s.name: est[s.name] for s in todo}})
        return 0
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pipeline.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    write_json(out / "env.json", collect_env())
    t0 = time.perf_counter()
    try:
        results = run_stages(out, stages, est, echo=print if args.verbose else None)
    except StageInterrupted as e:
        print(e.describe(), flush=True)
        return e.code
    elapsed = time.perf_counter() - t0
    report = build_report(cfg, out, elapsed)
    print(f"report: {report}  ({elapsed:.0f} s)")
    best = "best.offsets.pt" if cfg.train.fit_offsets else "best.pt"
    net = _best_student(out)
    print(f"next: open {report}; deploy with `fasterseg export {out}/{net}/{best} -o student.onnx --verify`")
    if args.json:
        summary = {"out": str(out), "report": str(report), "seconds": elapsed}
        for run in ("teacher", "student_kd", "student", "baseline"):
            ev, bn = results.get(f"eval_{run}", {}), results.get(f"bench_{run}", {})
            if ev or bn:
                summary[run] = {"miou": ev.get("miou"), "latency_ms": bn.get("latency_ms"),
                                "fps": bn.get("fps")}
        emit_json(summary)
    return 0


def _best_student(out: Path) -> str:
    """The run dir of the student with the higher val mIoU (results.json), distilled if unknown."""
    try:
        name = json.loads((out / "results.json").read_text()).get("best_student")
    except (OSError, ValueError, AttributeError):
        name = None
    return name if name in ("student_kd", "student") else "student_kd"


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config, args)
    return execute(cfg, args, demo=False)
