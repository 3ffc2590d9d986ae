import json

import pytest
import torch

from fasterseg.bench.quantize import int8_available

pytestmark = pytest.mark.skipif(int8_available() is None,
                                reason="this torch build has no quantized CPU engine")

SIZE = (64, 128)


@pytest.fixture(scope="module")
def trained_tiny():
    """The student after a few Adam steps on generated scenes (sharp-ish logits)."""
    from fasterseg.data.synthetic import generate_scene
    from fasterseg.data.transforms import normalize
    from fasterseg.models import create_model

    torch.manual_seed(0)
    model = create_model("fasterseg_student")
    images, labels = [], []
    for i in range(4):
        image, label = generate_scene(0, "train", i, SIZE)
        images.append(normalize(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
        labels.append(torch.as_tensor(label).long())
    x, y = torch.stack(images), torch.stack(labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(12):
        out = model(x)
        loss = sum(torch.nn.functional.cross_entropy(o, y, ignore_index=255) for o in out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_quantized_model_agrees_with_fp32(trained_tiny):
    from fasterseg.bench.quantize import calibration_images, quantize_int8

    before = {k: v.clone() for k, v in trained_tiny.state_dict().items()}
    q = quantize_int8(trained_tiny, SIZE, calibration_images(SIZE, 2, seed=0),
                      bias_correction=False)
    assert q.logit_offset is None
    convs = [m for m in q.trunk.modules() if type(m).__name__ == "ConvReLU2d"]
    assert convs, "no fused int8 conv-ReLU in the quantized trunk"
    (x,) = calibration_images(SIZE, 1, seed=0, split="val")
    with torch.inference_mode():
        ref, out = trained_tiny(x), q(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agree > 0.8
    # the caller's model is left alone (BN not folded into it, weights unchanged)
    assert all(torch.equal(before[k], v) for k, v in trained_tiny.state_dict().items())
    with pytest.raises(ValueError, match="calibrated for 64x128"):
        q(torch.zeros(1, 3, 32, 64))


def test_bench_cli_int8_json(tmp_path, capsys, trained_tiny):
    from fasterseg.cli.main import main
    from fasterseg.utils.io import torch_save

    ckpt = tmp_path / "tiny.pt"
    torch_save({"arch": trained_tiny.arch.to_dict(), "model": trained_tiny.state_dict()}, ckpt)
    pytest.importorskip("fasterseg.deploy.int8")  # bench --dtype int8 runs the new int8 path
    rc = main(["bench", str(ckpt), "--size", "64x128", "--threads", "1", "--seconds", "0.1",
               "--dtype", "int8", "--check-images", "2", "--json"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0
    assert {"latency_ms", "fps", "agreement", "quant_engine", "calibration_images"} <= set(res)
    assert res["dtype"] == "int8" and res["calibration_images"] == 8
    assert res["check"]["split"] == "val" and res["calibration"]["split"] == "train"
    assert res["latency_ms"] > 0 and 0.8 < res["agreement"] <= 1.0


def test_bench_cli_int8_user_errors(capsys):
    from fasterseg.cli.main import main

    assert main(["bench", "fasterseg_student", "--size", "64x128", "--dtype", "int8",
                 "--backend", "onnxruntime"]) == 1
    assert "int8" in capsys.readouterr().err


def test_keep_fp32_and_observer(trained_tiny):
    from fasterseg.bench.quantize import calibration_images, quantize_int8

    cal = calibration_images(SIZE, 1, seed=0)
    q = quantize_int8(trained_tiny, SIZE, cal, keep_fp32=["net.head.classifier"],
                      observer="minmax")
    assert type(q.trunk.get_submodule("net.head.classifier")) is torch.nn.Conv2d
    assert q.logit_offset is not None and q.logit_offset.shape == (trained_tiny.arch.num_classes,)
    (x,) = calibration_images(SIZE, 1, seed=0, split="val")
    with torch.inference_mode():
        agree = (q(x).argmax(1) == trained_tiny(x).argmax(1)).float().mean().item()
    assert agree > 0.8
    with pytest.raises(ValueError, match="keep_fp32: no module 'net.nope'"):
        quantize_int8(trained_tiny, SIZE, cal, keep_fp32=["net.nope"])
    with pytest.raises(ValueError, match="observer"):
        quantize_int8(trained_tiny, SIZE, cal, observer="percentile")


def test_bench_cli_deprecated_int8_flags_and_user_error(capsys):
    from fasterseg.cli.main import main

    # --keep-fp32 / --observer belonged to the torch.ao path: now a one-line warning each
    assert main(["bench", "fasterseg_student", "--size", "64x128", "--dtype", "int8",
                 "--keep-fp32", "net.nope", "--observer", "minmax",
                 "--calibration-images", "0"]) == 1
    err = capsys.readouterr().err
    assert "--keep-fp32 is deprecated and ignored" in err and "--observer is deprecated" in err
    assert "--calibration-images" in err
