"""The CamVid CPU pipeline's numbers, with the searched and the published student timed together.

Usage (after `fasterseg pipeline -c configs/pipeline/camvid_cpu.yaml ...` or some of its stages):
    python benchmarks/camvid_cpu.py [--run runs/camvid-cpu] [--threads 1 2] [--rounds 5]

Reads the pipeline's ``results.json`` (mIoU, per-class IoU, seed study, cross-sequence check,
stage wall times), then measures the batch-1 latency of the searched student and the published
student at the deployment size in ONE process, alternating the two networks for ``--rounds``
rounds (a shared machine's load then hits both alike): the reported latency is the median over
rounds of each round's median, and the ratio is the median of the per-round ratios. Writes
``benchmarks/results/camvid_cpu.json`` with the contract keys of the issue (mIoU as fractions)
plus the machine (CPU model and the flags that decide bf16/int8 speed) and the commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _model(spec: str, num_classes: int):
    from fasterseg.engine.checkpoint import load_model

    model, _ = load_model(spec, num_classes=num_classes, device="cpu")
    return model.eval()


def measure_pair(searched, published, size, threads: int, rounds: int, seconds: float,
                 also: dict | None = None) -> dict:
    """Searched and published (and the ``also`` networks) alternated in every round."""
    from fasterseg.bench.runner import BenchSettings, benchmark

    s = BenchSettings(size=tuple(size), threads=threads, seconds=seconds, max_warmup_seconds=1.0)
    nets = {"searched": searched, "published": published, **(also or {})}
    rows: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(rounds):
        for name, model in nets.items():
            rows[name].append(benchmark(model, s)["latency_ms"])
    ratios = [p / q for p, q in zip(rows["published"], rows["searched"])]
    out = {"threads": threads, "rounds": rounds,
           "searched_ms": statistics.median(rows["searched"]),
           "published_ms": statistics.median(rows["published"]),
           "ratio_published_over_searched": statistics.median(ratios),
           "per_round_ms": rows}
    if also:
        out["also"] = {name: {"ms": statistics.median(rows[name]),
                              "ratio_over_searched": statistics.median(
                                  [a / b for a, b in zip(rows[name], rows["searched"])])}
                       for name in also}
    return out


KD_KEYS = ("kd_deltas", "kd_delta_mean", "kd_delta_std", "kd_miou_mean", "plain_miou_mean",
           "seeds", "kd_delta_trained_mean", "kd_delta_trained_std", "kd_trained_seeds")


def run_results(run: Path) -> tuple:
    """A pipeline run's config and collected results (``results.json`` contents)."""
    from fasterseg.config.core import load_config
    from fasterseg.config.pipeline import PipelineConfig
    from fasterseg.pipeline.results import collect_results

    cfg = load_config(PipelineConfig, run / "pipeline.yaml")
    return cfg, collect_results(cfg, run)


def kd_study_from(run: Path) -> dict:
    """The seed study's keys of another run of the preset (a seed study costs about 6 student
    trainings; a run that changed only the student's head reuses the last one, labelled)."""
    _, other = run_results(run)
    out = {k: other[k] for k in KD_KEYS if k in other}
    out["kd_study_run"] = str(run)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/camvid-cpu", help="the pipeline's output folder")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="input size (default: the pipeline's deployment size)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=CKPT",
                    help="another network timed in the same rounds (e.g. an experiment's student)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "camvid_cpu.json"))
    ap.add_argument("--kd-from", default=None, metavar="RUN",
                    help="take the distillation seed study (kd_* keys, seeds) from another "
                         "pipeline run of the same preset, e.g. one whose student had no detail "
                         "head; recorded as kd_study_run")
    ap.add_argument("--latency-from", default=None, metavar="JSON",
                    help="reuse the latency timings of an earlier results file for the same two "
                         "networks instead of timing again (e.g. after `fit-offsets`, which "
                         "changes only the classifier bias); needs a quiet machine otherwise")
    args = ap.parse_args(argv)
    also_specs = {}
    for spec in args.also:
        name, sep, ckpt = spec.partition("=")
        if not sep or not name or not Path(ckpt).is_file():
            ap.error(f"--also {spec!r}: expected NAME=CKPT with an existing checkpoint")
        also_specs[name] = ckpt

    from fasterseg.utils.environment import collect_env
    from fasterseg.utils.io import write_json

    run = Path(args.run)
    cfg, res = run_results(run)
    if args.kd_from:  # this run's own pairs stay, under their own key
        res["kd_deltas_this_run"] = res.get("kd_deltas")
        res.update(kd_study_from(Path(args.kd_from)))
    size = args.size or list(cfg.latency.size)
    best = res.get("best_student") or "student"
    searched_ckpt = run / best / "best.pt"
    baseline_ckpt = run / "baseline" / "best.pt"
    if not searched_ckpt.is_file() or not baseline_ckpt.is_file():
        print(f"need {searched_ckpt} and {baseline_ckpt} (run the pipeline's student and baseline "
              "stages first)", file=sys.stderr)
        return 1
    if args.latency_from:
        prev = json.loads(Path(args.latency_from).read_text())
        if list(prev.get("input_size") or size) != list(size) or "latency_timings" not in prev:
            ap.error(f"--latency-from {args.latency_from}: timed at another size")
        timings = prev["latency_timings"]
        method = (f"{prev.get('latency_method', '')} (timings reused from the measurement at "
                  f"commit {prev.get('commit')}: same architectures)")
    else:
        searched, published = _model(str(searched_ckpt), 11), _model(str(baseline_ckpt), 11)
        also = {name: _model(ckpt, 11) for name, ckpt in also_specs.items()}
        timings = [measure_pair(searched, published, size, t, args.rounds, args.seconds, also)
                   for t in args.threads]
        method = (f"batch 1, fp32 eager torch, {size[0]}x{size[1]}, searched and published "
                  f"alternated over {args.rounds} rounds in one process; median of round medians")
    main_t = timings[-1]
    for t in timings:
        print(f"{t['threads']} thread(s) at {size[0]}x{size[1]}: searched {t['searched_ms']:.1f} "
              f"ms, published {t['published_ms']:.1f} ms, published/searched "
              f"{t['ratio_published_over_searched']:.2f}x")
        for name, a in t.get("also", {}).items():
            print(f"  {name}: {a['ms']:.1f} ms, {a['ratio_over_searched']:.3f}x the searched student")
    res["searched"] = {**res.get("searched", {}), "latency_ms": main_t["searched_ms"]}
    res["published"] = {**res.get("published", {}), "latency_ms": main_t["published_ms"]}
    res["speedup_searched_vs_published"] = main_t["ratio_published_over_searched"]
    env = collect_env()
    res.update({
        "latency_timings": timings,
        "latency_method": method,
        "machine": {k: env.get(k) for k in ("cpu", "cpu_count", "cpu_flags", "bf16_cpu", "torch",
                                            "platform")},
        "commit": env.get("git_commit"),
        "run": str(run),
    })
    for k in ("searched", "published", "teacher"):
        (res.get(k) or {}).pop("per_class_iou", None) if k != "searched" else None
    write_json(args.out, res)
    print(json.dumps({k: res.get(k) for k in ("best_student_val_miou", "min_class_iou",
                                              "cross_sequence_miou", "kd_delta_mean",
                                              "kd_delta_std", "seeds", "wall_s")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
