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


def train_runs(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(run name, description) of the trained networks, in report order."""
    runs = [("teacher", "teacher"), ("student_kd", "student, distilled from the teacher")]
    if cfg.train.plain_student:
        runs.append(("student", "student, no distillation"))
    return runs


def build_stages(cfg: PipelineConfig, out: Path) -> list[Stage]:
    lat, data_set = cfg.latency, cfg.data_overrides()
    sets = [a for s in data_set for a in ("--set", s)]
    lut = out / "lut.json"
    arch = out / "arch"
    stages = [
        Stage("lut", "latency table for this device", [
            "latency", "build", "--space", resolve_preset(lat.space), "--size", fmt_size(lat.size),
            "--device", lat.device, "--backend", lat.backend, "--dtype", lat.dtype,
            "--threads", str(lat.threads), "-o", str(lut), *lat.extra, "--json"], kind="lut"),
        Stage("lut_check", "latency table vs measured networks", [
            "latency", "check", "--lut", str(lut), "--samples", str(lat.check_samples),
            "--plot", str(out / "lut_check.png"), "--json"], needs=[lut], kind="check"),
        Stage("search", "teacher/student co-search", [
            "search", "-c", resolve_preset(cfg.search.config), "--lut", str(lut), "--out", str(out / "search"),
            "--device", cfg.device, *sets, *[a for s in cfg.search.set for a in ("--set", s)],
            "--json"], run_dir=out / "search", needs=[lut], kind="search"),
        Stage("derive", "derive teacher and student", [
            "derive", str(out / "search"), "-o", str(arch), "--lut", str(lut),
            *(["--target-ms", str(cfg.search.target_ms)] if cfg.search.target_ms else []),
            "--json"], needs=[out / "search" / "arch_params.json"], kind="derive"),
    ]
    train_common = ["train", "-c", resolve_preset(cfg.train.config), "--device", cfg.device, *sets]
    stages.append(Stage("teacher", "train the teacher", [
        *train_common, "--arch", str(arch / "teacher.json"), "--out", str(out / "teacher"),
        *[a for s in cfg.train.teacher_set for a in ("--set", s)], "--json"],
        run_dir=out / "teacher", needs=[arch / "teacher.json"], kind="train"))
    stages.append(Stage("student_kd", "distil the student from the teacher", [
        *train_common, "--arch", str(arch / "student.json"),
        "--teacher", str(out / "teacher" / "best.pt"), "--out", str(out / "student_kd"),
        *[a for s in cfg.train.student_set for a in ("--set", s)], "--json"],
        run_dir=out / "student_kd", needs=[arch / "student.json", out / "teacher" / "best.pt"],
        kind="train"))
    if cfg.train.plain_student:
        stages.append(Stage("student", "train the student without distillation", [
            *train_common, "--arch", str(arch / "student.json"), "--out", str(out / "student"),
            *[a for s in cfg.train.student_set for a in ("--set", s)], "--json"],
            run_dir=out / "student", needs=[arch / "student.json"], kind="train"))
    for run, _ in train_runs(cfg):
        ckpt = out / run / "best.pt"
        stages.append(Stage(f"eval_{run}", f"evaluate {run}", [
            "eval", str(ckpt), "--data", data_spec(cfg), "--split", cfg.eval.split,
            "-c", resolve_preset(cfg.train.config), *sets, "--device", cfg.device, *cfg.eval.extra, "--json"],
            needs=[ckpt], kind="eval"))
        b = cfg.bench
        stages.append(Stage(f"bench_{run}", f"benchmark {run}", [
            "bench", str(ckpt), "--size", fmt_size(lat.size), "--device", b.device,
            "--backend", b.backend, "--dtype", b.dtype, "--seconds", str(b.seconds),
            "--threads", str(b.threads), "--json"], needs=[ckpt], kind="bench"))
    return stages
