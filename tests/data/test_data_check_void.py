"""Labels with no valid pixel (every pixel void/ignore) must not pass ``data check`` silently.

An all-void training split trains with a loss of 0 and evaluates to an mIoU of NaN, so a split
with no pixel of any class fails the check; a single all-void label file is a warning.
"""

import json

import numpy as np

from fasterseg.cli.main import main
from fasterseg.data.check import check_dataset


def _check(capsys, root, *extra):
    rc = main(["data", "check", str(root), "--preset", "folder", "--json", *extra])
    out, err = capsys.readouterr()
    return rc, out, json.loads(out.strip().splitlines()[-1])


def _void(tools, path):
    tools.write_png(path, np.full((tools.H, tools.W), 255, np.uint8))


def test_all_void_split_fails_the_check(folder_root, tools, capsys):
    for k in range(2):
        _void(tools, folder_root / "labels" / "val" / "sub" / f"img{k}.png")
    rc, out, rep = _check(capsys, folder_root)
    assert rc == 1 and not rep["ok"]
    kinds = [(p["kind"], p["split"]) for p in rep["problems"]]
    assert kinds == [("all_void_split", "val")]
    assert "none of its 2 labels has a pixel" in rep["problems"][0]["detail"]
    assert "PROBLEMS: 1 (all_void_split 1)" in out and "OK: no problems" not in out


def test_whole_dataset_all_void_fails(folder_root, tools, capsys):
    for split, n in (("train", 3), ("val", 2)):
        for k in range(n):
            _void(tools, folder_root / "labels" / split / "sub" / f"img{k}.png")
    rc, out, rep = _check(capsys, folder_root)
    assert rc == 1
    assert {p["split"] for p in rep["problems"]} == {"train", "val"}
    assert sum(rep["class_pixels"].values()) == 0


def test_single_void_file_is_a_warning_not_a_failure(folder_root, tools, capsys):
    _void(tools, folder_root / "labels" / "train" / "sub" / "img1.png")
    rc, out, rep = _check(capsys, folder_root)
    assert rc == 0 and rep["ok"] and rep["problems"] == []
    assert rep["warnings"] == [{
        "split": "train", "kind": "all_void", "file": "labels/train/sub/img1.png",
        "detail": "every pixel is void/ignore (255): this label teaches nothing",
    }]
    assert rep["warning_counts"] == {"all_void": 1}
    assert "WARNINGS: 1 (all_void 1)" in out and "labels/train/sub/img1.png" in out
    assert "OK: no problems found (1 warning(s) above)" in out


def test_clean_tree_has_no_warnings(folder_root):
    rep = check_dataset("folder", folder_root)
    assert rep["ok"] and rep["warnings"] == [] and rep["warning_counts"] == {}
