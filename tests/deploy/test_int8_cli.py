"""``bench --dtype int8`` from the command line: the JSON result of the onnxruntime int8 path and
the one-line warnings for the flags of the removed torch.ao path (moved from
tests/bench/test_bench_int8.py when that path was deleted)."""

from __future__ import annotations

import json

import pytest
import torch

from fasterseg.cli.main import main
from fasterseg.deploy import int8 as int8_mod


@pytest.mark.skipif(not int8_mod.int8_methods(), reason="onnxruntime quantization is missing")
def test_bench_cli_int8_json(tmp_path, capsys, tiny_arch):
    from fasterseg.models import build_model
    from fasterseg.utils.io import torch_save

    torch.manual_seed(0)
    net = build_model(tiny_arch()).eval()
    ckpt = tmp_path / "tiny.pt"
    torch_save({"arch": net.arch.to_dict(), "model": net.state_dict()}, ckpt)
    # a low floor: no fp32 fallback search (the random tiny net is far from 99.5 %)
    rc = main(["bench", str(ckpt), "--size", "64x96", "--threads", "1", "--seconds", "0.1",
               "--dtype", "int8", "--calibration-images", "2", "--check-images", "2",
               "--min-agreement", "0.3", "--json"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0
    assert {"latency_ms", "fps", "agreement", "quant_engine", "calibration_images"} <= set(res)
    assert res["dtype"] == "int8" and res["calibration_images"] == 2
    assert res["check"]["split"] == "val" and res["calibration"]["split"] == "train"
    assert res["latency_ms"] > 0 and 0.3 < res["agreement"] <= 1.0


def test_bench_cli_deprecated_int8_flags_and_user_error(capsys):
    # --keep-fp32 / --observer belonged to the torch.ao path: now a one-line warning each
    assert main(["bench", "fasterseg_student", "--size", "64x128", "--dtype", "int8",
                 "--keep-fp32", "net.nope", "--observer", "minmax",
                 "--calibration-images", "0"]) == 1
    err = capsys.readouterr().err
    assert "--keep-fp32 is deprecated and ignored" in err and "--observer is deprecated" in err
    assert "--calibration-images" in err
