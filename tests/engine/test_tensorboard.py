"""Optional TensorBoard logging next to metrics.jsonl: off by default, one clear error without
the extra, scalars of every record when on, consistent with metrics.jsonl after a resume."""

from __future__ import annotations

import json
import sys

import pytest

from fasterseg.cli.main import main
from fasterseg.engine import rundir, tensorboard
from fasterseg.errors import UserError

TINY = [
    "-c", "synthetic_tiny",
    "--set", "data.synthetic_size=[64,128]", "--set", "data.crop_size=[64,128]",
    "--set", "data.synthetic_train=4", "--set", "data.synthetic_val=2",
    "--set", "train.batch_size=2", "--set", "train.iters_per_epoch=2", "--set", "train.epochs=2",
    "--set", "train.log_every=1", "--set", "train.eval_every=1", "--set", "train.eval_max_images=2",
    "--set", "train.cost_warmup=1", "--set", "train.cost_measure=1",
]  # fmt: skip


def _events(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard reads the directory (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_scalars_of_a_record():
    rec = {"type": "epoch", "epoch": 2, "step": 40, "lr": 0.01, "val_miou": 0.5, "ok": True,
           "train_loss": None, "bad": float("nan"), "phase": "search",
           "per_class_iou": {"road": 0.9, "sky": None}, "nested": {"a": {"b": 1.0}}}
    assert tensorboard.scalars(rec, "epoch") == [
        ("epoch/lr", 0.01), ("epoch/val_miou", 0.5), ("epoch/per_class_iou/road", 0.9)]


def test_off_by_default_writes_nothing(tmp_path):
    from fasterseg.config.search import SearchConfig
    from fasterseg.config.train import TrainConfig

    assert TrainConfig().tensorboard is False and SearchConfig().tensorboard is False
    tensorboard.start(tmp_path, False)
    rundir.append_metrics(tmp_path, {"type": "iter", "step": 1, "loss": 1.0})
    assert not (tmp_path / "tensorboard").exists()


def test_missing_package_is_one_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(UserError, match=r"pip install 'fasterseg\[tensorboard\]'"):
        tensorboard.start(tmp_path, True)
    rc = main(["train", *TINY, "--set", "train.tensorboard=true", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 1 and "fasterseg[tensorboard]" in err and "Traceback" not in err


def test_train_logs_every_record_and_resume_drops_killed_steps(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert main(["train", *TINY, "--set", "train.tensorboard=true", "--out", str(out)]) == 0
    ev = _events(out / "tensorboard")
    records = rundir.read_metrics(out)
    iters = [(r["step"], r["loss"]) for r in records if r["type"] == "iter"]
    assert [s for s, _ in ev["iter/loss"]] == [s for s, _ in iters] == [1, 2, 3, 4]
    assert [v for _, v in ev["iter/loss"]] == pytest.approx([v for _, v in iters])
    assert [s for s, _ in ev["epoch/val_miou"]] == [2, 4]
    assert "epoch/train_loss" in ev and "cost/seconds_per_iter" in ev
    assert not tensorboard._RUNS  # closed at the end of the run

    # a kill after step 4 left events of steps 5..6 that the checkpoint (step 4) does not have:
    # the resume cuts metrics.jsonl back to step 4 and TensorBoard drops those events too
    tensorboard.start(out, True)
    tensorboard.truncate(out, 4)  # (as the resume that ran steps 5 and 6 did)
    for step in (5, 6):
        rundir.append_metrics(out, {"type": "iter", "step": step, "loss": 99.0})
    tensorboard.stop(out)
    assert main(["train", "--resume", str(out), "--set", "train.epochs=3"]) == 0
    ev = _events(out / "tensorboard")
    steps = [s for s, _ in ev["iter/loss"]]
    assert steps == [1, 2, 3, 4, 5, 6] and 99.0 not in [v for _, v in ev["iter/loss"]]
    got = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
           if json.loads(x)["type"] == "iter"]
    assert got == steps


def test_search_logs_next_to_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    import yaml

    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"preset": "synthetic", "synthetic_size": [64, 128], "synthetic_train": 4,
                 "synthetic_val": 1, "downsample": 1, "scales": [1.0], "workers": 0},
        "space": {"num_layers": 4, "ratios": [4, 8], "teacher_stem_ratio": 8,
                  "teacher_head_ratio": 8},
        "search": {"pretrain_epochs": 1, "search_epochs": 1, "iters_per_epoch": 2,
                   "pretrain_crop_size": [64, 128], "crop_size": [64, 128],
                   "pretrain_batch_size": 2, "batch_size": 2, "sandwich_random": 1,
                   "eval_every": 1, "val_max_images": 1, "log_every": 1, "seed": 0,
                   "latency_weight": 0.0, "tensorboard": True}}))
    out = tmp_path / "run"
    assert main(["search", "-c", str(cfg), "--out", str(out)]) == 0
    ev = _events(out / "tensorboard")
    iters = [r["step"] for r in rundir.read_metrics(out) if r["type"] == "iter"]
    tag = next(t for t in ev if t.startswith("iter/"))
    assert [s for s, _ in ev[tag]] == iters and any(t.startswith("epoch/") for t in ev)
