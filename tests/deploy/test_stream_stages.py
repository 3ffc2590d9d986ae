"""The cheaper per-frame stages of ``predict``'s stream give exactly the reference results.

Normalisation by table lookup, argmax by a running maximum, PNGs from ``fasterseg.utils.png`` and
two frames in the network at once (``--workers 2``) must change no label, colour or overlay
pixel: each is compared with the straightforward computation (numpy arithmetic, ``np.argmax``,
Pillow's PNG encoder, the eager model through ``infer_image``) on tiny generated data.
"""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fasterseg.cli.main import main
from fasterseg.deploy.stream import Normalizer, argmax_labels
from fasterseg.utils.png import deflate_engine, encode_png, read_rgb8

HAVE_ISAL = importlib.util.find_spec("isal") is not None
HAVE_SPNG = importlib.util.find_spec("pyspng") is not None


def test_normalizer_table_equals_the_arithmetic_for_every_value():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    values = np.arange(256, dtype=np.uint8)  # every uint8 value in every channel
    rgb = np.stack([np.roll(values, 85 * k) for k in range(3)], -1).reshape(16, 16, 3)
    for cl in (False, True):
        norm = Normalizer(mean, std, pad=False, channels_last=cl)
        ref = (rgb.astype(np.float32) - norm.shift) * norm.scale  # the old two-pass arithmetic
        x = norm(rgb)
        assert x.dtype == torch.float32
        assert np.array_equal(x[0].permute(1, 2, 0).numpy(), ref)  # bit for bit
    padded = Normalizer(mean, std)(rgb[:5, :7])
    assert padded.shape == (1, 3, 64, 64) and not padded[..., 5:, :].any()
    assert not padded[..., :, 7:].any()


@pytest.mark.parametrize("channels_last", [False, True])
def test_argmax_labels_is_numpy_argmax_with_ties_and_nan(channels_last):
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 4, (7, 19, 23)).astype(np.float32)  # many exact ties
    logits[2, 4, 5] = np.nan
    logits[0, 6, 7] = np.nan
    if channels_last:  # the layout TorchScript's NHWC output gives
        logits = np.ascontiguousarray(logits.transpose(1, 2, 0)).transpose(2, 0, 1)
    for scores in (logits, logits[:, :11, :13]):  # and a cropped view, as predict takes
        ids = argmax_labels(scores)
        assert ids.dtype == np.uint8
        assert np.array_equal(ids, scores.argmax(0))
    finite = np.nan_to_num(logits, nan=0.0)
    assert np.array_equal(argmax_labels(finite), finite.argmax(0))
    many = rng.standard_normal((300, 3, 4)).astype(np.float32)  # > 256 classes: int32
    ids = argmax_labels(many)
    assert ids.dtype == np.int32 and np.array_equal(ids, many.argmax(0))


DEFLATES = ["zlib", pytest.param("isal", marks=pytest.mark.skipif(
    not HAVE_ISAL, reason="isal is not installed (pip install 'fasterseg[fast-png]')"))]


@pytest.mark.parametrize("deflate", DEFLATES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (37, 53), (37, 53, 3), (2, 3, 3)])
def test_encode_png_gives_the_pixels_pillow_reads(shape, deflate):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    a[len(a) // 2:] = a[0]  # runs, repeated rows: what the filter and RLE act on
    for level in (0, 1, 6):
        im = Image.open(io.BytesIO(encode_png(a, level=level, deflate=deflate)))
        assert im.mode == ("RGB" if a.ndim == 3 else "L")
        assert np.array_equal(np.asarray(im), a)


def test_deflate_engine_auto_takes_isal_when_installed():
    assert deflate_engine("zlib") == "zlib"
    assert deflate_engine("auto") == ("isal" if HAVE_ISAL else "zlib")
    with pytest.raises(ValueError):
        deflate_engine("brotli")


@pytest.mark.parametrize("deflate", DEFLATES)
def test_encode_png_palette_shows_the_colours_pillow_shows(deflate):
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 5, (13, 17), dtype=np.uint8)
    pal = rng.integers(0, 256, (5, 3), dtype=np.uint8).tobytes()
    ours = Image.open(io.BytesIO(encode_png(ids, pal, deflate=deflate)))
    ref = Image.fromarray(ids)
    ref.putpalette(pal)
    assert ours.mode == "P" and np.array_equal(np.asarray(ours), ids)
    assert np.array_equal(np.asarray(ours.convert("RGB")), np.asarray(ref.convert("RGB")))
    with pytest.raises(ValueError):
        encode_png(ids.astype(np.int32))


@pytest.mark.skipif(not HAVE_SPNG, reason="pyspng is not installed")
def test_read_rgb8_gives_pillows_pixels_or_leaves_the_file_to_pillow(tmp_path):
    """libspng reads 8-bit RGB PNGs (plain and interlaced) exactly as Pillow does; every other
    file is None, so the stream reads it with Pillow, whose errors name the file."""
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "i.png", interlace=1)
    for name in ("a.png", "i.png"):
        got = read_rgb8(tmp_path / name)
        assert got is not None and got.dtype == np.uint8
        assert np.array_equal(got, np.asarray(Image.open(tmp_path / name)))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:60])
    for name in ("grey.png", "rgba.png", "deep.png", "photo.jpg", "cut.png", "missing.png"):
        assert read_rgb8(tmp_path / name) is None, name


@pytest.fixture
def ckpt(tmp_path, tiny_arch):
    from fasterseg.engine.checkpoint import arch_to_dict, save_checkpoint
    from fasterseg.models import build_model

    torch.manual_seed(0)
    model = build_model(tiny_arch())
    return save_checkpoint({"model": model.state_dict(), "arch": arch_to_dict(model.arch),
                            "num_classes": model.num_classes}, tmp_path / "run" / "best.pt")


def test_predict_outputs_equal_the_reference_path(ckpt, tmp_path, capsys):
    """Labels, colours and overlays of ``predict`` (1 and 2 workers) against the reference:
    evaluation normalisation, ``infer_image``, ``np.argmax``, palette lookup, integer blend."""
    from fasterseg.data.io import read_image
    from fasterseg.data.transforms import normalize
    from fasterseg.evaluation import infer_image
    from fasterseg.models import load_model

    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, (h, w) in enumerate([(64, 96), (64, 96), (50, 70), (64, 96), (64, 96)]):
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(photos / f"p{k}.png")
    outs = {}
    for workers in ("1", "2"):
        out = outs[workers] = tmp_path / f"out{workers}"
        assert main(["predict", str(ckpt), str(photos), "-o", str(out), "--overlay",
                     "--threads", "2", "--workers", workers, "--json"]) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["workers"] == int(workers) and res["images"] == 5
        assert res["threads_per_call"] == 2 // int(workers)
    from fasterseg.data.labels import CITYSCAPES_PALETTE, default_palette
    from fasterseg.evaluation.predictions import _palette_array

    model, info = load_model(ckpt)
    n = info["num_classes"]
    pal = _palette_array(CITYSCAPES_PALETTE if n == 19 else default_palette(n), n)
    for p in sorted(photos.iterdir()):
        rgb = read_image(p)
        x = normalize(rgb, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        with torch.inference_mode():
            ids = infer_image(model, x).argmax(0).numpy().astype(np.uint8)
        col = pal[ids]
        mix = ((rgb.astype(np.uint16) * 128 + col.astype(np.uint16) * 128 + 128) >> 8)
        for out in outs.values():
            got = {d: Image.open(out / d / f"{p.stem}.png") for d in ("labels", "color", "overlay")}
            assert np.array_equal(np.asarray(got["labels"]), ids), p
            assert got["color"].mode == "P"
            assert np.array_equal(np.asarray(got["color"].convert("RGB")), col), p
            assert np.array_equal(np.asarray(got["overlay"]), mix.astype(np.uint8)), p
