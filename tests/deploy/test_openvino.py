"""OpenVINO back end: one-line errors without the package (always run); with it, a small derived
network compiles and matches eager fp32, the IR reads back, int8 (NNCF) runs, and its fp32
fallback keeps convolutions out of int8 until the agreement floor (forced high here)."""

from __future__ import annotations

import builtins
import importlib.util
import json

import pytest
import torch

from fasterseg.deploy import openvino as fov
from fasterseg.deploy import openvino_graph as ov_graph
from fasterseg.deploy.fallback import MIN_GAIN
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


needs_nncf = pytest.mark.skipif(not (HAVE_OV and HAVE_NNCF),
                                reason="OpenVINO int8 needs openvino and nncf")


@pytest.fixture(scope="module")
def tiny(tiny_arch):
    """A three-cell network (15 convolutions): the fallback search quantizes it several times."""
    from fasterseg.models import build_model

    torch.manual_seed(0)
    return build_model(tiny_arch()).eval()


def _weights_fp32(pred, node: str) -> bool:
    """Whether convolution ``node`` of the compiled int8 model reads fp32 weights as they are
    (NNCF dequantizes int8 weights through a Multiply; an ignored convolution keeps its
    Constant)."""
    conv = next(op for op in pred.model.get_ordered_ops() if op.get_friendly_name() == node)
    return conv.input_value(1).get_node().get_type_name() == "Constant"


@needs_nncf
def test_conv_layers_ids_and_modules(tiny):
    convs = fov.conv_layers(fov.convert(tiny, SIZE))
    assert [c["id"] for c in convs] == [f"conv{i}" for i in range(len(convs))]
    assert convs[0]["layer"].startswith("stem") and convs[-1]["layer"] == "head.classifier"
    again = fov.conv_layers(fov.convert(tiny, SIZE))  # ids (not node names) are stable
    assert [c["layer"] for c in again] == [c["layer"] for c in convs]


@needs_nncf
def test_int8_fallback_reports_fp32_layers(tiny, images):
    """A floor no int8 model reaches (1.0) starts the search: every convolution scored alone in
    fp32 (without quantizing again), then one step with the best per MAC."""
    calib, check = images[:2], images[2:]
    pred = fov.compile_openvino(tiny, SIZE, "int8", threads=1, calib=calib, check=check,
                                min_agreement=1.0, max_fallback=1)
    info = pred.info
    json.dumps(info, allow_nan=False)
    steps = info["fallback_steps"]
    if steps[0]["agreement"] >= 1.0:
        pytest.skip("int8 already agrees on every pixel here")
    n = info["convs"]
    assert steps[0]["fp32"] == [] and set(info["sensitivity"]) == {f"conv{i}" for i in range(n)}
    gaining = [c for c, a in info["sensitivity"].items() if a > steps[0]["agreement"]]
    # one quantization for the base, one per step: the scan compiles variants of the base
    assert info["quantizations"] == len(steps) == (2 if gaining else 1)
    assert info["agreement"] == max(s["agreement"] for s in steps)
    assert info["reached"] is False and info["min_agreement"] == 1.0
    assert info["agreement_on"] == "check" and info["check_images"] == 1
    # the model returned keeps the step only when it gained
    gained = gaining and steps[1]["agreement"] >= steps[0]["agreement"] + MIN_GAIN
    assert info["fp32_nodes"] == info["fallback"] == (steps[1]["fp32"] if gained else [])
    assert info["int8_convs"] == n - len(info["fp32_nodes"])
    layers = {c["id"]: c for c in fov.conv_layers(fov.convert(tiny, SIZE))}
    assert info["fp32_layers"] == [layers[i]["layer"] for i in info["fp32_nodes"]]
    assert len(info["ignored_scope"]) == len(info["fp32_nodes"])
    with torch.inference_mode():
        ref = [tiny(x).argmax(1) for x in check]
    from fasterseg.deploy.int8 import agreement

    assert info["agreement"] == pytest.approx(agreement(pred, check, ref))


@needs_nncf
def test_fp32_variant_unquantizes_one_convolution(tiny, images):
    """The scan's estimate: the quantized model with one convolution's FakeQuantize inputs
    bypassed runs that convolution in fp32 and leaves the others int8."""
    ov_model = fov.convert(tiny, SIZE)
    q = fov.quantize_nncf(ov_model, images[:2])
    node = fov.conv_layers(ov_model)[0]["node"]
    variant = ov_graph.fp32_variant(q, ov_model, node)
    pred = fov.OpenVINOPredictor(variant, "int8", SIZE, 1, {})
    assert _weights_fp32(pred, node)
    others = [op.get_friendly_name() for op in variant.get_ordered_ops()
              if op.get_type_name() == "Convolution" and op.get_friendly_name() != node]
    assert others and not any(_weights_fp32(pred, o) for o in others)
    assert not any(_weights_fp32(fov.OpenVINOPredictor(q, "int8", SIZE, 1, {}), o)
                   for o in [node, *others])  # the quantized model itself is untouched
    macs = ov_graph.conv_macs(ov_model)
    assert set(macs) == {f"conv{i}" for i in range(len(others) + 1)}
    assert all(m > 0 for m in macs.values())


@needs_nncf
def test_int8_keep_fp32_skips_the_search(tiny, images, caplog):
    with caplog.at_level("WARNING"):
        pred = fov.compile_openvino(tiny, SIZE, "int8", threads=1, calib=images[:2],
                                    keep_fp32=["conv0"])
    # a saved choice rebuilt: nothing is decided, so no floor or probe warnings
    assert not [r for r in caplog.records if r.levelname == "WARNING" and
                r.name.startswith("fasterseg")], caplog.text
    info = pred.info
    assert info["fp32_nodes"] == ["conv0"] and len(info["fallback_steps"]) == 1
    assert info["fallback"] == [] and info["reached"] is None
    assert info["agreement_on"] == "calibration"
    node = info["ignored_scope"][0]
    assert _weights_fp32(pred, node)  # really left in fp32 by NNCF
    others = [op.get_friendly_name() for op in pred.model.get_ordered_ops()
              if op.get_type_name() == "Convolution" and op.get_friendly_name() != node]
    assert not any(_weights_fp32(pred, o) for o in others)  # the rest is int8
    with pytest.raises(UserError) as e:
        fov.compile_openvino(tiny, SIZE, "int8", calib=images[:2], keep_fp32=["conv999"])
    assert "keep_fp32: no convolution 'conv999'" in _one_line(e)
    with pytest.raises(UserError) as e:
        fov.compile_openvino(tiny, SIZE, "int8", calib=images[:2], min_agreement=99.5)
    assert "min_agreement must be within 0..1" in _one_line(e)


def test_auto_gives_openvino_int8_the_int8_floor_and_tune_images(tiny, monkeypatch):
    """bench --auto: openvino-int8 searches its fallback with the same floor (+ tuning margin)
    and the same calibration-split tuning images as the onnxruntime int8 path (OpenVINO itself
    is faked: this is about the wiring, and runs without it)."""
    from fasterseg.deploy import auto, paths

    seen = {}

    def fake(model_, size, dtype="fp32", **kw):
        seen[dtype] = kw
        return paths.build_candidate("eager-fp32", model_, size, threads=1)

    monkeypatch.setattr(fov, "compile_openvino", fake)
    monkeypatch.setattr(paths, "unavailable_reason", lambda n, d="cpu": None)
    choice = auto.choose(tiny, SIZE, threads=1, min_agreement=0.995,
                         candidates=["openvino-int8"], seconds=0.05, rounds=1, check_images=2,
                         calibration_images=1, tune_malloc=False)
    kw = seen["int8"]
    assert kw["min_agreement"] == pytest.approx(0.995 + auto.TUNE_MARGIN)
    assert len(kw["calib"]) == 1 and len(kw["check"]) == 2 and kw["keep_fp32"] is None
    assert choice["calibration"]["tune_images"] == 2


@needs_nncf
def test_export_openvino_int8_is_the_checked_path(tiny_arch, tmp_path, capsys):
    """``export --format openvino --dtype int8`` writes the IR of the checked path (fallback search
    to the floor, agreement reported), not an unchecked all-int8 model."""
    from fasterseg.cli.main import main
    from fasterseg.models import build_model
    from fasterseg.utils.io import torch_save

    torch.manual_seed(0)
    net = build_model(tiny_arch()).eval()
    ckpt = tmp_path / "tiny.pt"
    torch_save({"arch": net.arch.to_dict(), "model": net.state_dict()}, ckpt)
    assert main(["export", str(ckpt), "-o", str(tmp_path / "m.xml"), "--format", "openvino",
                 "--dtype", "int8", "--size", "64x96", "--threads", "1",
                 "--calibration-images", "2", "--check-images", "2", "--min-agreement", "0.3",
                 "--json"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["dtype"] == "int8" and 0.3 <= res["agreement"] <= 1.0
    assert "fp32_nodes" in res["int8"] and res["check"]["images"] == 2
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.bin").is_file()
    assert "pixels agree with fp32" in out


@needs_ov
def test_calls_from_two_threads_at_once_match_serial_calls(model, images):
    """``predict --workers 2`` calls one predictor from two threads at once: each thread has its
    own infer request (one shared request raced: busy errors or another frame's logits), and
    ``overlap(2)`` compiles two streams sharing the threads, with the same outputs."""
    from concurrent.futures import ThreadPoolExecutor

    pred = fov.compile_openvino(model, SIZE, "fp32", threads=2)
    xs = [images[k % 3] * (1 + k / 8) for k in range(12)]
    serial = [pred(x) for x in xs]
    assert pred.overlap(2) is pred
    assert (pred.streams, pred.info["streams"], pred.info["threads"]) == (2, 2, 2)
    for _ in range(3):
        with ThreadPoolExecutor(2) as ex:
            both = list(ex.map(pred, xs))
        assert all(torch.equal(a, b) for a, b in zip(serial, both))
    assert fov.compile_config("int8", 2, 2) == {"INFERENCE_PRECISION_HINT": "f32",
                                                "NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": "2"}
    assert fov.compile_config("fp32", 2)["PERFORMANCE_HINT"] == "LATENCY"
