"""Per-class logit offsets: the fit only ever raises mIoU, folding them equals adding them to the
logits, and `fit-offsets` writes a new checkpoint without touching the input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasterseg.cli.main import main
from fasterseg.evaluation.offsets import fit_offsets, fold_offsets, miou_with_offsets

FOLDER_YAML = """name: toy
classes: [background, road, car]
palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
ignore_index: 255
"""


def test_fit_undoes_a_bias_towards_one_class():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (6000,), generator=g)
    x = torch.nn.functional.one_hot(y, 3).float() * 2.0 + torch.randn(6000, 3, generator=g)
    x[:, 2] += 1.5  # class 2 over-predicted, as class weighting does to a rare class
    offsets, before, after = fit_offsets(x, y)
    assert after > before + 0.05
    # offsets are relative (a common shift changes nothing): class 2 is pulled back
    assert offsets[2] - offsets[:2].mean() < -0.5
    assert miou_with_offsets(x, y, offsets)[0] == pytest.approx(after)


def test_fit_never_worse_and_leaves_absent_classes_alone():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (2000,), generator=g)  # class 2 never labelled
    x = torch.nn.functional.one_hot(y, 3).float() * 3.0 + 0.1 * torch.randn(2000, 3, generator=g)
    offsets, before, after = fit_offsets(x, y, rounds=1)
    assert after >= before and offsets[2] == 0.0


def test_folded_offsets_equal_offsets_added_to_the_logits(tiny_arch):
    from fasterseg.models import build_model

    torch.manual_seed(0)
    model = build_model(tiny_arch()).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x) + torch.tensor([0.5, -1.0, 0.25]).view(1, 3, 1, 1)
        fold_offsets(model, [0.5, -1.0, 0.25])
        assert torch.allclose(model(x), ref, atol=1e-5)


@pytest.fixture
def toy(tmp_path, tiny_arch) -> tuple[Path, Path]:
    from fasterseg.engine.checkpoint import arch_to_dict, save_checkpoint
    from fasterseg.models import build_model

    root = tmp_path / "D"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(2):
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(
            root / "images" / f"img{k}.png")
        Image.fromarray(rng.choice(np.array([0, 1, 2, 255], np.uint8), (64, 96))).save(
            root / "labels" / f"img{k}.png")
    (root / "dataset.yaml").write_text(FOLDER_YAML)
    torch.manual_seed(0)
    model = build_model(tiny_arch())
    ckpt = save_checkpoint({"model": model.state_dict(), "arch": arch_to_dict(model.arch),
                            "num_classes": 3, "optimizer": {"state": {}}}, tmp_path / "run" / "best.pt")
    return ckpt, root


def test_cli_writes_a_new_checkpoint_and_leaves_the_input_alone(toy, capsys):
    from fasterseg.engine.checkpoint import load_checkpoint, load_model

    ckpt, root = toy
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert main(["fit-offsets", str(ckpt), "--data", f"folder:{root}", "--stride", "2",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = ckpt.with_name("best.offsets.pt")
    assert res["checkpoint"] == str(out) and out.is_file()
    assert res["fit_miou_after"] >= res["fit_miou_before"]
    assert set(res["offsets"]) == {"background", "road", "car"}
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest
    saved = load_checkpoint(out)
    assert "optimizer" not in saved and saved["logit_offsets"]["split"] == "train"
    # the new checkpoint's logits are the old ones plus the offsets
    old, _ = load_model(ckpt)
    new, _ = load_model(out)
    x = torch.randn(1, 3, 64, 96)
    delta = torch.tensor(saved["logit_offsets"]["offsets"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(new(x), old(x) + delta, atol=1e-5)
    # an existing output is not replaced without --overwrite; the input is never the output
    assert main(["fit-offsets", str(ckpt), "--data", f"folder:{root}"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["fit-offsets", str(ckpt), "--data", f"folder:{root}", "-o", str(ckpt)]) == 1
    assert "never modifies" in capsys.readouterr().err
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == digest


def test_cli_needs_a_trained_checkpoint(capsys):
    assert main(["fit-offsets", "fasterseg_student", "--data", "synthetic"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained checkpoint" in err[0]


def test_pipeline_option_adds_a_fit_stage_and_evaluates_its_checkpoint(tmp_path):
    from fasterseg.config.core import load_config
    from fasterseg.config.pipeline import PipelineConfig
    from fasterseg.pipeline.stages import build_stages

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(PipelineConfig, repo / "configs" / "pipeline" / "demo_smoke.yaml")
    plain = {s.name: s for s in build_stages(cfg, tmp_path)}
    assert not any(n.startswith("offsets_") for n in plain)
    cfg.train.fit_offsets = True
    stages = build_stages(cfg, tmp_path)
    names = [s.name for s in stages]
    by_name = {s.name: s for s in stages}
    for run in ("teacher", "student_kd", "student"):
        fit = by_name[f"offsets_{run}"]
        assert fit.argv[:2] == ["fit-offsets", str(tmp_path / run / "best.pt")]
        assert names.index(f"offsets_{run}") < names.index(f"eval_{run}")
        assert by_name[f"eval_{run}"].argv[1] == str(tmp_path / run / "best.offsets.pt")
    # distillation still uses the teacher's own weights
    assert str(tmp_path / "teacher" / "best.pt") in by_name["student_kd"].argv


def test_an_eval_marker_of_another_checkpoint_is_not_done(tmp_path):
    from fasterseg.pipeline.runner import is_done
    from fasterseg.pipeline.stages import Stage

    stage = Stage("eval_student", "evaluate", ["eval", "run/student/best.offsets.pt", "--json"],
                  kind="eval")
    (tmp_path / "stages").mkdir()
    marker = tmp_path / "stages" / "eval_student.json"
    marker.write_text(json.dumps({"miou": 0.5, "checkpoint": "run/student/best.pt"}))
    assert not is_done(tmp_path, stage)  # evaluated before the offsets were switched on
    marker.write_text(json.dumps({"miou": 0.5, "checkpoint": "run/student/best.offsets.pt"}))
    assert is_done(tmp_path, stage)
