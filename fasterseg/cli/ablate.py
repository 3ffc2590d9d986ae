"""``fasterseg ablate``: paper Table 3 rows and Figure 4 on top of a pipeline run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fasterseg.cli.common import emit_json
from fasterseg.cli.pipeline import add_pipeline_args, resolve_config

EXAMPLES = """examples:
  fasterseg ablate -c configs/pipeline/demo.yaml --out runs/demo
  fasterseg ablate -c configs/pipeline/camvid.yaml --set data.root=/data/camvid --estimate-only
"""


def register(sub, parents) -> None:
    p = sub.add_parser(
        "ablate",
        parents=parents,
        help="paper Table 3 / Figure 4 ablations (reuses a pipeline's finished stages)",
        description="Run the main pipeline (skipping finished stages), then the ablations: a "
        "chi=8 search derived with b=1 and b=2, the teacher pruned to the slimmest ratio and "
        "distilled, and a search with naive latency regularisation. Writes ablation.md.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_args(p)
    p.add_argument("-c", "--config", required=True,
                   help="pipeline YAML or preset name (configs/pipeline/NAME.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fasterseg.pipeline.ablate import ablation_stages, build_ablation_report
    from fasterseg.pipeline.estimate import estimate_demo, format_duration
    from fasterseg.pipeline.report import build_report
    from fasterseg.pipeline.runner import StageInterrupted, is_done, run_stages
    from fasterseg.pipeline.stages import build_stages

    cfg = resolve_config(args.config, args)
    out = Path(cfg.out)
    stages = build_stages(cfg, out) + ablation_stages(cfg, out)
    todo = [s for s in stages if not is_done(out, s)]
    est, how = estimate_demo(todo)
    print(f"ablations for {cfg.name}: output in {out}")
    print(f"cost estimate: {format_duration(sum(est.values()))} for {len(todo)} of {len(stages)} "
          f"stages ({how}; scale with your config's iteration counts)")
    if args.estimate_only:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        run_stages(out, stages, est, echo=print if args.verbose else None)
    except StageInterrupted as e:
        print(f"interrupted during stage {e}; run the same command again to resume")
        return 130
    build_report(cfg, out, None)
    path = build_ablation_report(cfg, out)
    print(f"ablation report: {path} ({time.perf_counter() - t0:.0f} s)")
    if args.json:
        emit_json({"out": str(out), "report": str(path)})
    return 0
