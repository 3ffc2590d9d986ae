"""A training run never loses or corrupts the user's data (issue 13, training side).

Each test is a regression test for one way a run used to lose work or write wrong files: a
finished run overwritten, a bad validation file or a kill losing an epoch, overrides of a failed
resume made permanent, diverged weights saved as "good", NaN in JSON, an unclear full-disk
error, SIGTERM ignored, a second Ctrl-C aborting the save, stale temp files.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fasterseg.cli.main import main

TINY = [
    "-c", "synthetic_tiny",
    "--set", "data.synthetic_size=[64,128]", "--set", "data.crop_size=[64,128]",
    "--set", "data.synthetic_train=4", "--set", "data.synthetic_val=1",
    "--set", "train.batch_size=2", "--set", "train.iters_per_epoch=1", "--set", "train.epochs=1",
    "--set", "train.eval_every=1", "--set", "train.eval_max_images=1", "--set", "train.log_every=1",
    "--set", "train.cost_warmup=1", "--set", "train.cost_measure=1",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}


class Killed(BaseException):
    """Stands for SIGKILL at a chosen point: nothing in the trainer catches it."""


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _strict_json(text: str):
    def bad(token):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=bad)


def _epoch_rows(run: Path) -> list[dict]:
    rows = [_strict_json(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["type"] == "epoch"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished 1-epoch run (last.pt, best.pt, best.json, metrics); copy it before changing."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


def _camvid(root: Path, n_train: int = 2, n_val: int = 2, void_train: bool = False,
            void_val: bool = False) -> Path:
    """A CamVid tree of 64x128 images; labels all void (11) where asked."""
    rng = np.random.default_rng(0)
    for split, n, void in (("train", n_train, void_train), ("val", n_val, void_val)):
        lines = []
        for k in range(n):
            name = f"0001TP_{k:06d}.png"
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(root / split / name)
            lab = np.full((64, 128), 11, np.uint8) if void else rng.integers(0, 11, (64, 128)).astype(np.uint8)
            Image.fromarray(lab).save(root / f"{split}annot" / name)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _camvid_args(root: Path) -> list[str]:
    return [*TINY, "--set", "data.preset=camvid", "--set", f"data.root={root}"]


# ------------------------------------------------------------------ 2: a finished run overwritten
def test_new_run_refuses_a_non_empty_out_even_without_last_pt(run_copy, capsys):
    (run_copy / "last.pt").unlink()
    before = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    assert main(["train", *TINY, "--out", str(run_copy)]) == 1
    line = _error_line(capsys)
    assert "is not empty" in line and "--resume" in line and "--force" in line, line
    assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == before  # nothing touched


def test_force_replaces_the_previous_run_and_keeps_other_files(run_copy, capsys):
    (run_copy / "notes.txt").write_text("mine")
    old_best = _ckpt(run_copy / "best.pt")["metric"]
    (run_copy / "metrics.jsonl").write_text('{"type": "epoch", "epoch": 7, "step": 99}\n')
    assert main(["train", *TINY, "--set", "train.seed=1", "--out", str(run_copy), "--force"]) == 0
    assert "--force: removed the previous run's" in capsys.readouterr().out
    assert (run_copy / "notes.txt").read_text() == "mine"
    rows = _epoch_rows(run_copy)
    assert [r["epoch"] for r in rows] == [1]  # not mixed with the old run's records
    assert _ckpt(run_copy / "last.pt")["config"]["train"]["seed"] == 1
    assert _ckpt(run_copy / "best.pt")["metric"]["step"] == 1 and old_best is not None


def test_a_run_that_never_saved_anything_restarts_in_place(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("train: {}\n")
    (out / "env.json").write_text("{}\n")
    (out / "metrics.jsonl").write_text('{"type": "iter", "step": 1}\n')
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert [r["type"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            ].count("iter") == 1


def test_hand_written_config_in_out_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.yaml").write_text("# my notes\n")
    assert main(["train", *TINY, "--out", str(out)]) == 1
    assert (out / "config.yaml").read_text() == "# my notes\n"


def test_search_refuses_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "search"
    out.mkdir()
    (out / "arch_params.json").write_text("{}\n")
    rc = main(["search", "-c", "synthetic_tiny", "--set", "search.latency_weight=0",
               "--out", str(out)])
    assert rc == 1
    line = _error_line(capsys)
    assert "is not empty" in line and "--force" in line, line
    assert sorted(p.name for p in out.iterdir()) == ["arch_params.json"]


# ------------------------------------------------------------------ 4: bad validation files
def test_corrupt_validation_file_stops_before_training(tmp_path, capsys):
    root = _camvid(tmp_path / "camvid")
    bad = root / "val" / "0001TP_000000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "run"
    assert main(["train", *_camvid_args(root), "--out", str(out)]) == 1
    line = _error_line(capsys)
    assert bad.name in line and "data.skip_corrupt" in line, line
    assert not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().strip()


def test_skip_corrupt_leaves_bad_validation_files_out(tmp_path, caplog):
    root = _camvid(tmp_path / "camvid")
    bad = root / "val" / "0001TP_000000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "run"
    argv = ["train", *_camvid_args(root), "--set", "data.skip_corrupt=true",
            "--set", "train.eval_max_images=null", "--out", str(out)]
    assert main(argv) == 0
    assert "skipping a bad validation sample" in caplog.text
    assert _epoch_rows(out)[0]["val_images"] == 1


def test_epoch_is_saved_before_validation_and_resume_validates_it(tmp_path, monkeypatch, capsys):
    from fasterseg.engine import trainer

    real = trainer._validate

    def broken(*a, **k):
        raise trainer.UserError("cannot read image val/x.png")

    monkeypatch.setattr(trainer, "_validate", broken)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 1
    ck = _ckpt(out / "last.pt")  # the epoch's training survived the failed validation
    assert ck["step"] == 1 and ck["epoch"] == 1 and ck["pending_epoch"]["epoch"] == 1
    monkeypatch.setattr(trainer, "_validate", real)
    assert main(["train", "--resume", str(out)]) == 0
    rows = _epoch_rows(out)
    assert len(rows) == 1 and rows[0]["val_images"] == 1
    best = _ckpt(out / "best.pt")["metric"]
    assert _ckpt(out / "last.pt")["best"] == best and best["epoch"] == 1
    assert _ckpt(out / "last.pt")["pending_epoch"] is None


# ------------------------------------------------------------------ 5: kill between last.pt / best.pt
def test_kill_before_best_pt_is_recovered_on_resume(tmp_path, monkeypatch, capsys):
    from fasterseg.engine import checkpoint as ckpt_io

    real = ckpt_io.save_checkpoint

    def kill_at_best(state, path):
        if Path(path).name == "best.pt":
            raise Killed
        return real(state, path)

    monkeypatch.setattr(ckpt_io, "save_checkpoint", kill_at_best)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        main(["train", *TINY, "--out", str(out)])
    assert not (out / "best.pt").exists()
    assert _ckpt(out / "last.pt")["best"] is None  # last.pt never names a best.pt not yet written
    monkeypatch.setattr(ckpt_io, "save_checkpoint", real)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    assert f"-> {out / 'best.pt'}" in capsys.readouterr().out
    assert _ckpt(out / "last.pt")["best"] == _ckpt(out / "best.pt")["metric"]
    assert [r["epoch"] for r in _epoch_rows(out)] == [1]  # the epoch's metrics row exists


def test_kill_before_metrics_row_restores_it_on_resume(tmp_path, monkeypatch):
    from fasterseg.engine import rundir

    real = rundir.append_metrics

    def kill_at_epoch_row(run_dir, record):
        if record.get("type") == "epoch":
            raise Killed
        return real(run_dir, record)

    monkeypatch.setattr(rundir, "append_metrics", kill_at_epoch_row)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        main(["train", *TINY, "--out", str(out)])
    assert _epoch_rows(out) == []
    monkeypatch.setattr(rundir, "append_metrics", real)
    assert main(["train", "--resume", str(out)]) == 0
    rows = _epoch_rows(out)
    assert [r["epoch"] for r in rows] == [1] and rows[0]["val_images"] == 1
    assert len((out / "summary.csv").read_text().strip().splitlines()) == 2


def test_resume_repairs_a_best_pt_that_last_pt_names_but_is_missing(run_copy, capsys, caplog):
    (run_copy / "best.pt").unlink()
    assert main(["train", "--resume", str(run_copy)]) == 0
    captured = capsys.readouterr()
    assert "does not exist" in caplog.text
    assert "best.pt" not in captured.out  # no pointer to the missing file
    assert "next: fasterseg eval" in captured.out and "last.pt" in captured.out


def test_reconcile_best_trusts_best_pt(run_copy):
    from fasterseg.engine.rundir import reconcile_best

    on_disk = _ckpt(run_copy / "best.pt")["metric"]
    assert reconcile_best(run_copy, on_disk) == (on_disk, None)
    other = {**on_disk, "epoch": 5, "step": 9}
    best, note = reconcile_best(run_copy, other)
    assert best == on_disk and "using best.pt's" in note
    assert json.loads((run_copy / "best.json").read_text())["epoch"] == on_disk["epoch"]


# ------------------------------------------------------------------ 6: a failed --resume --set
def test_failed_resume_with_overrides_does_not_rewrite_config(run_copy, monkeypatch, capsys):
    from fasterseg.engine import trainer

    before = (run_copy / "config.yaml").read_text()
    real = trainer._forward_train

    def fails(net, x):
        raise trainer.UserError("out of memory (simulated)")

    monkeypatch.setattr(trainer, "_forward_train", fails)
    argv = ["train", "--resume", str(run_copy), "--set", "train.epochs=2",
            "--set", "train.batch_size=3"]
    assert main(argv) == 1
    assert (run_copy / "config.yaml").read_text() == before  # a plain --resume is unaffected
    monkeypatch.setattr(trainer, "_forward_train", real)
    assert main(["train", "--resume", str(run_copy), "--set", "train.epochs=2"]) == 0
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["batch_size"] == 2  # persisted on progress


# ------------------------------------------------------------------ 7: diverged weights
def test_nan_weights_are_never_saved(run_copy, monkeypatch, capsys):
    real_step = torch.optim.SGD.step

    def poisoned(self, *a, **k):
        out = real_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned)
    good = _ckpt(run_copy / "last.pt")["model"]
    assert main(["train", "--resume", str(run_copy), "--set", "train.epochs=2"]) == 1
    line = _error_line(capsys)
    assert "weights became NaN/inf" in line and "last good checkpoint kept" in line, line
    ck = _ckpt(run_copy / "last.pt")
    assert ck["step"] == 1 and all(torch.equal(good[k], ck["model"][k]) for k in good)
    assert _ckpt(run_copy / "best.pt")["metric"]["epoch"] == 1


def test_nonfinite_batchnorm_statistics_are_detected():
    from fasterseg.engine.trainer import _nonfinite_tensors

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    assert _nonfinite_tensors(m) == []
    m[1].running_var[2] = float("inf")
    assert _nonfinite_tensors(m) == ["1.running_var"]


# ------------------------------------------------------------------ 12: all-void labels, no NaN
def test_all_void_training_labels_stop_with_one_line(tmp_path, capsys):
    root = _camvid(tmp_path / "camvid", void_train=True)
    out = tmp_path / "run"
    assert main(["train", *_camvid_args(root), "--out", str(out)]) == 1
    line = _error_line(capsys)
    assert "no labelled pixel" in line or "has a labelled pixel" in line, line
    assert "fasterseg data check" in line
    assert not (out / "best.json").exists()


def test_all_void_validation_writes_null_not_nan(tmp_path, caplog):
    root = _camvid(tmp_path / "camvid", void_val=True)
    out = tmp_path / "run"
    assert main(["train", *_camvid_args(root), "--out", str(out), "--json"]) == 0
    assert "mIoU is undefined" in caplog.text
    best = _strict_json((out / "best.json").read_text())
    assert best["value"] is None
    assert _epoch_rows(out)[0]["val_miou"] is None  # every line parses as strict JSON


# ------------------------------------------------------------------ 15: disk full, signals, temps
@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4992 vs 4880"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_full_disk_during_checkpoint_write_is_one_clear_line(tmp_path, monkeypatch, capsys, error):
    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--set", "train.eval_every=0", "--out", str(out)]) == 1
    line = _error_line(capsys)
    assert re.search(rf"no space left on device while writing {re.escape(str(out))}/\w+\.pt",
                     line), line
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # temp file removed


def test_second_ctrl_c_does_not_abort_the_checkpoint_write(tmp_path, monkeypatch):
    from fasterseg.engine.checkpoint import save_checkpoint

    real = torch.save

    def interrupted_save(obj, f, *a, **k):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives in the middle of the write
        time.sleep(0.05)
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", interrupted_save)
    # Ctrl-C's own handler as the precondition: an earlier test in the same process may have left
    # another one installed (the deferred signal is delivered to whatever handler was there before)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    path = tmp_path / "last.pt"
    try:
        with pytest.raises(KeyboardInterrupt):  # delivered once the file is complete
            save_checkpoint({"model": {"w": torch.ones(3)}, "step": 5}, path)
    finally:
        signal.signal(signal.SIGINT, before)
    assert _ckpt(path)["step"] == 5


@pytest.mark.slow
def test_sigterm_saves_and_exits_143(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fasterseg.cli.main", "train", *TINY, "--set", "train.epochs=1000",
           "--set", "train.eval_every=0", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        deadline = time.time() + 900  # a loaded 2-core machine needs minutes to import torch
        while time.time() < deadline and proc.poll() is None and not (out / "last.pt").is_file():
            time.sleep(0.1)
        assert proc.poll() is None and (out / "last.pt").is_file(), "no epoch finished in time"
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stdout
    assert "interrupted: saved" in stdout and "--resume" in stdout
    assert _ckpt(out / "last.pt")["step"] >= 1


def test_sigterm_handler_is_restored_and_only_in_this_process():
    from fasterseg.engine.signals import Terminated, exit_code, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as e:
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert exit_code(e.value) == 143 and signal.getsignal(signal.SIGTERM) == before


def test_stale_temp_files_are_removed_on_resume(run_copy, capsys):
    stale = [run_copy / ".last.pt.k3j_x9a2.tmp", run_copy / ".config.yaml.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    mine = run_copy / ".notes.tmp"
    mine.write_text("not ours")
    assert main(["train", "--resume", str(run_copy)]) == 0
    assert "removed 2 temp file(s)" in capsys.readouterr().out
    assert not any(p.exists() for p in stale) and mine.read_text() == "not ours"


def test_atomic_write_full_disk_keeps_the_old_file_and_no_temp(tmp_path):
    from fasterseg.errors import UserError
    from fasterseg.utils.io import atomic_write

    target = tmp_path / "best.json"
    target.write_text("old")

    def write(f):
        f.write("new, half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match=r"no space left on device while writing .*best\.json"):
        atomic_write(target, write)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["best.json"]
    with pytest.raises(OSError, match="Permission"):  # other errors are not disguised
        atomic_write(target, lambda f: (_ for _ in ()).throw(PermissionError("Permission denied")))


def test_temp_name_pattern_matches_atomic_write_temp_files(tmp_path):
    import tempfile

    from fasterseg.utils.io import TEMP_NAME

    fd, name = tempfile.mkstemp(prefix=".last.pt.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    assert TEMP_NAME.match(Path(name).name)
    assert not TEMP_NAME.match(".notes.tmp") and not TEMP_NAME.match("last.pt")
