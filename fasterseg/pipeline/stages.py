"""The stages of the FasterSeg chain, each one CLI command with a known output.

A stage is done when its marker ``OUT/stages/<name>.json`` exists (it holds the command's JSON
result), so re-running a pipeline skips finished stages; a stage that was interrupted is
restarted with ``--resume`` when its command supports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fasterseg.config.pipeline import PipelineConfig
from fasterseg.pipeline.paths import resolve_preset


@dataclass
class Stage:
    name: str
    title: str
    argv: list[str]
    run_dir: Path | None = None  # a run directory the command may resume from
    needs: list[Path] = field(default_factory=list)  # inputs that earlier stages produce
    kind: str = "other"  # lut, check, search, derive, train, eval, bench (for cost estimates)
    func: Callable[[], dict] | None = None  # an in-process step instead of a CLI command


def fmt_size(size) -> str:
    return f"{size[0]}x{size[1]}"


def data_spec(cfg: PipelineConfig) -> str:
    preset = cfg.data.get("preset", "synthetic")
    root = cfg.data.get("root")
    return f"{preset}:{root}" if root else preset


@dataclass
class TrainRun:
    """One trained network of a pipeline: how it is trained and where it is evaluated."""

    name: str
    desc: str
    role: str  # teacher, student (searched), baseline (published), or their repeats
    arch: str  # arch JSON path or published model name
    teacher: bool = False  # distilled from the pipeline's teacher
    sets: list[str] = field(default_factory=list)  # extra --set for this run
    evals: list[tuple[str, str]] = field(default_factory=list)  # (stage name, split)
    bench: bool = True
    seed: int | None = None


def _seed_sets(seed: int | None) -> list[str]:
    return [] if seed is None else [f"train.seed={seed}"]


def train_runs(cfg: PipelineConfig, arch_dir: Path | None = None) -> list[TrainRun]:
    """Every network the pipeline trains, in report order."""
    arch_dir = arch_dir if arch_dir is not None else Path(cfg.out) / "arch"
    teacher_json, student_json = str(arch_dir / "teacher.json"), str(arch_dir / "student.json")
    split = cfg.eval.split
    runs = [TrainRun("teacher", "teacher", "teacher", teacher_json, sets=cfg.train.teacher_set),
            TrainRun("student_kd", "student, distilled from the teacher", "student",
                     student_json, teacher=True, sets=cfg.train.student_set)]
    if cfg.train.plain_student:
        runs.append(TrainRun("student", "student, no distillation", "student", student_json,
                             sets=cfg.train.student_set))
    if cfg.train.baseline:
        runs.append(TrainRun("baseline", f"{cfg.train.baseline} (published), no distillation, "
                             "same budget", "baseline", cfg.train.baseline,
                             sets=cfg.train.student_set))
    for seed in cfg.train.seeds:
        runs.append(TrainRun(f"student_kd_seed{seed}", f"distilled student, seed {seed}",
                             "seed", student_json, teacher=True, bench=False, seed=seed,
                             sets=[*cfg.train.student_set, *_seed_sets(seed)]))
        if cfg.train.plain_student:
            runs.append(TrainRun(f"student_seed{seed}", f"plain student, seed {seed}", "seed",
                                 student_json, bench=False, seed=seed,
                                 sets=[*cfg.train.student_set, *_seed_sets(seed)]))
    hold = cfg.cross_sequence.holdout
    if hold:
        held = [f"data.holdout_prefixes={_yaml_list(hold)}"]
        runs.append(TrainRun("xseq_student", f"plain student without {', '.join(hold)}",
                             "xseq", student_json, bench=False,
                             sets=[*cfg.train.student_set, *held]))
        if cfg.train.baseline and cfg.cross_sequence.baseline:
            runs.append(TrainRun("xseq_baseline", f"baseline without {', '.join(hold)}", "xseq",
                                 cfg.train.baseline, bench=False,
                                 sets=[*cfg.train.student_set, *held]))
    for r in runs:
        r.evals = [(f"eval_{r.name}", split)]
        if r.role == "xseq":
            r.evals.append((f"eval_{r.name}_holdout", "holdout"))
    return runs


def _yaml_list(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def build_stages(cfg: PipelineConfig, out: Path) -> list[Stage]:
    lat, data_set = cfg.latency, cfg.data_overrides()
    sets = [a for s in data_set for a in ("--set", s)]
    lut = out / "lut.json"
    arch = out / "arch"
    stages = [
        Stage("lut", "latency table for this device", [
            "latency", "build", "--space", resolve_preset(lat.space, "search"), "--size", fmt_size(lat.size),
            "--device", lat.device, "--backend", lat.backend, "--dtype", lat.dtype,
            "--threads", str(lat.threads), "-o", str(lut), *lat.extra, "--json"], kind="lut"),
        Stage("lut_check", "latency table vs measured networks", [
            "latency", "check", "--lut", str(lut), "--samples", str(lat.check_samples),
            "--plot", str(out / "lut_check.png"), "--json"], needs=[lut], kind="check"),
        Stage("search", "teacher/student co-search", [
            "search", "-c", resolve_preset(cfg.search.config, "search"), "--lut", str(lut), "--out", str(out / "search"),
            "--device", cfg.device, *sets, *[a for s in cfg.search.set for a in ("--set", s)],
            "--json"], run_dir=out / "search", needs=[lut], kind="search"),
        Stage("derive", "derive teacher and student", [
            "derive", str(out / "search"), "-o", str(arch), "--lut", str(lut),
            *(["--target-ms", str(cfg.search.target_ms)] if cfg.search.target_ms else []),
            *(["--detail-channels", str(cfg.search.detail_channels)]
              if cfg.search.detail_channels else []),
            *(["--detail-rate", str(cfg.search.detail_rate)]
              if cfg.search.detail_channels and cfg.search.detail_rate != 4 else []),
            "--json"], needs=[out / "search" / "arch_params.json"], kind="derive"),
    ]
    train_common = ["train", "-c", resolve_preset(cfg.train.config, "train"), "--device", cfg.device,
                    *sets]
    runs = train_runs(cfg, arch)
    for r in runs:
        teacher_ckpt = out / "teacher" / "best.pt"
        needs = [Path(r.arch)] if r.arch.endswith(".json") else []
        teacher = ["--teacher", str(teacher_ckpt)] if r.teacher else []
        stages.append(Stage(r.name, f"train {r.desc}", [
            *train_common, "--arch", r.arch, *teacher, "--out", str(out / r.name),
            *[a for s in r.sets for a in ("--set", s)], "--json"],
            run_dir=out / r.name, needs=needs + ([teacher_ckpt] if r.teacher else []),
            kind="train"))
    for r in runs:
        ckpt = out / r.name / "best.pt"
        run_sets = [a for s in r.sets if s.startswith("data.") for a in ("--set", s)]
        if cfg.train.fit_offsets:
            # fitted on the run's own training images (its holdout stays unseen); a re-run of an
            # interrupted stage replaces the derived file
            fitted = out / r.name / "best.offsets.pt"
            stages.append(Stage(f"offsets_{r.name}", f"fit logit offsets of {r.name}", [
                "fit-offsets", str(ckpt), "-o", str(fitted), "--overwrite", *sets, *run_sets,
                "--device", cfg.device, "--json"], needs=[ckpt], kind="offsets"))
            ckpt = fitted
        for stage_name, split in r.evals:
            stages.append(Stage(stage_name, f"evaluate {r.name} on {split}", [
                "eval", str(ckpt), "--data", data_spec(cfg), "--split", split,
                "-c", resolve_preset(cfg.train.config, "train"), *sets, *run_sets,
                "--device", cfg.device, *cfg.eval.extra, "--json"], needs=[ckpt], kind="eval"))
        if r.bench:
            b = cfg.bench
            stages.append(Stage(f"bench_{r.name}", f"benchmark {r.name}", [
                "bench", str(ckpt), "--size", fmt_size(lat.size), "--device", b.device,
                "--backend", b.backend, "--dtype", b.dtype, "--seconds", str(b.seconds),
                "--threads", str(b.threads), "--json"], needs=[ckpt], kind="bench"))
    return stages
