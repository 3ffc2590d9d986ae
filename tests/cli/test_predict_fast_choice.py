"""``predict --fast`` runs the path ``bench --auto`` saved for this model, size and machine.

Issue 12: "`--fast` becomes this choice". Real ``bench --auto`` (two candidates, tiny network,
64x96 generated images), then ``predict --fast`` on a folder of that size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasterseg.arch import Arch
from fasterseg.arch.schema import published_arch_path
from fasterseg.arch.transforms import prune_widths
from fasterseg.cli.main import main


@pytest.fixture
def ckpt(tmp_path) -> Path:
    from fasterseg.engine.checkpoint import arch_to_dict, save_checkpoint
    from fasterseg.models import FasterSegNet

    arch = prune_widths(Arch.load(published_arch_path("fasterseg_student")), 1).with_num_classes(3)
    torch.manual_seed(0)
    model = FasterSegNet(arch)
    return save_checkpoint({"model": model.state_dict(), "arch": arch_to_dict(model.arch),
                            "num_classes": 3}, tmp_path / "run" / "best.pt")


@pytest.fixture
def frames(tmp_path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(d / f"f{k}.png")
    return d


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_predict_fast_uses_the_saved_auto_choice(ckpt, frames, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    # without a saved choice --fast is TorchScript
    assert main(["predict", str(ckpt), str(frames), "-o", str(tmp_path / "a"), "--fast",
                 "--threads", "1", "--json"]) == 0
    assert _last_json(capsys)["path"] == "jit-fp32"
    assert main(["bench", str(ckpt), "--auto", "--size", "64x96", "--threads", "1",
                 "--candidates", "onnxruntime-fp32", "--seconds", "0.2",
                 "--check-images", "2", "--calibration-images", "2", "--json"]) == 0
    capsys.readouterr()
    saved = ckpt.with_name("best.64x96.choice.json")
    choice = json.loads(saved.read_text())
    assert saved.is_file()
    chosen = choice["chosen"]["name"]
    assert chosen in ("onnxruntime-fp32", "eager-fp32")
    assert main(["predict", str(ckpt), str(frames), "-o", str(tmp_path / "b"), "--fast",
                 "--threads", "1", "--json"]) == 0
    assert _last_json(capsys)["path"] == chosen
    # measured with another thread count: it does not apply, TorchScript runs and says why
    assert main(["predict", str(ckpt), str(frames), "-o", str(tmp_path / "c"), "--fast",
                 "--threads", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["path"] == "jit-fp32"
    assert "does not apply" in out and "threads" in out
