"""benchmarks/resolution_ceiling.py: the IoU ceiling of a head predicting at 1/r of the input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "resolution_ceiling.py"


def _module():
    spec = importlib.util.spec_from_file_location("resolution_ceiling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_two_pixel_pole_vanishes_at_one_eighth_but_not_at_full_resolution(tmp_path, capsys):
    lab = np.zeros((64, 64), np.uint8)
    lab[:, 31:33] = 1  # a 2-px vertical pole
    lab[0, :] = 255  # ignored row
    Image.fromarray(lab).save(tmp_path / "a.png")
    mod = _module()
    files = [tmp_path / "a.png"]
    assert mod.iou(mod.ceiling_confusion(files, 2, 1))[1] == 1.0
    assert mod.iou(mod.ceiling_confusion(files, 2, 8))[1] < 0.5
    out = tmp_path / "r.json"
    assert mod.main(["--labels", str(tmp_path), "--num-classes", "2", "--rates", "8", "1",
                     "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res == json.loads(out.read_text())
    assert res["rates"]["1/1"]["per_class_iou"]["1"] == 1.0
    assert mod.main(["--labels", str(tmp_path / "none"), "--num-classes", "2"]) == 1
