"""int8 through onnxruntime static quantization: Predictor contract, fallback, saved file.

A tiny derived network at 64x96 with generated scenes (no ../shared, seconds per quantization).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from fasterseg.deploy import int8 as int8_mod
from fasterseg.deploy.calibration import calibration_images
from fasterseg.deploy.fallback import MIN_GAIN
from fasterseg.deploy.predictor import Predictor
from fasterseg.errors import UserError

pytestmark = pytest.mark.skipif(not int8_mod.int8_methods(),
                                reason="onnxruntime quantization is not installed")

SIZE = (64, 96)


@pytest.fixture(scope="module")
def tiny(tiny_arch):
    from fasterseg.models import build_model

    torch.manual_seed(0)
    return build_model(tiny_arch()).eval()


@pytest.fixture(scope="module")
def images():
    calib, info = calibration_images("synthetic", SIZE, 2, split="train")
    check, _ = calibration_images("synthetic", SIZE, 2, split="val")
    return calib, check, info


@pytest.fixture(scope="module")
def quantized(tiny, images):
    calib, check, info = images
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    q = int8_mod.quantize_int8(tiny, SIZE, calib, check=check, min_agreement=0.0, threads=1,
                               calib_info=info)
    return q, before


def test_predictor_contract(quantized, tiny, images):
    q, before = quantized
    _, check, _ = images
    assert isinstance(q, Predictor)
    assert (q.name, q.backend, q.dtype) == ("int8-ort", "onnxruntime", "int8")
    out = q(check[0])
    assert out.shape == (1, 3, *SIZE) and out.dtype == torch.float32
    json.dumps(q.info, allow_nan=False)  # JSON-ready and strict
    assert q.info["method"] == "onnxruntime" and q.info["agreement_on"] == "check"
    assert q.info["calibration"]["generated"] is True and q.info["calibration"]["images"] == 2
    # the reported agreement is the one measured against the fp32 model on the check images
    with torch.inference_mode():
        ref = [tiny(x).argmax(1) for x in check]
    assert q.info["agreement"] == pytest.approx(int8_mod.agreement(q, check, ref))
    assert q.info["agreement"] > 0.5
    assert any("Resize" in n for n in q.info["fp32_nodes"])  # final upsample kept fp32
    assert q.info["fallback"] == [] and q.info["reached"] is True  # floor 0: nothing to do
    assert q.info["int8_convs"] == q.info["convs"] > 0
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())


def test_batch_and_wrong_size(quantized, images):
    q, _ = quantized
    _, check, _ = images
    two = q(torch.cat(check))
    assert two.shape == (2, 3, *SIZE)
    assert torch.allclose(two[1:], q(check[1]), atol=1e-5)
    with pytest.raises(UserError, match="calibrated for 64x96") as e:
        q(torch.zeros(1, 3, 64, 64))
    assert "\n" not in str(e.value)


def test_save_writes_a_loadable_onnx(quantized, images, tmp_path):
    import onnxruntime as ort

    q, _ = quantized
    _, check, _ = images
    path = q.save(tmp_path / "model.int8")
    assert path == tmp_path / "model.onnx" and path.is_file()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: check[0].numpy()})
    assert torch.allclose(torch.from_numpy(out), q(check[0]), atol=1e-5)
    assert any(n.op_type == "DequantizeLinear" for n in _onnx_nodes(path))


def _onnx_nodes(path: Path):
    import onnx

    return onnx.load(str(path)).graph.node


def test_fallback_runs_when_the_floor_is_not_met(tiny, images):
    _, check, _ = images
    # 4 images: ranges merged over chunks (onnxruntime's CalibMaxIntermediateOutputs=4 dropped
    # them and failed with "No data is collected")
    calib, _ = calibration_images("synthetic", SIZE, 4, split="train")
    q = int8_mod.quantize_int8(tiny, SIZE, calib, check=check, min_agreement=1.0,
                               max_fallback=1, threads=1)
    info = q.info
    steps = info["fallback_steps"]
    if steps[0]["agreement"] >= 1.0:
        pytest.skip("int8 already agrees on every pixel here")
    # every convolution scored once, alone in fp32 (the calibration ran once: builds reuse it)
    conv_names = [n.name for n in _conv_nodes(q)] + info["fallback"]
    assert set(info["sensitivity"]) <= set(conv_names) and len(info["sensitivity"]) == \
        info["convs"]
    assert info["builds"] == 1 + info["convs"] + len(steps) - 1
    gaining = [c for c, a in info["sensitivity"].items() if a > steps[0]["agreement"]]
    if not gaining:
        assert len(steps) == 1 and info["fallback"] == []
        return
    # the first try is the most sensitive convolution per MAC it costs in fp32
    assert len(steps) == 2 and steps[1]["fp32"][0] in gaining
    assert steps[1]["agreement"] == pytest.approx(info["sensitivity"][steps[1]["fp32"][0]])
    assert info["agreement"] == max(s["agreement"] for s in steps)
    assert info["reached"] == (info["agreement"] >= 1.0)
    assert info["fallback"] == ([steps[1]["fp32"][0]] if steps[1]["kept"] else [])
    assert steps[1]["kept"] == (steps[1]["agreement"] >= steps[0]["agreement"] + MIN_GAIN)
    assert info["int8_convs"] == info["convs"] - len(info["fallback"])
    assert info["macs"] > 0 and (info["fp32_macs"] > 0) == bool(info["fallback"])


@pytest.mark.parametrize("method", ["percentile:99.99", "entropy"])
def test_other_calibration_methods(tiny, images, method):
    calib, check, _ = images
    q = int8_mod.quantize_int8(tiny, SIZE, calib, check=check, min_agreement=0.0, threads=1,
                               calibration=method)
    assert q.info["calibration_method"] == method and method in q.info["activations"]
    assert q.info["agreement"] > 0.5 and q(check[0]).shape == (1, 3, *SIZE)


def test_keep_fp32_skips_the_search_and_is_honoured(tiny, images, quantized, caplog):
    calib, check, _ = images
    q0, _ = quantized
    forced = q0.info["fallback_steps"][0]["fp32"]  # the final resize, always fp32
    first_conv = [n.name for n in _conv_nodes(q0)][0]
    q = int8_mod.quantize_int8(tiny, SIZE, calib, check=check, keep_fp32=[first_conv],
                               min_agreement=1.0, threads=1)
    assert first_conv in q.info["fp32_nodes"] and len(q.info["fallback_steps"]) == 1
    assert q.info["int8_convs"] == q.info["convs"] - 1
    assert set(forced) <= set(q.info["fp32_nodes"])
    # a saved choice rebuilt without check images decides nothing: no floor or probe warnings
    caplog.clear()
    with caplog.at_level("WARNING"):
        int8_mod.quantize_int8(tiny, SIZE, calib, keep_fp32=[first_conv], min_agreement=1.0,
                               threads=1)
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    with pytest.raises(UserError, match="keep_fp32: no node 'nope'"):
        int8_mod.quantize_int8(tiny, SIZE, calib, keep_fp32=["nope"], threads=1)


def _conv_nodes(q):
    import onnx

    return [n for n in onnx.load_model_from_string(q._bytes).graph.node if n.op_type == "Conv"]


def test_bad_arguments_are_one_line(tiny, images):
    calib, _, _ = images
    with pytest.raises(UserError, match="unknown int8 method 'tensorrt'"):
        int8_mod.quantize_int8(tiny, SIZE, calib, method="tensorrt")
    with pytest.raises(UserError, match="does not match"):
        int8_mod.quantize_int8(tiny, (64, 64), calib)
    with pytest.raises(UserError, match="at least one image"):
        int8_mod.quantize_int8(tiny, SIZE, [])
    with pytest.raises(UserError, match="min_agreement"):
        int8_mod.quantize_int8(tiny, SIZE, calib, min_agreement=99.5)
    with pytest.raises(UserError, match="unknown int8 calibration 'kl'"):
        int8_mod.quantize_int8(tiny, SIZE, calib, calibration="kl")
    with pytest.raises(UserError, match="percentile must be in"):
        int8_mod.quantize_int8(tiny, SIZE, calib, calibration="percentile:9999")


def test_new_path_does_not_import_torch_ao():
    tree = ast.parse(Path(int8_mod.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [n for n in names if n.startswith(("torch.ao", "fasterseg.bench"))]
