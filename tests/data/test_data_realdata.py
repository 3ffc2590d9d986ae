"""The real CamVid copy (FASTERSEG_CAMVID, else ../shared/data/camvid next to the checkout, or
under FASTERSEG_SHARED; skipped when absent)."""

import os
from pathlib import Path

import pytest

from fasterseg.config.data import DataConfig
from fasterseg.data import build_dataset, build_train_loader

CANDIDATES = [
    os.environ.get("FASTERSEG_CAMVID", ""),
    str(Path(os.environ.get("FASTERSEG_SHARED") or Path(__file__).resolve().parents[3] / "shared")
        / "data" / "camvid"),
]
ROOT = next((p for p in CANDIDATES if p and (Path(p) / "trainannot").is_dir()), None)

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(ROOT is None, reason="real CamVid copy not found"),
]


def test_camvid_pairs_and_samples():
    cfg = DataConfig(preset="camvid", root=ROOT, crop_size=(256, 256), workers=0)
    tr = build_dataset(cfg, "train", train=True)
    va = build_dataset(cfg, "val", train=False)
    assert len(tr) == 367 and len(va) == 101
    s = va[0]
    assert s["image"].shape == (3, 360, 480) and s["label"].shape == (360, 480)
    vals = s["label"].unique()
    assert ((vals < 11) | (vals == 255)).all() and (vals == 255).any()
    b = next(iter(build_train_loader(tr, 2, 1, seed=0, epoch=0, workers=0)))
    assert b["image"].shape == (2, 3, 256, 256)
