import json

import pytest

from fasterseg.cli.main import main
from fasterseg.utils.io import torch_save

KEYS = {"latency_ms", "fps", "backend", "dtype", "device", "threads", "size", "macs", "params"}


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_bench_json_keys(capsys):
    rc = main(["bench", "fasterseg_student", "--size", "64x128", "--threads", "1",
               "--seconds", "0.2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    res = _last_json(out)
    assert KEYS <= set(res)
    assert res["backend"] == "torch" and res["dtype"] == "fp32" and res["device"] == "cpu"
    assert res["size"] == [64, 128] and res["threads"] == 1
    assert res["latency_ms"] > 0 and res["fps"] == pytest.approx(1000 / res["latency_ms"])
    assert res["macs"] > 0 and res["params"] > 0 and res["runs"] >= 5
    assert "torch" in res["versions"]


def test_bench_fast_path_and_checkpoint(tmp_path, capsys):
    from fasterseg.models import create_model

    model = create_model("fasterseg_student", num_classes=5)
    ckpt = tmp_path / "last.pt"
    torch_save({"arch": model.arch.to_dict(), "model": model.state_dict()}, ckpt)
    rc = main(["bench", str(ckpt), "--size", "64x128", "--threads", "1", "--seconds", "0.1",
               "--dtype", "bf16", "--channels-last", "--fuse-bn", "--json"])
    res = _last_json(capsys.readouterr().out)
    assert rc == 0
    assert res["dtype"] == "bf16" and res["channels_last"] and res["fuse_bn"]
    assert res["weights"] == "checkpoint"


def test_bench_jit_onednn_graph(capsys, monkeypatch):
    import fasterseg.bench.tuning as tuning

    calls = []  # keep the test process's allocator as it is (tune_malloc lasts for the process)
    monkeypatch.setattr(tuning, "tune_malloc", lambda: calls.append(1) or True)
    # the former --fast recipe, spelled out (--fast is now the saved --auto choice)
    rc = main(["bench", "fasterseg_student", "--size", "64x128", "--threads", "1",
               "--seconds", "0.1", "--backend", "jit", "--channels-last", "--fuse-bn",
               "--tune-malloc", "--json"])
    res = _last_json(capsys.readouterr().out)
    assert rc == 0 and res["backend"] == "jit" and res["malloc_tuned"] and res["latency_ms"] > 0
    assert res["channels_last"] and res["fuse_bn"] and res["dtype"] == "fp32" and calls == [1]


@pytest.mark.onnx
def test_bench_onnxruntime(capsys):
    rc = main(["bench", "fasterseg_student", "--size", "64x128", "--threads", "1",
               "--seconds", "0.1", "--backend", "onnxruntime", "--json"])
    res = _last_json(capsys.readouterr().out)
    assert rc == 0 and res["backend"] == "onnxruntime" and res["latency_ms"] > 0


def test_bench_user_errors(tmp_path, capsys):
    assert main(["bench", "no_such_model", "--size", "64x128"]) == 1
    assert main(["bench", "fasterseg_student", "--size", "60x128"]) == 1
    err = capsys.readouterr().err
    assert "nearest valid" in err
    assert main(["bench", "fasterseg_student", "--size", "64x128", "--backend", "tensorrt"]) == 1
    assert "tensorrt" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["bench", str(tmp_path / "bad.pt"), "--size", "64x128"]) == 1
