import json

import numpy as np
import pytest

from fasterseg.cli.main import main


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("fixture,preset", [
    ("cityscapes_root", "cityscapes"), ("camvid_root", "camvid"), ("bdd_root", "bdd100k"),
    ("bdd_old_root", "bdd100k"), ("folder_root", "folder"),
])  # fmt: skip
def test_check_clean_trees(fixture, preset, request, capsys):
    root = request.getfixturevalue(fixture)
    rc, out, err = run(capsys, "data", "check", str(root), "--preset", preset, "--json")
    assert rc == 0, out + err
    rep = last_json(out)
    assert rep["ok"] and rep["problems"] == [] and rep["images"] >= 4
    assert sum(rep["class_pixels"].values()) > 0 and "OK: no problems" in out
    assert rep["not_divisible_by_32"] == rep["images"]  # 24x40 images: informational only
    assert "not divisible by 32" in out


def test_check_one_split_and_counts(camvid_root, capsys):
    rc, out, _ = run(capsys, "data", "check", str(camvid_root), "--preset", "camvid",
                     "--split", "val", "--json")  # fmt: skip
    rep = last_json(out)
    assert rc == 0 and list(rep["splits"]) == ["val"] and rep["images"] == 2
    assert rep["splits"]["val"] == {"images": 2, "labels": 2, "has_labels": True, "pairs": 2}
    assert rep["ignore_pixels"] > 0 and len(rep["class_pixels"]) == 11


def test_check_reports_every_problem_kind(camvid_root, tools, capsys):
    tools.write_png(camvid_root / "trainannot" / "0001TP_000001.png", np.zeros((5, 7)))  # size
    tools.write_png(camvid_root / "trainannot" / "0001TP_000002.png", tools.label([3, 50], 0))
    (camvid_root / "valannot" / "0001TP_000000.png").unlink()  # image without label
    tools.write_png(camvid_root / "valannot" / "orphan.png", tools.label([1], 0))  # no image
    (camvid_root / "val" / "0001TP_000001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rc, out, err = run(capsys, "data", "check", str(camvid_root), "--preset", "camvid", "--json")
    assert rc == 1
    rep = last_json(out)
    kinds = {p["kind"]: p for p in rep["problems"]}
    assert set(kinds) == {"size_mismatch", "bad_label_values", "missing_label", "missing_image",
                          "unreadable"}  # fmt: skip
    assert kinds["size_mismatch"]["file"] == "trainannot/0001TP_000001.png"
    assert "5x7" in kinds["size_mismatch"]["detail"]
    assert "[50]" in kinds["bad_label_values"]["detail"]
    assert kinds["missing_label"]["file"] == "val/0001TP_000000.png"
    assert kinds["missing_image"]["file"] == "valannot/orphan.png"
    assert kinds["unreadable"]["file"] == "val/0001TP_000001.png"
    assert "PROBLEMS: 5" in out
    for p in rep["problems"]:
        assert p["file"] in out  # the table names every file


def test_check_user_errors_exit_1(tmp_path, camvid_root, capsys):
    rc, out, err = run(capsys, "data", "check", str(tmp_path / "nope"), "--preset", "cityscapes")
    assert rc == 1 and "does not exist" in err and "leftImg8bit" in err and "Traceback" not in err
    rc, _, err = run(capsys, "data", "check", str(camvid_root), "--preset", "camvid",
                     "--split", "x")  # fmt: skip
    assert rc == 1 and "split 'x' not found" in err
    rc, _, err = run(capsys, "data", "check", str(tmp_path), "--preset", "folder")
    assert rc == 1 and "dataset.yaml" in err
    rc, _, _ = run(capsys, "data", "check", str(tmp_path), "--preset", "nonsense")
    assert rc == 2


def test_synth_writes_a_folder_tree_that_checks_clean(tmp_path, capsys):
    out_dir = tmp_path / "synth"
    rc, out, _ = run(capsys, "data", "synth", str(out_dir), "--num", "3", "--val", "1",
                     "--size", "40x72", "--seed", "4", "--json")  # fmt: skip
    assert rc == 0 and last_json(out)["splits"] == {"train": 3, "val": 1}
    assert len(list((out_dir / "images" / "train").glob("*.png"))) == 3
    rc, out, _ = run(capsys, "data", "check", str(out_dir), "--preset", "folder", "--json")
    rep = last_json(out)
    assert rc == 0 and rep["images"] == 4 and rep["sizes"] == {"40x72": 4}
    from fasterseg.config.data import DataConfig
    from fasterseg.data import build_dataset, generate_scene

    ds = build_dataset(DataConfig(preset="folder", root=str(out_dir)), "val", train=False)
    assert ds.label_set.num_classes == 11
    _, lab = generate_scene(4, "val", 0, (40, 72))
    assert (ds[0]["label"].numpy() == lab).all()
    rc, _, err = run(capsys, "data", "synth", str(out_dir), "--size", "4x4")
    assert rc == 1 and "at least 8x8" in err


def test_presets_and_bare_command(capsys):
    rc, out, _ = run(capsys, "data", "presets", "--json")
    assert rc == 0 and {p["preset"] for p in last_json(out)["presets"]} >= {"cityscapes", "folder"}
    rc, out, _ = run(capsys, "data")
    assert rc == 2 and "check" in out
