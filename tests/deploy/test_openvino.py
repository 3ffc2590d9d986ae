"""OpenVINO back end: one-line errors without the package (always run); with it, a small derived
network compiles and matches eager fp32, the IR reads back, int8 (NNCF) runs."""

from __future__ import annotations

import builtins
import importlib.util

import pytest
import torch

from fasterseg.deploy import openvino as fov
from fasterseg.errors import UserError

SIZE = (64, 96)
HAVE_OV = importlib.util.find_spec("openvino") is not None
HAVE_NNCF = importlib.util.find_spec("nncf") is not None
needs_ov = pytest.mark.skipif(not HAVE_OV, reason="OpenVINO is not installed "
                              "(pip install 'fasterseg[openvino]')")


@pytest.fixture
def no_openvino(monkeypatch):
    """Make ``import openvino`` / ``import nncf`` fail as they do where they are not installed."""
    real_import = builtins.__import__
    real_find = importlib.util.find_spec

    def fake_import(name, *args, **kw):
        if name.split(".")[0] in ("openvino", "nncf"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kw)

    def fake_find(name, *args, **kw):
        return None if name.split(".")[0] in ("openvino", "nncf") else real_find(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(importlib.util, "find_spec", fake_find)


@pytest.fixture(scope="module")
def model():
    from fasterseg.models import create_model

    torch.manual_seed(0)
    return create_model("fasterseg_student", num_classes=5).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, 3, *SIZE, generator=g) for _ in range(3)]


@pytest.fixture(scope="module")
def fp32(model):
    return fov.compile_openvino(model, SIZE, "fp32", threads=1)


@pytest.fixture(scope="module")
def bf16(model):
    return fov.compile_openvino(model, SIZE, "bf16", threads=1)


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_absent_package_is_one_line(no_openvino, tmp_path):
    assert fov.openvino_version() is None
    assert fov.nncf_version() is None
    net = torch.nn.Conv2d(3, 2, 1)
    for call in (lambda: fov.compile_openvino(net, SIZE),
                 lambda: fov.export_ir(net, tmp_path / "m.xml", SIZE)):
        with pytest.raises(UserError) as e:
            call()
        assert _one_line(e) == "OpenVINO is not installed: pip install 'fasterseg[openvino]'"
    assert not list(tmp_path.iterdir())


def test_bad_dtype_is_one_line(model):
    if not HAVE_OV:
        pytest.skip("OpenVINO is not installed (pip install 'fasterseg[openvino]')")
    with pytest.raises(UserError) as e:
        fov.compile_openvino(model, SIZE, "fp16")
    assert "unknown OpenVINO dtype 'fp16'" in _one_line(e)


@needs_ov
def test_fp32_matches_eager(model, images, fp32):
    pred = fp32
    assert (pred.name, pred.backend, pred.dtype) == ("openvino-fp32", "openvino", "fp32")
    assert pred.info["openvino"] == fov.openvino_version()
    assert pred.info["inference_precision"] == "f32" and pred.info["threads"] == 1
    x = torch.cat(images[:2])
    with torch.inference_mode():
        ref = model(x)
    out = pred(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (2, 5, *SIZE)
    assert torch.allclose(out, ref, atol=1e-3 * float(ref.abs().max()), rtol=1e-3)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.999
    with pytest.raises(UserError, match="compiled for"):
        pred(torch.zeros(1, 3, 64, 64))


@needs_ov
def test_bf16_reports_what_ran(model, images, bf16):
    pred = bf16
    ran = pred.info["inference_precision"]
    assert pred.info["requested_precision"] == "bf16" and ran in ("bf16", "f32")
    # bf16 runs only where the CPU has it; otherwise the note says the hint was ignored
    assert (ran == "bf16") == ("BF16" in pred.info["cpu_capabilities"])
    assert ("note" in pred.info) == (ran != "bf16")
    with torch.inference_mode():
        ref = model(images[0])
    assert (pred(images[0]).argmax(1) == ref.argmax(1)).float().mean() > 0.9


@needs_ov
def test_export_ir_reads_back(model, images, tmp_path):
    import openvino as ov

    xml = fov.export_ir(model, tmp_path / "sub" / "net.onnx", SIZE)
    assert xml == tmp_path / "sub" / "net.xml"
    assert xml.is_file() and xml.with_suffix(".bin").stat().st_size > 100_000
    assert sorted(p.name for p in xml.parent.iterdir()) == ["net.bin", "net.xml"]  # no temp left
    core = ov.Core()
    read = core.read_model(str(xml))
    assert list(read.inputs[0].get_shape()) == [1, 3, *SIZE]
    assert read.inputs[0].get_any_name() == "image"
    assert read.outputs[0].get_any_name() == "logits"
    out = core.compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(
        images[0].numpy())[0]
    with torch.inference_mode():
        ref = model(images[0])
    assert torch.allclose(torch.from_numpy(out), ref, atol=1e-3 * float(ref.abs().max()))


@needs_ov
def test_save_writes_ir(fp32, bf16, tmp_path):
    xml = bf16.save(tmp_path / "m")
    assert xml == tmp_path / "m.xml" and xml.with_suffix(".bin").is_file()
    import openvino as ov

    assert ov.Core().read_model(str(xml)).get_rt_info(["fasterseg", "precision"]).astype(
        str) == "bf16"  # the requested precision is recorded in the IR
    xml = fp32.save(tmp_path / "f.xml")
    assert ov.Core().read_model(str(xml)).get_rt_info(["fasterseg", "precision"]).astype(
        str) == "fp32"
    assert not fp32.model.has_rt_info(["fasterseg", "precision"])  # the predictor's model as is


@needs_ov
def test_int8(model, images):
    if not HAVE_NNCF:
        with pytest.raises(UserError) as e:
            fov.compile_openvino(model, SIZE, "int8", calib=images)
        assert "needs NNCF" in _one_line(e)
        pytest.skip("NNCF is not installed: the int8 path is checked only for its error")
    with pytest.raises(UserError) as e:
        fov.compile_openvino(model, SIZE, "int8")
    assert "calibration images" in _one_line(e)
    pred = fov.compile_openvino(model, SIZE, "int8", threads=1, calib=images[:2])
    assert pred.name == "openvino-int8" and pred.info["calibration_images"] == 2
    assert pred.info["nncf"] == fov.nncf_version()
    with torch.inference_mode():
        ref = model(images[2])
    out = pred(images[2])
    assert out.shape == ref.shape
    # int8 of random weights on noise: only roughly the same map, but far from chance (1/5)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.5
