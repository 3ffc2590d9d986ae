import numpy as np
import pytest

from fasterseg.config.data import DataConfig
from fasterseg.data import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    CITYSCAPES_PALETTE,
    CITYSCAPES_TRAIN_ID_TO_LABEL_ID,
    LabelSet,
    cityscapes_label_ids_to_train_ids,
    colorize,
    get_label_set,
    train_ids_to_label_ids,
)
from fasterseg.errors import UserError

# Official table (cityscapesScripts): labelId -> trainId of the 19 evaluated classes.
OFFICIAL = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


def test_label_ids_to_train_ids_every_id():
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    out = cityscapes_label_ids_to_train_ids(ids)
    for i in range(34):
        assert out.flat[i] == OFFICIAL.get(i, 255), i
    assert cityscapes_label_ids_to_train_ids(np.array([[255]], np.uint8))[0, 0] == 255
    evaluated = sorted(v for v in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.values() if v != 255)
    assert evaluated == list(range(19))


def test_train_id_to_label_id_roundtrip():
    assert len(CITYSCAPES_TRAIN_ID_TO_LABEL_ID) == 19
    train = np.arange(19).reshape(1, 19)
    ids = train_ids_to_label_ids(train)
    assert ids.dtype == np.uint8
    assert (cityscapes_label_ids_to_train_ids(ids) == train).all()
    assert train_ids_to_label_ids(np.array([255]))[0] == 0  # ignore -> "unlabeled"


def test_builtin_label_sets_need_no_files():
    for preset, n in (("synthetic", 11), ("cityscapes", 19), ("bdd100k", 19), ("camvid", 11)):
        ls = get_label_set(DataConfig(preset=preset, root="/nonexistent"))
        assert isinstance(ls, LabelSet) and ls.num_classes == n == len(ls.palette)
        assert ls.ignore_index == 255
    cs = get_label_set(DataConfig(preset="cityscapes", root="/x"))
    assert cs.class_names == CITYSCAPES_CLASSES and cs.palette[0] == (128, 64, 128)
    assert cs.train_id_to_label_id == CITYSCAPES_TRAIN_ID_TO_LABEL_ID


def test_num_classes_mismatch_is_user_error():
    with pytest.raises(UserError, match="num_classes"):
        get_label_set(DataConfig(preset="cityscapes", root="/x", num_classes=11))
    ok = DataConfig(preset="cityscapes", root="/x", num_classes=19)
    assert get_label_set(ok).num_classes == 19


def test_colorize_palette_and_ignore():
    lab = np.array([[0, 1], [255, 18]])
    rgb = colorize(lab, CITYSCAPES_PALETTE)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == CITYSCAPES_PALETTE[0]
    assert tuple(rgb[1, 1]) == CITYSCAPES_PALETTE[18]
    assert tuple(rgb[1, 0]) == (0, 0, 0)
    assert tuple(colorize(np.array([[40]]), CITYSCAPES_PALETTE)[0, 0]) == (0, 0, 0)
