"""Calibration images: spec parsing, real-format folders, generated scenes (tiny, no ../shared)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasterseg.deploy.calibration import calibration_images, fit_to_size, parse_calibration_spec
from fasterseg.errors import UserError

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


@pytest.fixture
def camvid_root(tmp_path: Path) -> Path:
    """CamVid's SegNet layout: train (4 images, each one flat colour) and val (2), 36x48."""
    root = tmp_path / "camvid"
    for split, n in (("train", 4), ("val", 2)):
        for k in range(n):
            name = f"0001TP_{k:06d}.png"
            value = 40 * k + (100 if split == "val" else 0)
            _png(root / split / name, np.full((36, 48, 3), value))
            _png(root / f"{split}annot" / name, np.full((36, 48), k % 11))
    return root


@pytest.mark.parametrize("text,expected", [
    ("camvid:../data/camvid", ("camvid", "../data/camvid")),
    ("Cityscapes:/d/city", ("cityscapes", "/d/city")),
    ("folder:C:/data/x", ("folder", "C:/data/x")),  # only the first colon splits
    ("synthetic", ("synthetic", "")),
])
def test_parse_spec(text, expected):
    assert parse_calibration_spec(text) == expected


@pytest.mark.parametrize("text,match", [
    ("camvid", "expected PRESET:ROOT"),
    ("imagenet:/data", "unknown preset 'imagenet'"),
    ("camvid:", "folder is missing"),
    ("synthetic:/x", "takes no folder"),
    ("", "expected PRESET:ROOT"),
])
def test_parse_spec_errors_are_one_line(text, match):
    with pytest.raises(UserError, match=match) as e:
        parse_calibration_spec(text)
    assert "\n" not in str(e.value)


def test_real_folder_gives_n_normalised_tensors(camvid_root):
    images, info = calibration_images(f"camvid:{camvid_root}", (64, 96), 3, split="train")
    assert len(images) == 3
    assert all(x.shape == (1, 3, 64, 96) and x.dtype == torch.float32 for x in images)
    assert info["generated"] is False and info["split"] == "train" and info["images"] == 3
    assert len(info["files"]) == 3
    # each file is one flat grey value 40*k: normalisation is (v/255 - mean) / std
    values = sorted(round(float((x * STD + MEAN)[0, 0].mean()) * 255) for x in images)
    assert set(values) <= {0, 40, 80, 120}
    for x in images:
        assert torch.allclose(x * STD + MEAN, (x * STD + MEAN)[:, :1, :1, :1], atol=1e-5)


def test_real_folder_is_deterministic_and_seed_dependent(camvid_root):
    spec = f"camvid:{camvid_root}"
    a = calibration_images(spec, (32, 32), 2, seed=0)[1]["files"]
    assert a == calibration_images(spec, (32, 32), 2, seed=0)[1]["files"]
    picks = {tuple(calibration_images(spec, (32, 32), 2, seed=s)[1]["files"]) for s in range(8)}
    assert len(picks) > 1


def test_val_split_is_read(camvid_root):
    images, info = calibration_images(f"camvid:{camvid_root}", (36, 48), 2, split="val")
    grey = sorted(round(float((x * STD + MEAN).mean()) * 255) for x in images)
    assert grey == [100, 140] and info["split"] == "val"


def test_too_few_or_missing_is_one_line(camvid_root, tmp_path):
    with pytest.raises(UserError, match="has 2 images, 5 requested"):
        calibration_images(f"camvid:{camvid_root}", (32, 32), 5, split="val")
    with pytest.raises(UserError, match="does not exist") as e:
        calibration_images(f"camvid:{tmp_path / 'nope'}", (32, 32), 1)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="split 'test' not found"):
        calibration_images(f"camvid:{camvid_root}", (32, 32), 1, split="test")
    with pytest.raises(UserError, match=">= 1"):
        calibration_images(f"camvid:{camvid_root}", (32, 32), 0)


def test_none_gives_generated_scenes_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="fasterseg.deploy.calibration"):
        images, info = calibration_images(None, (64, 96), 2, split="val")
    assert info["generated"] is True and info["source"] == "generated"
    assert len(images) == 2 and images[0].shape == (1, 3, 64, 96)
    assert "--calibration-data" in caplog.text
    assert not torch.equal(images[0], images[1])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fasterseg.deploy.calibration"):
        calibration_images("synthetic", (64, 96), 1)
    assert caplog.text == ""  # asked for explicitly: no warning


def test_fit_to_size_covers_then_centre_crops():
    im = np.zeros((10, 40, 3), np.uint8)
    im[:, 18:22] = 255  # a bright band in the middle: columns 36..44 after scaling
    out = fit_to_size(im, (20, 20))  # scale x2 to 20x80, keep the centre 20 columns
    assert out.shape == (20, 20, 3)
    assert out[:, 8:12].min() > 200 and out[:, :3].max() < 50 and out[:, -3:].max() < 50
    assert fit_to_size(im, (10, 40)) is im or np.array_equal(fit_to_size(im, (10, 40)), im)


def test_small_split_gives_the_fallback_search_only_what_is_left(camvid_root):
    """`export --calibration-images 4` on a split of 4 images: the extra images the fp32
    fallback search would tune on shrink to what the split holds beyond them (it used to ask for
    4 + 4 and fail)."""
    from fasterseg.deploy.auto import TUNE_IMAGES
    from fasterseg.deploy.calibration import available_images, tune_image_count

    def _tune_images(spec, split, calibration, check):  # as auto's chooser and export ask
        return tune_image_count(spec, split, calibration, min(TUNE_IMAGES, check))

    spec = f"camvid:{camvid_root}"
    assert available_images(spec, "train") == 4 and available_images(None) is None
    assert _tune_images(spec, "train", 4, 4) == 0
    assert _tune_images(spec, "train", 2, 4) == 2
    assert _tune_images(spec, "train", 1, 2) == 2  # never more than the check images
    assert _tune_images(None, "train", 8, 16) == TUNE_IMAGES  # generated: unlimited
