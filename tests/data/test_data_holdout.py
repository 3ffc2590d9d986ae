"""Cross-sequence check: whole sequences of the training split held out as split 'holdout'."""

from __future__ import annotations

import pytest

from fasterseg.config.data import DataConfig
from fasterseg.data import build_dataset
from fasterseg.errors import UserError


@pytest.fixture
def two_sequences(tmp_path, tools):
    root = tmp_path / "camvid"
    for split, names in (("train", ["0001TP_0001", "0001TP_0002", "0006R0_0001"]),
                         ("val", ["0016E5_0001"])):
        for k, n in enumerate(names):
            tools.write_png(root / split / f"{n}.png", tools.image(k))
            tools.write_png(root / f"{split}annot" / f"{n}.png", tools.label(range(11), k))
    return root


def test_holdout_prefixes_split_training_files(two_sequences):
    cfg = DataConfig(preset="camvid", root=str(two_sequences), holdout_prefixes=["0006R0"],
                     crop_size=(32, 32), scales=[1.0])
    train = build_dataset(cfg, "train", train=True)
    held = build_dataset(cfg, "holdout", train=False)
    assert all(n.startswith("0001TP") for n in train.names)
    assert len(train) == 2 and len(held) == 1
    assert all(n.startswith("0006R0") for n in held.names)
    assert len(build_dataset(cfg, "val", train=False)) == 1  # other splits untouched


def test_no_holdout_keeps_every_training_file(two_sequences):
    cfg = DataConfig(preset="camvid", root=str(two_sequences), crop_size=(32, 32), scales=[1.0])
    assert len(build_dataset(cfg, "train", train=True)) == 3
    with pytest.raises(UserError, match="holdout_prefixes"):
        build_dataset(cfg, "holdout", train=False)


@pytest.mark.parametrize("prefixes", [["0009XX"], ["0001TP", "0006R0"]])
def test_holdout_that_matches_nothing_or_everything_is_a_user_error(two_sequences, prefixes):
    cfg = DataConfig(preset="camvid", root=str(two_sequences), holdout_prefixes=prefixes,
                     crop_size=(32, 32), scales=[1.0])
    split = "holdout" if prefixes == ["0009XX"] else "train"
    with pytest.raises(UserError, match="holdout_prefixes"):
        build_dataset(cfg, split, train=split == "train")
