"""End-to-end training through the CLI on tiny generated scenes: run dir, checkpoints, resume
after SIGKILL (bit-exact in deterministic mode), NaN handling and exit codes."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from fasterseg.cli.main import main

TINY = [
    "-c", "synthetic_tiny",
    "--set", "data.synthetic_size=[64,128]", "--set", "data.crop_size=[64,128]",
    "--set", "data.synthetic_train=8", "--set", "data.synthetic_val=2",
    "--set", "train.batch_size=2", "--set", "train.iters_per_epoch=4", "--set", "train.epochs=2",
    "--set", "train.log_every=1", "--set", "train.cost_warmup=1", "--set", "train.cost_measure=1",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_train_writes_a_complete_run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", *TINY, "--set", "train.eval_every=2", "--out", str(out), "--json"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"run dir: {out}" and lines[-2].startswith("next: fasterseg eval")
    summary = json.loads(lines[-1])
    assert summary["steps"] == 8 and 0 <= summary["miou"] <= 1
    for name in ("config.yaml", "env.json", "metrics.jsonl", "summary.csv", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    for key in ("model", "arch", "num_classes", "label_set", "optimizer", "schedule", "epoch",
                "step", "rng", "data_position", "config"):
        assert key in ck, key
    assert ck["epoch"] == 2 and ck["iter_in_epoch"] == 0 and ck["step"] == 8
    assert ck["label_set"]["name"] == "synthetic" and ck["num_classes"] == 11
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["metric"]["name"] == "val_miou" and best["metric"]["epoch"] in (1, 2)
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "iter"] == list(range(1, 9))
    assert any(r["type"] == "cost" and r["seconds_per_iter"] > 0 for r in records)
    vals = [r["val_miou"] for r in records if r["type"] == "epoch"]
    assert len(vals) == 2 and best["metric"]["value"] == max(vals)  # best.pt = best validation
    rows = (out / "summary.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss") and len(rows) == 3
    # the checkpoint evaluates through `fasterseg eval` (JSON contract)
    assert main(["eval", str(out / "best.pt"), "-c", str(out / "config.yaml"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"miou", "per_class_iou", "aacc", "macc", "images"} <= set(ev) and ev["images"] == 2
    assert (out / "eval-val" / "confusion.npy").is_file()
    # an existing run is not overwritten without --resume
    assert main(["train", *TINY, "--out", str(out)]) == 1


# The killed run: the CLI in a process that SIGKILLs itself when it is about to write the
# checkpoint of step KILL_AT, i.e. at a known point (last.pt holds step KILL_AT - save_every and
# metrics.jsonl already has later records), however fast or slow the machine is.
KILL_AT_SAVE = """
import os, signal, sys
from fasterseg.engine import checkpoint
real = checkpoint.save_checkpoint
def save(state, path):
    if state.get("step") == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(state, path)
checkpoint.save_checkpoint = save
from fasterseg.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    common = [*TINY, "--deterministic", "--set", "train.eval_every=0", "--set", "train.save_every=2"]
    straight = tmp_path / "straight"
    assert main(["train", *common, "--out", str(straight)]) == 0

    killed = tmp_path / "killed"  # the same run, killed as it saves step 8 (last.pt: step 6)
    cmd = [sys.executable, "-c", KILL_AT_SAVE, "train", *common, "--out", str(killed)]
    proc = subprocess.run(cmd, env={**ENV, "KILL_AT": "8"}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(killed / "last.pt", map_location="cpu", weights_only=True)["step"] == 6
    logged = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "iter"]
    assert max(logged) > 6  # records past the checkpoint, to be cut on resume
    # resume to the end (2 epochs): weights must equal the straight run's exactly
    assert main(["train", "--resume", str(killed)]) == 0
    a, b = _weights(straight / "last.pt"), _weights(killed / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the straight run"
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "iter"]
    assert steps == list(range(1, 9))  # records after the checkpoint were cut, none duplicated


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from fasterseg.engine import losses

    real = losses.OhemCrossEntropy.__call__
    calls = {"n": 0}

    def flaky(self, logits, labels):
        calls["n"] += 1
        loss = real(self, logits, labels)
        return loss * float("nan") if calls["n"] > 3 * 5 else loss  # 3 heads/step: NaN at step 6

    monkeypatch.setattr(losses.OhemCrossEntropy, "__call__", flaky)
    out = tmp_path / "nan"
    rc = main(["train", *TINY, "--set", "train.eval_every=0", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "loss became nan" in err and "last good checkpoint kept" in err
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_huge_lr_diverges_with_exit_1(tmp_path, capsys):
    rc = main(["train", *TINY, "--set", "train.lr=1e9", "--set", "train.eval_every=0",
               "--set", "train.epochs=3", "--out", str(tmp_path / "lr")])
    assert rc == 1
    assert "loss became" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--out", "X"], "pass -c CONFIG"),
        (["train", *TINY, "--arch", "no_such_model"], "unknown model"),
        (["train", *TINY, "--arch", "missing_arch.json"], "not found"),
        (["train", *TINY, "--set", "train.nope=1"], "unknown key train.nope"),
        (["train", *TINY, "--set", "train.amp=fp16"], "CUDA"),
        (["train", *TINY, "--teacher", "no/teacher.pt"], "teacher checkpoint not found"),
        (["train", "--resume", "no/such/run"], "no last.pt"),
        (["train", "-c", "camvid", "--set", "data.root=/no/such/camvid"], "does not exist"),
        (["eval", "no/such/ckpt.pt", "--data", "synthetic"], "checkpoint not found"),
        (["eval", "fasterseg_student", "--data", "camvid:/no/such/dir"], "data root not found"),
        (["eval", "fasterseg_student", "--data", "nosuchset"], "data.preset"),
        (["eval", "no_such_model", "--data", "synthetic"], "unknown model"),
        (["predict", "fasterseg_student", "no/such/image.png", "-o", "X"], "input not found"),
    ],
)
def test_cli_user_errors_exit_1_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # relative outputs land in tmp
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err


def test_cli_usage_error_exits_2(capsys):
    assert main(["eval"]) == 2
    assert main(["train", "--device"]) == 2


def test_eval_rejects_checkpoint_with_other_class_count(tmp_path, capsys):
    from fasterseg.engine.checkpoint import arch_to_dict, save_checkpoint
    from fasterseg.models import create_model

    m = create_model("fasterseg_student", num_classes=19)
    ck = save_checkpoint({"model": m.state_dict(), "arch": arch_to_dict(m.arch), "num_classes": 19},
                         tmp_path / "c19.pt")
    assert main(["eval", str(ck), "--data", "synthetic"]) == 1
    assert "19 classes" in capsys.readouterr().err


def test_predict_any_size_writes_label_pngs(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(np.zeros((33, 40, 3), np.uint8)).save(src / "sub" / "b.jpg")
    out = tmp_path / "out"
    assert main(["predict", "fasterseg_student", str(src), "-o", str(out), "--overlay", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["images"] == 2
    lab = Image.open(out / "labels" / "a.png")
    assert lab.size == (70, 45) and lab.mode == "L"
    assert Image.open(out / "labels" / "sub" / "b.png").size == (40, 33)
    assert Image.open(out / "overlay" / "a.png").size == (70, 45)


def test_distillation_bf16_accumulation_channels_last(tmp_path):
    """One short run exercising the options: --teacher (KD), amp bf16, accumulation, channels_last."""
    from fasterseg.engine.checkpoint import arch_to_dict, save_checkpoint
    from fasterseg.models import create_model

    t = create_model("fasterseg_student", num_classes=11)
    teacher = save_checkpoint({"model": t.state_dict(), "arch": arch_to_dict(t.arch), "num_classes": 11},
                              tmp_path / "teacher.pt")
    out = tmp_path / "kd"
    argv = ["train", *TINY, "--teacher", str(teacher), "--set", "train.epochs=1",
            "--set", "train.iters_per_epoch=2", "--set", "train.accumulate=2",
            "--set", "train.amp=bf16", "--set", "train.channels_last=true",
            "--set", "train.kd_reduction=official", "--set", "train.eval_every=0", "--out", str(out)]
    assert main(argv) == 0
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in recs if r["type"] == "iter"]
    assert len(iters) == 2 and all(r["loss_kd"] > 0 for r in iters)
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 2 and ck["data_position"]["start_iter"] == 0
    assert ck["config"]["train"]["teacher"] == str(teacher)


def test_ctrl_c_saves_and_exits_130(tmp_path, monkeypatch, capsys):
    from fasterseg.engine import losses

    real = losses.SegLoss.__call__
    calls = {"n": 0}

    def interrupt(self, outputs, labels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, outputs, labels)

    monkeypatch.setattr(losses.SegLoss, "__call__", interrupt)
    out = tmp_path / "int"
    assert main(["train", *TINY, "--set", "train.eval_every=0", "--out", str(out)]) == 130
    assert "resume" in capsys.readouterr().out
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 2 and ck["epoch"] == 0 and ck["iter_in_epoch"] == 2
