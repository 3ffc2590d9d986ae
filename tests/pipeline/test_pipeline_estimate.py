"""The pipeline cost estimate costs every training stage from its own settings."""

from __future__ import annotations

import pytest

from fasterseg.config.core import apply_overrides, from_dict, load_yaml
from fasterseg.config.pipeline import PipelineConfig
from fasterseg.config.presets import resolve_preset
from fasterseg.pipeline import estimate
from fasterseg.pipeline.stages import build_stages

STEP_S = {"fasterseg_student": 0.1, "fasterseg_teacher": 0.3}  # fake s per image fwd+bwd


@pytest.fixture
def probes(monkeypatch):
    calls = []

    def fake(arch, crop, device="cpu"):
        calls.append((arch, tuple(crop)))
        return STEP_S[arch]

    monkeypatch.setattr(estimate, "_train_step_seconds", fake)
    return calls


def _camvid_cpu(tmp_path, *overrides: str) -> PipelineConfig:
    data = load_yaml(resolve_preset("camvid_cpu", "pipeline"))
    apply_overrides(data, [f"out={tmp_path}", *overrides])
    return from_dict(PipelineConfig, data)


def test_same_budget_same_estimate_whatever_the_stage_name(tmp_path, probes):
    cfg = _camvid_cpu(tmp_path, "train.seeds=[1]")
    stages = build_stages(cfg, tmp_path)
    est, how = estimate.estimate_pipeline(cfg, stages)
    # camvid_cpu: 10 epochs x 50 steps of batch 8 for every network
    student = 500 * 8 * STEP_S["fasterseg_student"]
    assert est["student"] == pytest.approx(student)
    for name in ("xseq_student", "xseq_baseline", "baseline", "student_seed1"):
        assert est[name] == pytest.approx(student), name  # was 120 s ("~2 min") before
    assert est["student_kd"] == pytest.approx(student + 500 * 8 * STEP_S["fasterseg_teacher"] / 3)
    assert est["student_kd_seed1"] == pytest.approx(est["student_kd"])
    assert est["teacher"] == pytest.approx(500 * 8 * STEP_S["fasterseg_teacher"])
    assert "student 0.80 s/iter" in how
    # one probe per network and crop size, not one per stage
    assert len(probes) == len(set(probes))


def test_overrides_reach_the_estimate_through_the_schema(tmp_path, probes):
    cfg = _camvid_cpu(tmp_path, "train.student_set=[train.accumulate=2]")
    est, _ = estimate.estimate_pipeline(cfg, build_stages(cfg, tmp_path))
    assert est["xseq_student"] == pytest.approx(500 * 16 * STEP_S["fasterseg_student"])
    assert est["teacher"] == pytest.approx(500 * 8 * STEP_S["fasterseg_teacher"])


def test_detail_channels_reach_derive_and_are_validated(tmp_path):
    from fasterseg.errors import UserError

    plain = {s.name: s for s in build_stages(_camvid_cpu(tmp_path, "search.detail_channels=0"),
                                             tmp_path)}
    assert "--detail-channels" not in plain["derive"].argv  # 0: the paper's network
    preset = {s.name: s for s in build_stages(_camvid_cpu(tmp_path), tmp_path)}
    assert "--detail-channels" in preset["derive"].argv  # the preset's student has the head
    cfg = _camvid_cpu(tmp_path, "search.detail_channels=16")
    cfg.validate()
    derive = {s.name: s for s in build_stages(cfg, tmp_path)}["derive"]
    i = derive.argv.index("--detail-channels")
    assert derive.argv[i + 1] == "16"
    with pytest.raises(UserError, match="search.detail_channels"):
        _camvid_cpu(tmp_path, "search.detail_channels=-3").validate()
    assert "--detail-rate" not in derive.argv  # 4 is derive's default
    half = _camvid_cpu(tmp_path, "search.detail_rate=2")
    half.validate()
    derive = {s.name: s for s in build_stages(half, tmp_path)}["derive"]
    assert derive.argv[derive.argv.index("--detail-rate") + 1] == "2"
    with pytest.raises(UserError, match="search.detail_rate must be 2 or 4"):
        _camvid_cpu(tmp_path, "search.detail_rate=8").validate()


def test_long_preset_doubles_every_student_budget_and_keeps_the_teacher(tmp_path, probes):
    """camvid_cpu_long inherits camvid_cpu (_base_) and trains the students for 1000 steps."""
    data = load_yaml(resolve_preset("camvid_cpu_long", "pipeline"))
    apply_overrides(data, [f"out={tmp_path}"])
    cfg = from_dict(PipelineConfig, data)
    cfg.validate()
    assert cfg.search.detail_channels == 16 and cfg.cross_sequence.holdout == ["0006R0"]
    est, _ = estimate.estimate_pipeline(cfg, build_stages(cfg, tmp_path))
    student = 1000 * 8 * STEP_S["fasterseg_student"]
    for name in ("student", "baseline", "xseq_student", "xseq_baseline"):
        assert est[name] == pytest.approx(student), name
    assert est["teacher"] == pytest.approx(500 * 8 * STEP_S["fasterseg_teacher"])
