"""Ablations of paper Table 3 and Figure 4 on top of a pipeline run.

Table 3 rows: (1) operators + rates searched with the ratio fixed to 8, b = 1; (2) the same with
b = 2; (3) the co-searched student S (searched ratios), trained alone; (4) the teacher pruned to
the slimmest ratio, distilled from the teacher; (5) S distilled from T (FasterSeg). Figure 4: the
supernet's mIoU and relaxed latency per epoch with naive vs fine-grained (decoupled) latency
regularisation. Every extra network runs through the same CLI stages as the main pipeline.
"""

from __future__ import annotations

import math
from pathlib import Path

from fasterseg.config.pipeline import PipelineConfig
from fasterseg.pipeline.paths import resolve_preset
from fasterseg.pipeline.runner import load_marker
from fasterseg.pipeline.stages import Stage, fmt_size
from fasterseg.utils.io import save_figure, write_text

# (run name, Table 3 label, main-pipeline run it reuses or None)
TABLE3 = [
    ("b1_chi8", "O, s \\| chi = 8, b = 1", None),
    ("b2_chi8", "O, s \\| chi = 8, b = 2", None),
    ("student", "S: O, s, chi \\| b = 2 (no distillation)", "student"),
    ("pruned_teacher", "T -> pruned T (distilled)", None),
    ("student_kd", "T -> S (FasterSeg, distilled)", "student_kd"),
]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def ablation_stages(cfg: PipelineConfig, out: Path) -> list[Stage]:
    """Stages that come after the main pipeline's (which they reuse: LUT, teacher, S, T->S)."""
    ab = out / "ablate"
    lut = out / "lut.json"
    data = _sets(cfg.data_overrides())
    search_cfg = resolve_preset(cfg.search.config, "search")
    train_cfg = resolve_preset(cfg.train.config, "train")
    stages: list[Stage] = []

    def search(name: str, extra: list[str], title: str) -> None:
        stages.append(Stage(f"ablate_{name}", title, [
            "search", "-c", search_cfg, "--lut", str(lut), "--out", str(ab / name),
            "--device", cfg.device, *data, *_sets(cfg.search.set), *_sets(extra), "--json"],
            run_dir=ab / name, needs=[lut],
            kind="search"))

    def train(name: str, arch: Path, teacher: Path | None, title: str) -> None:
        argv = ["train", "-c", train_cfg, "--device", cfg.device, *data, "--arch", str(arch), "--out", str(ab / name),
                *_sets(cfg.train.student_set), "--json"]
        needs = [arch]
        if teacher:
            argv += ["--teacher", str(teacher)]
            needs.append(teacher)
        stages.append(Stage(f"ablate_train_{name}", title, argv, run_dir=ab / name, needs=needs,
                            kind="train"))
        ckpt = ab / name / "best.pt"
        stages.append(Stage(f"ablate_eval_{name}", f"evaluate {name}", [
            "eval", str(ckpt), "--data", _data_spec(cfg), "--split", cfg.eval.split, "-c",
            train_cfg, *data, "--device", cfg.device, "--json"], needs=[ckpt], kind="eval"))
        b = cfg.bench
        stages.append(Stage(f"ablate_bench_{name}", f"benchmark {name}", [
            "bench", str(ckpt), "--size", fmt_size(cfg.latency.size), "--device", b.device,
            "--backend", b.backend, "--dtype", b.dtype, "--seconds", str(b.seconds), "--threads",
            str(b.threads), "--json"], needs=[ckpt], kind="bench"))

    search("search_chi8", ["space.ratios=[8]"], "search with the expansion ratio fixed to 8")
    for b in (1, 2):
        stages.append(Stage(f"ablate_derive_b{b}", f"derive b={b} from the chi=8 search", [
            "derive", str(ab / "search_chi8"), "-o", str(ab / f"arch_b{b}_chi8"), "--lut", str(lut),
            "--branches", str(b), "--json"], needs=[ab / "search_chi8" / "arch_params.json"],
            kind="derive"))
        train(f"b{b}_chi8", ab / f"arch_b{b}_chi8" / "student.json", None,
              f"train the b={b}, chi=8 student")
    pruned = ab / "arch_pruned" / "teacher_pruned.json"
    stages.append(Stage("ablate_prune_teacher", "prune the teacher to the slimmest ratio", [],
                        needs=[out / "arch" / "teacher.json"], kind="derive",
                        func=lambda: _prune_teacher(cfg, out / "arch" / "teacher.json", pruned)))
    train("pruned_teacher", pruned, out / "teacher" / "best.pt",
          "distil the pruned teacher from the teacher")
    search("search_naive", ["search.latency_mode=naive"],
           "search with naive (undecoupled) latency regularisation")
    return stages


def _data_spec(cfg: PipelineConfig) -> str:
    preset = cfg.data.get("preset", "synthetic")
    root = cfg.data.get("root")
    return f"{preset}:{root}" if root else preset


def _prune_teacher(cfg: PipelineConfig, teacher_json: Path, out_json: Path) -> dict:
    from fasterseg.arch import load_arch
    from fasterseg.arch.transforms import prune_widths
    from fasterseg.config.core import load_yaml

    space = load_yaml(resolve_preset(cfg.search.config, "search")).get("space", {})
    ratios = space.get("ratios", [4, 6, 8, 10, 12])
    ratio = min(ratios)
    student_ratio = space.get("student_head_ratio", 8)
    arch = prune_widths(load_arch(teacher_json), ratio, stem_ratio=student_ratio,
                        head_ratio=student_ratio, name="teacher_pruned")
    arch.save(out_json)
    return {"arch": str(out_json), "ratio": ratio}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v, fmt="{:.2f}", scale=1.0) -> str:
    return fmt.format(v * scale) if _finite(v) else "n/a"


def _search_curve(run_dir: Path) -> list[dict]:
    from fasterseg.engine.rundir import read_metrics

    return [r for r in read_metrics(run_dir) if r.get("type") == "epoch" and r.get("stage") == "search"]


def plot_latency_ablation(out: Path) -> Path | None:
    """Paper Fig. 4: supernet student mIoU and relaxed latency per search epoch, both regimes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"fine-grained (decoupled)": out / "search", "naive": out / "ablate" / "search_naive"}
    curves = {k: _search_curve(v) for k, v in runs.items()}
    if not any(curves.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (label, rows) in zip(axes, curves.items()):
        ep = [r.get("epoch") for r in rows]
        miou = [100 * r["student_best_miou"] if _finite(r.get("student_best_miou")) else float("nan")
                for r in rows]
        lat = [r.get("student_latency_ms", float("nan")) for r in rows]
        ax.plot(ep, miou, "o-", color="tab:blue", label="mIoU (%)")
        ax.set(xlabel="search epoch", ylabel="supernet student mIoU (%)", title=label)
        ax2 = ax.twinx()
        ax2.plot(ep, lat, "s--", color="tab:red", label="latency (ms)")
        ax2.set_ylabel("relaxed latency (ms)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "ablate" / "latency_regularisation.png"
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def build_ablation_report(cfg: PipelineConfig, out: Path) -> Path:
    lines = ["# FasterSeg ablations (paper Table 3 and Figure 4)", "",
             "| setting | mIoU (%) | latency (ms) | FPS | MACs (G) | params (M) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, label, reuse in TABLE3:
        prefix = "" if reuse else "ablate_"
        ev = load_marker(out, f"{prefix}eval_{reuse or name}") or {}
        bn = load_marker(out, f"{prefix}bench_{reuse or name}") or {}
        params = bn.get("params")
        lines.append(f"| {label} | {_fmt(ev.get('miou'), scale=100)} | {_fmt(bn.get('latency_ms'))} "
                     f"| {_fmt(bn.get('fps'), '{:.1f}')} | {_fmt(bn.get('macs'), '{:.3f}', 1e-9)} "
                     f"| {_fmt(params, '{:.3f}', 1e-6)} |")
    lines += ["", "Paper (Cityscapes val, 1080Ti TensorRT): 66.9 / 69.5 / 70.5 / 66.1 / 73.1 % mIoU.", ""]
    kd, plain = load_marker(out, "eval_student_kd") or {}, load_marker(out, "eval_student") or {}
    if _finite(kd.get("miou")) and _finite(plain.get("miou")):
        lines += [f"Distilled vs plain student: {100 * kd['miou']:.2f} vs {100 * plain['miou']:.2f} % "
                  f"mIoU ({100 * (kd['miou'] - plain['miou']):+.2f} points).", ""]
    fig = plot_latency_ablation(out)
    lines += ["## Latency regularisation (Figure 4)", ""]
    for label, run in (("fine-grained", out / "search"), ("naive", out / "ablate" / "search_naive")):
        rows = _search_curve(run)
        if rows:
            first, last = rows[0], rows[-1]
            lines.append(f"- {label}: student supernet mIoU {_fmt(first.get('student_best_miou'), scale=100)}"
                         f" -> {_fmt(last.get('student_best_miou'), scale=100)} %, relaxed latency "
                         f"{_fmt(first.get('student_latency_ms'))} -> {_fmt(last.get('student_latency_ms'))} ms, "
                         f"skip share {_fmt(last.get('student_skip_share'), scale=100)} %")
    if fig:
        lines += ["", f"![latency regularisation](ablate/{fig.name})"]
    path = out / "ablation.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
