"""Pipeline extras: published baseline, seed study, cross-sequence runs, results.json contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fasterseg.cli.pipeline import select_stages
from fasterseg.config.core import from_dict, load_config
from fasterseg.config.pipeline import PipelineConfig
from fasterseg.errors import UserError
from fasterseg.pipeline.report import build_report
from fasterseg.pipeline.results import collect_results
from fasterseg.pipeline.stages import build_stages, train_runs

REPO = Path(__file__).resolve().parents[2]
CONTRACT = ("best_student_val_miou", "min_class_iou", "searched", "published", "kd_delta_mean",
            "kd_delta_std", "seeds", "wall_s", "cross_sequence_miou")


def _cfg(**train) -> PipelineConfig:
    return from_dict(PipelineConfig, {
        "name": "t", "data": {"preset": "synthetic"},
        "train": {"baseline": "fasterseg_student", "seeds": [1, 2], **train},
        "cross_sequence": {"holdout": ["synth_0000"]}})


def test_camvid_cpu_preset_is_full_resolution_with_baseline_and_cross_sequence():
    cfg = load_config(PipelineConfig, REPO / "configs" / "pipeline" / "camvid_cpu.yaml")
    assert tuple(cfg.latency.size) == (384, 480) and cfg.data.get("downsample") == 1
    assert cfg.train.baseline == "fasterseg_student" and cfg.cross_sequence.holdout == ["0006R0"]
    names = [s.name for s in build_stages(cfg, Path("x"))]
    for stage in ("baseline", "xseq_student", "eval_xseq_student_holdout", "bench_baseline"):
        assert stage in names, stage
    train_yaml = (REPO / "configs" / "train" / "camvid_cpu.yaml").read_text()
    for setting in ("lr_schedule: poly", "amp: auto", "crop_size: [352, 480]"):
        assert setting in train_yaml


def test_stages_for_baseline_seeds_and_holdout():
    cfg = _cfg()
    stages = {s.name: s for s in build_stages(cfg, Path("out"))}
    runs = {r.name: r for r in train_runs(cfg)}
    assert set(runs) >= {"baseline", "student_kd_seed1", "student_seed2", "xseq_student",
                         "xseq_baseline"}
    assert "--teacher" in stages["student_kd_seed1"].argv
    assert "--teacher" not in stages["student_seed1"].argv
    assert "train.seed=1" in stages["student_seed1"].argv
    assert stages["baseline"].argv[stages["baseline"].argv.index("--arch") + 1] == \
        "fasterseg_student"
    hold = stages["eval_xseq_student_holdout"].argv
    assert hold[hold.index("--split") + 1] == "holdout"
    assert "data.holdout_prefixes=[synth_0000]" in hold
    assert "bench_student_seed1" not in stages  # seeds are for accuracy only


def test_select_stages_until_and_only():
    stages = build_stages(_cfg(), Path("out"))
    assert [s.name for s in select_stages(stages, "derive", None)] == \
        ["lut", "lut_check", "search", "derive"]
    assert [s.name for s in select_stages(stages, None, "baseline,eval_baseline")] == \
        ["baseline", "eval_baseline"]
    with pytest.raises(UserError, match="no stage named"):
        select_stages(stages, "nope", None)


def _marker(out: Path, name: str, obj: dict) -> None:
    (out / "stages").mkdir(parents=True, exist_ok=True)
    (out / "stages" / f"{name}.json").write_text(json.dumps({**obj, "stage_seconds": 10.0}))


def test_results_contract_and_report_from_stage_markers(tmp_path):
    cfg = _cfg()
    out = tmp_path
    miou = {"teacher": 0.6, "student_kd": 0.52, "student": 0.50, "baseline": 0.51,
            "student_kd_seed1": 0.49, "student_seed1": 0.50, "student_kd_seed2": 0.53,
            "student_seed2": 0.50, "xseq_student": 0.48, "xseq_baseline": 0.47}
    for name, v in miou.items():
        _marker(out, f"eval_{name}", {"miou": v, "per_class_iou": {"road": v + 0.1, "pole": 0.2}})
    _marker(out, "eval_xseq_student_holdout", {"miou": 0.41})
    _marker(out, "eval_xseq_baseline_holdout", {"miou": 0.40})
    for name, ms in (("teacher", 90.0), ("student_kd", 20.0), ("student", 20.0),
                     ("baseline", 30.0)):
        _marker(out, f"bench_{name}", {"latency_ms": ms, "macs": 1e9, "params": 1e6})
    _marker(out, "derive", {"latency_ms": 18.0})
    res = collect_results(cfg, out)
    for key in CONTRACT:
        assert key in res, key
    assert res["best_student"] == "student_kd" and res["best_student_val_miou"] == 0.52
    assert res["min_class_iou"] == pytest.approx(0.2) and res["min_class"] == "pole"
    assert res["searched"]["latency_ms"] == 20.0 and res["published"]["val_miou"] == 0.51
    assert res["speedup_searched_vs_published"] == pytest.approx(1.5)
    assert res["seeds"] == 3
    assert res["kd_delta_mean"] == pytest.approx((0.02 - 0.01 + 0.03) / 3)
    assert res["kd_delta_std"] > 0
    assert res["cross_sequence_miou"] == 0.41
    assert res["wall_s"] == pytest.approx(10.0 * len(list((out / "stages").glob("*.json"))))
    report = build_report(cfg, out).read_text()
    assert "## Searched vs published student" in report and "1.50x faster" in report
    assert "## Distillation" in report and "## Cross-sequence check" in report
    assert (out / "accuracy_latency.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert all(v is None or not isinstance(v, float) or math.isfinite(v) for v in saved.values())


def test_duplicate_seeds_are_a_user_error():
    with pytest.raises(UserError, match="duplicates"):
        _cfg(seeds=[1, 1]).validate()


def test_kd_study_separates_distillation_from_the_offset_fits(tmp_path):
    """With fitted offsets, the trained checkpoints' own val mIoU gives a second delta, over
    every pair whose two trainings finished (evaluated or not)."""
    cfg = _cfg(fit_offsets=True)
    evaluated = {"student_kd": 0.54, "student": 0.56, "student_kd_seed1": 0.55,
                 "student_seed1": 0.55}
    trained = {"student_kd": 0.53, "student": 0.54, "student_kd_seed1": 0.54,
               "student_seed1": 0.53, "student_kd_seed2": 0.52, "student_seed2": 0.53}
    for name, v in evaluated.items():
        _marker(tmp_path, f"eval_{name}", {"miou": v})
    for name, v in trained.items():
        _marker(tmp_path, name, {})  # the training stage finished
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.json").write_text(
            json.dumps({"name": "val_miou", "value": v, "epoch": 10}))
    res = collect_results(cfg, tmp_path)
    assert res["seeds"] == 2 and res["kd_delta_mean"] == pytest.approx((-0.02 + 0.0) / 2)
    assert res["kd_trained_seeds"] == 3
    assert res["kd_delta_trained_mean"] == pytest.approx((-0.01 + 0.01 - 0.01) / 3)
    assert res["kd_delta_trained_std"] > 0
    assert res["kd_deltas"][2] == {"seed": 2, "kd_miou_trained": 0.52,
                                   "plain_miou_trained": 0.53,
                                   "delta_trained": pytest.approx(-0.01)}
    report = build_report(cfg, tmp_path).read_text()
    assert "before the fitted logit offsets" in report and "| 2 | n/a | n/a | n/a |" in report
    # a training still running (no stage marker: its best.json is an early epoch's) and a
    # checkpoint that recorded another metric are left out, never mixed into the mean
    (tmp_path / "stages" / "student_seed2.json").unlink()
    (tmp_path / "student_seed1" / "best.json").write_text(json.dumps({"name": "loss", "value": 1}))
    res = collect_results(cfg, tmp_path)
    assert res["kd_trained_seeds"] == 1 and res["kd_delta_trained_std"] is None


def test_next_step_names_the_better_student(tmp_path):
    """The closing hint deploys the student with the higher val mIoU, not always the distilled."""
    from fasterseg.cli.pipeline import _best_student

    assert _best_student(tmp_path) == "student_kd"  # no results yet
    (tmp_path / "results.json").write_text(json.dumps({"best_student": "student"}))
    assert _best_student(tmp_path) == "student"
    (tmp_path / "results.json").write_text("[1]")  # not an object: the default, no traceback
    assert _best_student(tmp_path) == "student_kd"
