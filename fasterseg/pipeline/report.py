"""``report.md`` for a pipeline run: tables, diagrams, curves and the latency-table check."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from fasterseg.config.pipeline import PipelineConfig
from fasterseg.engine.rundir import read_metrics
from fasterseg.pipeline.results import collect_results, plot_accuracy_latency
from fasterseg.pipeline.runner import load_marker
from fasterseg.pipeline.stages import fmt_size, train_runs
from fasterseg.utils.io import save_figure, write_json, write_text


def _num(v: Any, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return fmt.format(v * scale)
    return "n/a"


def plot_training_curves(out: Path, runs: list[tuple[str, str]]) -> Path | None:
    """Loss per iteration and validation mIoU per epoch of every trained network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {r.name: read_metrics(out / r.name) for r in runs if r.role != "seed"}
    if not any(series.values()):
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in series.items():
        it = [(r["step"], r["loss"]) for r in rows if r.get("type") == "iter" and "loss" in r]
        if it:
            ax1.plot(*zip(*it), label=name)
        ep = [(r["epoch"], 100 * r["val_miou"]) for r in rows
              if r.get("type") == "epoch" and isinstance(r.get("val_miou"), (int, float))]
        if ep:
            ax2.plot(*zip(*ep), marker="o", label=name)
    ax1.set(xlabel="iteration", ylabel="training loss", title="training loss")
    ax2.set(xlabel="epoch", ylabel="val mIoU (%)", title="validation mIoU")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    path = out / "training_curves.png"
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def build_report(cfg: PipelineConfig, out: Path, seconds: float | None = None) -> Path:
    runs = train_runs(cfg)
    lines = [f"# FasterSeg {cfg.name} report", ""]
    env = _load_json(out / "env.json") or {}
    lines += [
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores), "
        f"torch {env.get('torch', '?')}, device {cfg.device}",
        f"- data: {cfg.data or {'preset': 'synthetic'}}",
        f"- deployment input size: {cfg.latency.size[0]}x{cfg.latency.size[1]}",
    ]
    if seconds is not None:
        lines.append(f"- wall time of this invocation: {seconds:.0f} s")
    lines.append("")

    # Results table.
    lines += ["## Results", "",
              "| network | mIoU (%) | aAcc (%) | mAcc (%) | latency (ms) | FPS | MACs (G) | params (M) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    evals = {}
    for run in runs:
        name, desc = run.name, run.desc
        ev = load_marker(out, f"eval_{name}") or {}
        bn = load_marker(out, f"bench_{name}") or {}
        evals[name] = ev
        params = bn.get("params")  # inference parameters (auxiliary heads do not run)
        lines.append(
            f"| {name} ({desc}) | {_num(ev.get('miou'), scale=100)} | {_num(ev.get('aacc'), scale=100)} "
            f"| {_num(ev.get('macc'), scale=100)} | {_num(bn.get('latency_ms'))} | {_num(bn.get('fps'), '{:.1f}')} "
            f"| {_num(bn.get('macs'), '{:.3f}', 1e-9)} | {_num(params, '{:.3f}', 1e-6)} |"
        )
    bn0 = load_marker(out, f"bench_{runs[0].name}") or {}
    if bn0:
        lines += ["", f"Latency: batch 1, {bn0.get('backend', '?')} backend, {bn0.get('dtype', '?')}, "
                  f"device {bn0.get('device', '?')}, {bn0.get('threads', '?')} thread(s), median over "
                  f"{bn0.get('seconds', '?')} s of timed runs."]
    kd, plain = evals.get("student_kd", {}), evals.get("student", {})
    if isinstance(kd.get("miou"), (int, float)) and isinstance(plain.get("miou"), (int, float)):
        delta = 100 * (kd["miou"] - plain["miou"])
        lines += ["", f"Distillation changed the student's mIoU by {delta:+.2f} points "
                  "(distilled minus plain; same architecture, data and schedule)."]
    lines.append("")
    results = collect_results(cfg, out, seconds)
    write_json(out / "results.json", results)
    lines += method_claim_lines(results, plot_accuracy_latency(results, out / "accuracy_latency.png"))

    # Per-class IoU.
    classes = next((list(e["per_class_iou"]) for e in evals.values()
                    if isinstance(e.get("per_class_iou"), dict)), [])
    if classes:
        shown = [r.name for r in runs if r.role != "seed"]
        lines += ["## Per-class IoU (%)", "", "| class | " + " | ".join(shown) + " |",
                  "| --- | " + " | ".join("---" for _ in shown) + " |"]
        for c in classes:
            vals = [_num((evals[n].get("per_class_iou") or {}).get(c), scale=100) for n in shown]
            lines.append(f"| {c} | " + " | ".join(vals) + " |")
        lines.append("")

    # Architectures.
    lines += ["## Searched architectures", ""]
    derive = load_marker(out, "derive") or {}
    if derive:
        lines.append(f"Branches (output rates): {derive.get('branches', 'n/a')}; "
                     f"student latency from the table: {_num(derive.get('latency_ms'))} ms.")
        lines.append("")
    for role in ("teacher", "student"):
        arch_json = out / "arch" / f"{role}.json"
        if arch_json.is_file():
            lines += [f"### {role}", "", f"![{role}](arch/{role}.png)" if (out / "arch" / f"{role}.png").is_file() else "",
                      "", "```", _format_arch(arch_json), "```", ""]

    # Search curves.
    search_pngs = sorted((out / "search").glob("*.png")) if (out / "search").is_dir() else []
    if search_pngs:
        lines += ["## Search", ""] + [f"![{p.stem}](search/{p.name})" for p in search_pngs] + [""]

    # Training curves.
    curves = plot_training_curves(out, runs)
    if curves:
        lines += ["## Training curves", "", f"![training curves]({curves.name})", ""]

    # Latency table check.
    chk = load_marker(out, "lut_check") or {}
    lut = load_marker(out, "lut") or {}
    lines += ["## Latency lookup table", ""]
    if lut:
        meta = lut.get("meta", lut)
        lines.append(f"Entries: {lut.get('entries', 'n/a')}, measured on "
                     f"{meta.get('device_name', meta.get('device', '?'))} with "
                     f"{meta.get('backend', '?')} ({meta.get('dtype', '?')}, "
                     f"{meta.get('threads', '?')} thread(s)) at {fmt_size(cfg.latency.size)}.")
    if chk:
        lines.append(f"Table estimate vs measured latency over {chk.get('samples', 'n/a')} random "
                     f"networks: Pearson r = {_num(chk.get('pearson_r'), '{:.4f}')}, mean relative "
                     f"error {_num(chk.get('mean_rel_error'), scale=100)} % (paper: r = 0.993).")
    if (out / "lut_check.png").is_file():
        lines += ["", "![LUT correlation](lut_check.png)"]
    lines.append("")
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _load_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _format_arch(path: Path) -> str:
    from fasterseg.arch import load_arch

    arch = load_arch(path)
    out = [f"stem ratio {arch.stem_ratio}, head ratio {arch.head_ratio}, "
           f"{arch.shared_prefix()} shared leading cells"]
    for b in arch.branches:
        cells = ", ".join(f"{c.op}{'/s2' if c.stride == 2 else ''}:{c.ratio}" for c in b.cells)
        out.append(f"1/{b.output_rate}: {cells}")
    return "\n".join(out)


def method_claim_lines(res: dict, plot: Path | None) -> list[str]:
    """The searched student against the published one at equal budget, said plainly."""
    se, pu = res.get("searched") or {}, res.get("published") or {}
    lines: list[str] = []
    if se and pu:
        lines += ["## Searched vs published student (same training budget)", "",
                  "| network | val mIoU (%) | latency measured (ms) | latency table (ms) | "
                  "MACs (G) | params (M) |", "| --- | --- | --- | --- | --- | --- |"]
        for label, p in (("searched (" + str(se.get("name")) + ")", se),
                         ("published (" + str(pu.get("name")) + ")", pu)):
            lines.append(f"| {label} | {_num(p.get('val_miou'), scale=100)} | "
                         f"{_num(p.get('latency_ms'))} | {_num(p.get('latency_table_ms'))} | "
                         f"{_num(p.get('macs'), '{:.3f}', 1e-9)} | "
                         f"{_num(p.get('params'), '{:.3f}', 1e-6)} |")
        ratio = res.get("speedup_searched_vs_published")
        if isinstance(ratio, float) and se.get("val_miou") is not None \
                and pu.get("val_miou") is not None:
            d = 100 * (se["val_miou"] - pu["val_miou"])
            faster = "faster" if ratio > 1 else "slower"
            verdict = ("yes" if ratio >= 1.0 and d >= -1.0 else "no")
            lines += ["", f"The searched student is {ratio:.2f}x {faster} than the published "
                      f"student ({'higher' if d >= 0 else 'lower'} val mIoU by {abs(d):.2f} "
                      f"points). Faster at equal accuracy (within 1 point): **{verdict}**."]
        lines.append("")
    if plot is not None:
        lines += [f"![accuracy vs latency]({plot.name})", ""]
    if res.get("seeds") or res.get("kd_trained_seeds"):
        trained = res.get("kd_trained_seeds") is not None
        head = "| seed | distilled (%) | plain (%) | delta (points) |"
        rule = "| --- | --- | --- | --- |"
        if trained:
            head += " distilled, as trained (%) | plain, as trained (%) | delta, as trained |"
            rule += " --- | --- | --- |"
        lines += ["## Distillation (distilled minus plain val mIoU, same budget)", "", head, rule]
        for r in res.get("kd_deltas", []):
            seed = "config" if r["seed"] is None else r["seed"]
            row = (f"| {seed} | {_num(r.get('kd_miou'), scale=100)} | "
                   f"{_num(r.get('plain_miou'), scale=100)} | "
                   f"{_num(r.get('delta'), '{:+.2f}', 100)} |")
            if trained:
                row += (f" {_num(r.get('kd_miou_trained'), scale=100)} | "
                        f"{_num(r.get('plain_miou_trained'), scale=100)} | "
                        f"{_num(r.get('delta_trained'), '{:+.2f}', 100)} |")
            lines.append(row)
        mean, std = res.get("kd_delta_mean"), res.get("kd_delta_std")
        if res.get("seeds"):
            spread = f" +- {_num(std, scale=100)}" if std is not None else " (one seed: no spread)"
            lines += ["", f"Mean delta over {res['seeds']} seed(s): "
                      f"{_num(mean, '{:+.2f}', 100)}{spread} points."]
        t_mean, t_std = res.get("kd_delta_trained_mean"), res.get("kd_delta_trained_std")
        if t_mean is not None:
            t_spread = f" +- {_num(t_std, scale=100)}" if t_std is not None else ""
            lines.append(f"The checkpoints before the fitted logit offsets (val mIoU recorded by "
                         f"training), {res['kd_trained_seeds']} seed(s): "
                         f"{_num(t_mean, '{:+.2f}', 100)}{t_spread} points.")
        if mean is None or std is None:  # the verdict then rests on the trained checkpoints
            mean, std = t_mean, t_std
        if mean is not None and std is not None:
            sure = mean > std
            lines.append("Distillation helps beyond the seed spread." if sure else
                         "The difference is within the seed spread: at this budget distillation "
                         "is not shown to help (a longer schedule or a different KD weight or "
                         "reduction may change that).")
        lines.append("")
    xs = res.get("cross_sequence") or {}
    if xs.get("holdout"):
        lines += ["## Cross-sequence check", "",
                  f"Trained without the sequences {', '.join(xs['holdout'])}, evaluated on them "
                  "(unseen streets) and on val.", "",
                  "| network | held-out sequences mIoU (%) | val mIoU (%) |", "| --- | --- | --- |"]
        for n in ("xseq_student", "xseq_baseline"):
            if n in xs:
                lines.append(f"| {n} | {_num(xs[n].get('holdout_miou'), scale=100)} | "
                             f"{_num(xs[n].get('val_miou'), scale=100)} |")
        lines.append("")
    return lines
