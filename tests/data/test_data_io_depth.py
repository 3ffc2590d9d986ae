"""Training and evaluation read 16-bit and float images scaled to 8 bits, like predict does."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from fasterseg.data.io import read_image


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path, caplog):
    path = tmp_path / "deep.png"
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored with 16 bits
    with caplog.at_level(logging.INFO, logger="fasterseg.data.io"):
        rgb = read_image(path)
        read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    # convert("RGB") would clip every value above 255 to white: [0, 255, 255, 255]
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()
    said = [r.getMessage() for r in caplog.records if "16-bit" in r.getMessage()]
    assert len(said) <= 1  # said once per process, not once per image


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(path)
    assert read_image(path)[0, :, 1].tolist() == [0, 128, 255]


def test_8bit_images_are_unchanged(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    assert np.array_equal(read_image(tmp_path / "g.png"), np.repeat(rgb[..., :1], 3, axis=2))
