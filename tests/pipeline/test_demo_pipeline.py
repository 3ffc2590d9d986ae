"""The demo at its smallest setting end to end, stage skipping and resume."""

import json
import math
import re
from pathlib import Path

import pytest

from fasterseg.cli.main import main
from fasterseg.config.core import load_config
from fasterseg.config.pipeline import PipelineConfig
from fasterseg.pipeline.runner import stage_argv
from fasterseg.pipeline.stages import build_stages

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "configs" / "pipeline" / "demo_smoke.yaml")
SECTIONS = ["## Results", "## Per-class IoU", "## Searched architectures", "## Search",
            "## Training curves", "## Latency lookup table"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    rc = main(["demo", "-c", SMOKE, "--out", str(out), "--json"])
    return rc, out


@pytest.mark.slow
def test_demo_smallest_setting_end_to_end(demo_run, capsys):
    rc, out = demo_run
    assert rc == 0
    report = (out / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    assert "n/a" not in report and "nan" not in report.lower()
    # every number in the results and per-class tables is finite
    results = [line for line in report.splitlines() if line.startswith(("| teacher", "| student"))]
    per_class = report.split("## Per-class IoU")[1].split("##")[0].splitlines()
    per_class = [line for line in per_class if line.startswith("| ") and "---" not in line][1:]
    assert len(results) == 3 and len(per_class) >= 5
    for line in results + per_class:
        for cell in line.strip().strip("|").split("|")[1:]:
            assert math.isfinite(float(cell)), line
    for name in ("teacher", "student_kd", "student"):
        assert (out / name / "best.pt").is_file()
        ev = json.loads((out / "stages" / f"eval_{name}.json").read_text())
        assert 0.0 <= ev["miou"] <= 1.0
    for png in ("lut_check.png", "training_curves.png", "arch/student.png", "arch/teacher.png"):
        assert (out / png).is_file(), png
    assert re.search(r"Pearson r = -?\d\.\d{4}", report)  # its sign is noise on a loaded machine


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_reruns_missing(demo_run, capsys):
    rc, out = demo_run
    assert rc == 0
    capsys.readouterr()
    assert main(["demo", "-c", SMOKE, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("done already (skipped)") == 13
    (out / "stages" / "eval_student.json").unlink()
    assert main(["demo", "-c", SMOKE, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("done already (skipped)") == 12
    assert (out / "stages" / "eval_student.json").is_file()


def test_interrupted_stage_resumes_from_its_run_dir(tmp_path):
    cfg = load_config(PipelineConfig, SMOKE)
    stages = {s.name: s for s in build_stages(cfg, tmp_path)}
    teacher = stages["teacher"]
    assert "--resume" not in stage_argv(teacher)
    teacher.run_dir.mkdir(parents=True)
    (teacher.run_dir / "last.pt").write_bytes(b"x")
    argv = stage_argv(teacher)
    assert argv[-2:] == ["--resume", str(teacher.run_dir)]


def test_missing_input_of_a_stage_is_a_clear_error(tmp_path, capsys):
    # Pretend every stage before "derive" finished: derive needs the search's arch_params.json.
    out = tmp_path / "run"
    (out / "stages").mkdir(parents=True)
    for name in ("lut", "lut_check", "search"):
        (out / "stages" / f"{name}.json").write_text("{}")
    assert main(["demo", "-c", SMOKE, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "stage derive needs" in err and "arch_params.json" in err


def test_estimate_only_prints_costs_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "--estimate-only", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    est = json.loads(lines[-1])
    assert est["estimate_s"] > 0 and "search" in est["stages"]
    assert not out.exists()


def test_pipeline_presets_load():
    for name in ("demo", "demo_smoke", "camvid", "camvid_cpu", "cityscapes", "bdd100k"):
        cfg = load_config(PipelineConfig, REPO / "configs" / "pipeline" / f"{name}.yaml")
        assert [s.name for s in build_stages(cfg, Path("x"))][:4] == ["lut", "lut_check", "search", "derive"]


@pytest.mark.slow
def test_ablate_reuses_pipeline_and_writes_table3(demo_run, capsys):
    rc, out = demo_run
    assert rc == 0
    assert main(["ablate", "-c", SMOKE, "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    assert text.count("done already (skipped)") >= 13  # the main pipeline's stages are reused
    report = (out / "ablation.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 5  # header + the five Table 3 rows
    for line in rows[1:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert len(cells) == 6, line
        assert all(math.isfinite(float(c)) for c in cells[1:]), line
    assert (out / "ablate" / "latency_regularisation.png").is_file()
    assert "naive" in report and "fine-grained" in report


@pytest.mark.slow
def test_seed_study_baseline_and_cross_sequence_on_generated_scenes(demo_run, capsys):
    """The issue-14 extras at their smallest setting: numbers meaningless, shape checked."""
    rc, out = demo_run
    assert rc == 0
    extra = ["--set", "train.seeds=[3]", "--set", "train.baseline=fasterseg_student",
             "--set", "cross_sequence.holdout=[synth_0000]"]
    assert main(["demo", "-c", SMOKE, "--out", str(out), *extra, "--json"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == 2 and isinstance(res["kd_delta_std"], float)
    assert 0.0 <= res["cross_sequence_miou"] <= 1.0
    assert res["published"]["latency_ms"] > 0 and 0.0 <= res["published"]["val_miou"] <= 1.0
    assert 0.0 <= res["min_class_iou"] <= res["best_student_val_miou"] <= 1.0
    report = (out / "report.md").read_text()
    for section in ("## Searched vs published student", "## Distillation",
                    "## Cross-sequence check"):
        assert section in report, section
    assert (out / "accuracy_latency.png").is_file()
