import numpy as np
import pytest
import torch

from fasterseg.config.data import DataConfig
from fasterseg.data import build_dataset, read_label
from fasterseg.data.labels import cityscapes_label_ids_to_train_ids
from fasterseg.errors import UserError


def cfg(preset, root, **kw):
    kw.setdefault("crop_size", (16, 32))
    return DataConfig(preset=preset, root=str(root), workers=0, **kw)


def check_sample(s, n_classes):
    assert s["image"].dtype == torch.float32 and s["image"].shape[0] == 3
    assert s["label"].dtype == torch.long and s["label"].shape == s["image"].shape[1:]
    vals = s["label"].unique()
    assert ((vals < n_classes) | (vals == 255)).all()


def test_cityscapes_train_ids_and_label_ids(cityscapes_root):
    tr = build_dataset(cfg("cityscapes", cityscapes_root), "train", train=False)
    assert len(tr) == 4 and tr.label_set.num_classes == 19
    assert tr.files[0][1].name.endswith("_gtFine_labelTrainIds.png")
    s = tr[0]
    assert s["name"] == "aachen/aachen_000000_000019"
    check_sample(s, 19)
    assert (s["label"].numpy() == read_label(tr.files[0][1])).all()
    val = build_dataset(cfg("cityscapes", cityscapes_root), "val", train=False)
    assert len(val) == 2 and val.files[0][1].name.endswith("_gtFine_labelIds.png")
    raw = read_label(val.files[0][1])
    assert (val[0]["label"].numpy() == cityscapes_label_ids_to_train_ids(raw)).all()
    t = build_dataset(cfg("cityscapes", cityscapes_root), "train", train=True)[1]
    assert t["image"].shape == (3, 16, 32)


def test_camvid_void_becomes_ignore_and_lists_ignored(camvid_root):
    ds = build_dataset(cfg("camvid", camvid_root), "train", train=False)
    assert len(ds) == 3 and ds.label_set.num_classes == 11
    s = ds[0]
    raw = read_label(ds.files[0][1])
    lab = s["label"].numpy()
    assert (lab[raw == 11] == 255).all() and (lab[raw < 11] == raw[raw < 11]).all()
    assert s["name"] == "0001TP_000000"
    assert len(build_dataset(cfg("camvid", camvid_root), "test", train=False)) == 1


@pytest.mark.parametrize("fixture", ["bdd_root", "bdd_old_root"])
def test_bdd100k_layouts(fixture, request):
    root = request.getfixturevalue(fixture)
    ds = build_dataset(cfg("bdd100k", root), "val", train=False)
    assert len(ds) == 2 and ds.label_set.num_classes == 19
    check_sample(ds[1], 19)
    assert "_train_id" not in ds[0]["name"] and "/" not in ds[0]["name"]
    assert ds[0]["label"].shape == (24, 40)


def test_bdd_old_layout_with_root_at_seg(bdd_old_root):
    assert len(build_dataset(cfg("bdd100k", bdd_old_root / "seg"), "train", train=True)) == 2


def test_folder_with_splits(folder_root):
    ds = build_dataset(cfg("folder", folder_root), "train", train=False)
    assert len(ds) == 3 and ds.label_set.class_names == ["background", "road", "car"]
    assert ds.label_set.palette[1] == (128, 64, 128)
    assert ds[0]["name"] == "sub/img0"
    check_sample(ds[0], 3)
    assert len(build_dataset(cfg("folder", folder_root), "val", train=False)) == 2


def test_folder_flat_with_id_map(tmp_path, tools):
    root = tmp_path / "flat"
    for k in range(2):
        tools.write_png(root / "images" / f"a{k}.png", tools.image(k))
        tools.write_png(root / "labels" / f"a{k}_mask.png", tools.label([7, 26, 0, 99], k))
    (root / "dataset.yaml").write_text(
        "classes: [road, car]\nid_to_train_id: {7: 0, 26: 1}\nlabel_suffix: _mask.png\n"
    )
    ds = build_dataset(cfg("folder", root), "train", train=False)
    assert len(ds) == 2 and ds.label_set.name == "flat"
    raw = read_label(ds.files[0][1])
    lab = ds[0]["label"].numpy()
    assert (lab[raw == 7] == 0).all() and (lab[raw == 26] == 1).all()
    assert (lab[(raw == 0) | (raw == 99)] == 255).all()  # unmapped ids are ignored


def test_folder_bad_yaml(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="dataset.yaml"):
        build_dataset(cfg("folder", tmp_path), "train", train=True)
    (tmp_path / "dataset.yaml").write_text("classes: [a, b]\ncolors: 3\n")
    with pytest.raises(UserError, match="unknown key 'colors'"):
        build_dataset(cfg("folder", tmp_path), "train", train=True)
    (tmp_path / "dataset.yaml").write_text("classes: [a, b]\npalette: [[1, 2, 3]]\n")
    with pytest.raises(UserError, match="palette"):
        build_dataset(cfg("folder", tmp_path), "train", train=True)


def test_missing_root_and_split_name_the_layout(tmp_path, camvid_root, cityscapes_root):
    with pytest.raises(UserError, match="does not exist.*expected layout"):
        build_dataset(cfg("cityscapes", tmp_path / "nope"), "train", train=True)
    with pytest.raises(UserError, match=r"split 'extra' not found.*splits found: train, val, test"):
        build_dataset(cfg("camvid", camvid_root), "extra", train=True)
    with pytest.raises(UserError, match=r"leftImg8bit/test"):
        build_dataset(cfg("cityscapes", cityscapes_root), "test", train=False)
    with pytest.raises(UserError, match="root is required"):
        build_dataset(DataConfig(preset="camvid"), "train", train=True)


def test_missing_label_partner(camvid_root):
    (camvid_root / "trainannot" / "0001TP_000001.png").unlink()
    with pytest.raises(UserError, match=r"1 image\(s\).*0001TP_000001.png"):
        build_dataset(cfg("camvid", camvid_root), "train", train=True)


def test_size_mismatch_and_bad_values_name_the_file(camvid_root, tools):
    tools.write_png(camvid_root / "trainannot" / "0001TP_000001.png", np.zeros((5, 5)))
    tools.write_png(camvid_root / "trainannot" / "0001TP_000002.png", tools.label([0, 40], 1))
    ds = build_dataset(cfg("camvid", camvid_root), "train", train=True)
    with pytest.raises(UserError, match=r"size mismatch.*0001TP_000001.png.*5x5"):
        ds[1]
    with pytest.raises(UserError, match=r"0001TP_000002.png: values \[40\] are outside"):
        ds[2]


def test_corrupt_image_error_or_skip(camvid_root, caplog):
    (camvid_root / "train" / "0001TP_000001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = build_dataset(cfg("camvid", camvid_root), "train", train=True)
    with pytest.raises(UserError, match=r"cannot read image .*0001TP_000001.png"):
        ds[1]
    ds = build_dataset(cfg("camvid", camvid_root, skip_corrupt=True), "train", train=True)
    s = ds[(1, 0)]
    assert s["name"] == "0001TP_000002" and "skipping" in caplog.text


def test_colour_label_refused(camvid_root, tools):
    tools.write_png(camvid_root / "trainannot" / "0001TP_000000.png", tools.image(3))
    ds = build_dataset(cfg("camvid", camvid_root), "train", train=False)
    with pytest.raises(UserError, match="single-channel"):
        ds[0]


def test_test_split_without_labels_for_eval(bdd_root, tools):
    tools.write_jpg(bdd_root / "images" / "10k" / "test" / "t1.jpg", tools.image(1))
    ds = build_dataset(cfg("bdd100k", bdd_root), "test", train=False)
    assert ds.files[0][1] is None and (ds[0]["label"] == 255).all()
    with pytest.raises(UserError, match="no label folder"):
        build_dataset(cfg("bdd100k", bdd_root), "test", train=True)


def test_example_dataset_yaml_parses():
    from pathlib import Path

    from fasterseg.data.presets import load_folder_spec

    path = Path(__file__).resolve().parents[2] / "configs" / "data" / "dataset.yaml"
    spec = load_folder_spec(path)
    assert spec.label_set.num_classes == 7 and len(spec.label_set.palette) == 7
    assert spec.label_suffix == ".png" and spec.ignore_value == 255


def test_folder_with_custom_suffixes(tmp_path, tools):
    root = tmp_path / "cs_like"
    tools.write_png(root / "images" / "val" / "x_leftImg8bit.png", tools.image(0))
    tools.write_png(root / "labels" / "val" / "x_gtFine_labelTrainIds.png", tools.label([0, 1], 0))
    tools.write_png(root / "labels" / "val" / "x_gtFine_color.png", tools.image(1))
    (root / "dataset.yaml").write_text(
        "classes: [a, b]\nimage_suffix: _leftImg8bit.png\n"
        "label_suffix: _gtFine_labelTrainIds.png\n"
    )
    ds = build_dataset(cfg("folder", root), "val", train=False)
    assert len(ds) == 1 and ds[0]["name"] == "x"
    assert ds.files[0][1].name == "x_gtFine_labelTrainIds.png"
