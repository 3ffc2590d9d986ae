"""Issue 13: `eval` and `predict` never lose or corrupt the user's data; any image size; one loader.

Items covered: 1 (ground truth never overwritten), 3 (output folder checked before evaluating,
metrics shown even when saving fails), 8 (no silent overwrite; predict's outputs are never its
inputs), 10 (tiny images / sizes), 11 (unreadable and 16-bit inputs), 16 (one checkpoint loader).
Everything runs on a tiny architecture with a 1/32 branch and a few 64x96 PNGs (seconds on CPU).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasterseg.cli.main import main

FOLDER_YAML = """name: toy
classes: [background, road, car]
palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
ignore_index: 255
"""

def _png(path: Path, arr) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr)).save(path)
    return path


def _rgb(seed: int, h: int = 64, w: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _save_ckpt(path: Path, arch: dict, extra_state: dict | None = None) -> Path:
    from fasterseg.engine.checkpoint import arch_to_dict, save_checkpoint
    from fasterseg.models import build_model

    model = build_model(arch)
    state = model.state_dict()
    state.update(extra_state or {})
    return save_checkpoint({"model": state, "arch": arch_to_dict(model.arch),
                            "num_classes": model.num_classes}, path)


@pytest.fixture
def ckpt(tmp_path, tiny_arch) -> Path:
    return _save_ckpt(tmp_path / "run" / "best.pt", tiny_arch())


@pytest.fixture
def flat_dataset(tmp_path) -> Path:
    """The flat `folder` layout: D/images/<name>.png, D/labels/<name>.png, D/dataset.yaml."""
    root = tmp_path / "D"
    for k in range(2):
        _png(root / "images" / f"img{k}.png", _rgb(k))
        lab = np.random.default_rng(k).choice(np.array([0, 1, 2, 255], np.uint8), (64, 96))
        _png(root / "labels" / f"img{k}.png", lab)
    (root / "dataset.yaml").write_text(FOLDER_YAML)
    return root


def _error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines()
           if not ln.startswith(("folder dataset", "warning"))]
    assert len(err) == 1 and err[0].startswith("error: "), err  # exactly one line
    assert "--debug" not in err[0], err  # a user error, not an internal one
    return err[0]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# ------------------------------------------------------------------ item 1: ground truth is safe
def test_eval_save_pred_into_a_flat_folder_dataset_is_refused(ckpt, flat_dataset, tmp_path, capsys):
    before = _digest(flat_dataset)
    for target in (flat_dataset, flat_dataset / "labels", flat_dataset / "images" / "preds"):
        for extra in ([], ["--overwrite"]):
            argv = ["eval", str(ckpt), "--data", f"folder:{flat_dataset}", "--save-pred",
                    str(target), "--out", str(tmp_path / "m"), *extra]
            assert main(argv) == 1
            assert "dataset folder" in _error_line(capsys)
    assert main(["eval", str(ckpt), "--data", f"folder:{flat_dataset}",
                 "--out", str(flat_dataset / "labels" / "metrics")]) == 1
    assert "dataset folder" in _error_line(capsys)
    assert _digest(flat_dataset) == before  # not one file changed or added


def test_predict_into_a_dataset_root_is_refused(ckpt, flat_dataset, capsys):
    before = _digest(flat_dataset)
    for extra in ([], ["--overwrite"]):
        assert main(["predict", str(ckpt), str(flat_dataset / "images"), "-o", str(flat_dataset),
                     *extra]) == 1
        assert "dataset folder" in _error_line(capsys)
    assert _digest(flat_dataset) == before


def test_eval_save_pred_next_to_the_dataset_works(ckpt, flat_dataset, tmp_path, capsys):
    preds = tmp_path / "preds"
    assert main(["eval", str(ckpt), "--data", f"folder:{flat_dataset}", "--save-pred",
                 str(preds), "--json"]) == 0
    assert _last_json(capsys)["images"] == 2
    assert sorted(p.name for p in (preds / "labels").iterdir()) == ["img0.png", "img1.png"]
    assert (ckpt.parent / "eval-val" / "metrics.json").is_file()


# ------------------------------------------------------------------ item 3: outputs checked first
def test_eval_checks_its_output_folder_before_evaluating(ckpt, flat_dataset, tmp_path, capsys,
                                                          monkeypatch):
    import fasterseg.evaluation as ev

    calls = []
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for flag in ("--out", "--save-pred"):
        argv = ["eval", str(ckpt), "--data", f"folder:{flat_dataset}",
                "--out", str(tmp_path / "m"), flag, str(blocker / "sub")]
        assert main(argv) == 1
        assert "not writable" in _error_line(capsys)
    assert calls == []  # refused before a single image was evaluated


def test_eval_shows_the_metrics_when_saving_them_fails(ckpt, flat_dataset, tmp_path, capsys,
                                                       monkeypatch):
    import fasterseg.evaluation as ev

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ev, "save_confusion", full_disk)
    argv = ["eval", str(ckpt), "--data", f"folder:{flat_dataset}", "--out", str(tmp_path / "m"),
            "--json"]
    assert main(argv) == 1
    cap = capsys.readouterr()
    assert "mIoU" in cap.out  # the table was printed
    assert json.loads(cap.out.strip().splitlines()[-1])["images"] == 2  # and the JSON result
    err = [ln for ln in cap.err.strip().splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "evaluation finished" in err[0] and "No space left" in err[0]


# ------------------------------------------------------------------ item 8: no silent overwrite
def test_eval_save_pred_needs_overwrite_to_replace_files(ckpt, flat_dataset, tmp_path, capsys):
    preds = tmp_path / "preds"
    argv = ["eval", str(ckpt), "--data", f"folder:{flat_dataset}", "--save-pred", str(preds),
            "--out", str(tmp_path / "m")]
    assert main(argv) == 0
    _png(preds / "labels" / "img0.png", np.full((4, 4), 7, np.uint8))  # someone else's file
    capsys.readouterr()
    assert main(argv) == 1
    assert "--overwrite" in _error_line(capsys)
    assert np.asarray(Image.open(preds / "labels" / "img0.png")).shape == (4, 4)  # untouched
    assert main([*argv, "--overwrite"]) == 0
    assert Image.open(preds / "labels" / "img0.png").size == (96, 64)


def test_predict_output_inside_its_input_folder_is_not_an_input(ckpt, tmp_path, capsys):
    photos = tmp_path / "photos"
    _png(photos / "a.png", _rgb(0))
    _png(photos / "trip" / "b.jpg", _rgb(1, 70, 90))
    argv = ["predict", str(ckpt), str(photos), "-o", str(photos / "preds"), "--overlay", "--json"]
    assert main(argv) == 0
    assert _last_json(capsys)["images"] == 2
    assert main(argv) == 1  # a rerun would replace the predictions: asks for --overwrite
    assert "--overwrite" in _error_line(capsys)
    assert main([*argv, "--overwrite"]) == 0
    assert _last_json(capsys)["images"] == 2  # not 2 + its own 6 outputs
    out = photos / "preds"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "color/a.png", "color/trip/b.png", "labels/a.png", "labels/trip/b.png",
        "overlay/a.png", "overlay/trip/b.png"]
    # a glob over the input folder leaves the outputs out as well
    assert main(["predict", str(ckpt), str(photos / "**" / "*.png"), "-o", str(out),
                 "--overwrite", "--json"]) == 0
    assert _last_json(capsys)["images"] == 1


def test_predict_never_overwrites_an_input(ckpt, tmp_path, capsys):
    src = _png(tmp_path / "out" / "labels" / "x.png", _rgb(0))
    before = src.read_bytes()
    assert main(["predict", str(ckpt), str(src), "-o", str(tmp_path / "out"), "--overwrite"]) == 1
    assert "input image" in _error_line(capsys)
    assert src.read_bytes() == before


# ------------------------------------------------------------------ item 10: any image size
def test_predict_takes_tiny_and_thin_images(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    _png(src / "strip.png", _rgb(0, 20, 400))
    _png(src / "dot.png", _rgb(1, 5, 7))
    _png(src / "tall.png", _rgb(2, 300, 31))
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(src), "-o", str(out), "--json"]) == 0
    assert _last_json(capsys)["images"] == 3
    assert Image.open(out / "labels" / "strip.png").size == (400, 20)
    assert Image.open(out / "labels" / "dot.png").size == (7, 5)
    assert Image.open(out / "labels" / "tall.png").size == (31, 300)
    # a 32x32 sliding window and a small test scale pad each tile to the minimum as well
    assert main(["predict", str(ckpt), str(src / "tall.png"), "-o", str(tmp_path / "o2"),
                 "--window", "32x32", "--scales", "0.5", "1", "--flip"]) == 0


def test_infer_image_pads_to_the_minimum_size(tiny_arch):
    from fasterseg.evaluation import infer_image, pad_to_multiple
    from fasterseg.models import build_model

    x, size = pad_to_multiple(torch.ones(1, 3, 20, 400), min_size=64)
    assert x.shape[-2:] == (64, 416) and size == (20, 400)
    model = build_model(tiny_arch()).eval()
    assert infer_image(model, torch.randn(3, 20, 33)).shape == (3, 20, 33)


@pytest.mark.parametrize("command", ["info", "bench", "export"])
@pytest.mark.parametrize("size", ["32x32", "20x400", "64x32"])
def test_too_small_sizes_name_the_minimum(command, size, ckpt, tmp_path, capsys):
    argv = [command, str(ckpt), "--size", size]
    if command == "bench":
        argv += ["--seconds", "0.1"]
    if command == "export":
        argv += ["-o", str(tmp_path / "m.onnx")]
    assert main(argv) == 1
    line = _error_line(capsys)
    assert "too small" in line and "at least 64" in line
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ item 11: unreadable / 16-bit
def test_predict_unreadable_files_stop_or_are_skipped_and_listed(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    _png(src / "a.png", _rgb(0))
    (src / "broken.png").write_bytes(b"not an image at all")
    (src / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(src), "-o", str(out)]) == 1
    line = _error_line(capsys)
    assert "--skip-unreadable" in line and "2 of 3" in line
    assert not out.exists()  # refused before anything was written
    assert main(["predict", str(ckpt), str(src), "-o", str(out), "--skip-unreadable",
                 "--json"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert res["images"] == 1
    assert sorted(Path(s["file"]).name for s in res["skipped"]) == ["broken.png", "cut.jpg"]
    listed = cap.out[cap.out.index("skipped 2 unreadable file(s):"):]
    assert "broken.png" in listed and "cut.jpg" in listed
    assert main(["predict", str(ckpt), str(src / "broken.png"), "-o", str(tmp_path / "o2"),
                 "--skip-unreadable"]) == 1
    assert "could be read" in _error_line(capsys)


def test_predict_reads_16bit_images_scaled_not_white(ckpt, tmp_path, capsys, monkeypatch):
    import fasterseg.deploy.stream as stream
    from fasterseg.evaluation.predictions import denormalize

    gray16 = np.tile(np.linspace(0, 65535, 96), (64, 1)).astype(np.uint16)
    src = tmp_path / "g16.png"
    Image.fromarray(gray16).save(src)
    assert Image.open(src).mode.startswith("I")  # really a 16-bit file
    seen = []  # the normalised images the network gets
    real = stream.Normalizer.__call__
    monkeypatch.setattr(stream.Normalizer, "__call__",
                        lambda self, rgb: (seen.append(real(self, rgb)), seen[-1])[1])
    assert main(["predict", str(ckpt), str(src), "-o", str(tmp_path / "out")]) == 0
    assert "scaled to 8 bits" in capsys.readouterr().out
    rgb = denormalize(seen[0][0], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    row = rgb[0, :, 0].astype(int)
    assert row[0] <= 1 and row[-1] >= 254 and abs(row[48] - 128) <= 2  # the gradient, scaled


def test_to_rgb8_scales_every_high_depth_mode():
    from fasterseg.evaluation.images import to_rgb8

    g = np.array([[0, 32768, 65535]], np.uint16)
    for im in (Image.fromarray(g), Image.fromarray(g.astype(np.int32))):
        rgb, note = to_rgb8(im)
        assert rgb.dtype == np.uint8 and rgb[0, :, 0].tolist() == [0, 128, 255] and note
    rgb, _ = to_rgb8(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)))
    assert rgb[0, :, 1].tolist() == [0, 128, 255]
    rgb, note = to_rgb8(Image.fromarray(np.array([[0, 9, 200]], np.uint8)))
    assert rgb[0, :, 2].tolist() == [0, 9, 200] and note is None


# ------------------------------------------------------------------ item 16: one loader
def test_every_command_loads_a_run_directory(ckpt, flat_dataset, tmp_path, capsys):
    run = ckpt.parent  # holds best.pt
    assert main(["info", str(run), "--size", "64x96", "--json"]) == 0
    assert _last_json(capsys)["output_shape"] == [1, 3, 64, 96]
    assert main(["bench", str(run), "--size", "64x64", "--seconds", "0.05", "--json"]) == 0
    assert _last_json(capsys)["weights"] == "checkpoint"
    assert main(["predict", str(run), str(flat_dataset / "images" / "img0.png"),
                 "-o", str(tmp_path / "p"), "--json"]) == 0
    assert _last_json(capsys)["weights"] == "checkpoint"
    assert main(["eval", str(run), "--data", f"folder:{flat_dataset}", "--json"]) == 0
    assert _last_json(capsys)["weights"] == "checkpoint"
    # last.pt when there is no best.pt
    ckpt.rename(run / "last.pt")
    assert main(["info", str(run), "--size", "64x96", "--json"]) == 0
    (run / "last.pt").unlink()
    assert main(["info", str(run)]) == 1
    assert "no best.pt or last.pt" in _error_line(capsys)


def test_models_load_model_is_the_checkpoint_loader(ckpt):
    from fasterseg.engine import checkpoint as C
    from fasterseg.models import load_model

    m1, i1 = load_model(ckpt)
    m2, i2 = C.load_model(str(ckpt))
    assert i1 == i2 and i1["weights"] == i1["source"] == "checkpoint"
    assert i1["checkpoint"] == str(ckpt) and not m1.training
    a, b = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, info = load_model(ckpt.parent)  # a run directory
    assert info["checkpoint"] == str(ckpt)
    _, info = load_model("fasterseg_student")
    assert info["weights"] == "random" and info["num_classes"] == 19


@pytest.mark.parametrize("command", ["info", "bench", "export", "eval", "predict"])
def test_bad_checkpoints_are_one_line_errors_everywhere(command, flat_dataset, tmp_path, capsys,
                                                        tiny_arch):
    from fasterseg.models import build_model

    other = build_model(tiny_arch(num_classes=5))
    cases = {
        "shape": _save_ckpt(tmp_path / "shape.pt", tiny_arch(), extra_state={
            k: v for k, v in other.state_dict().items() if k.startswith("head.")}),
        "extra": _save_ckpt(tmp_path / "extra.pt", tiny_arch(),
                              extra_state={"stray.weight": torch.ones(2)}),
        "junk": tmp_path / "junk.pt",
        "missing": tmp_path / "nope.pt",
        "empty_dir": tmp_path / "empty_run",
    }
    cases["junk"].write_bytes(b"\x00garbage")
    cases["empty_dir"].mkdir()
    expect = {"shape": "does not match", "extra": "does not match", "junk": "cannot load",
              "missing": "not found", "empty_dir": "no best.pt"}
    for name, path in cases.items():
        argv = {
            "info": ["info", str(path), "--size", "64x64"],
            "bench": ["bench", str(path), "--size", "64x64", "--seconds", "0.05"],
            "export": ["export", str(path), "-o", str(tmp_path / "m.onnx"), "--size", "64x64"],
            "eval": ["eval", str(path), "--data", f"folder:{flat_dataset}",
                     "--out", str(tmp_path / "m")],
            "predict": ["predict", str(path), str(flat_dataset / "images"),
                        "-o", str(tmp_path / "p")],
        }[command]
        assert main(argv) == 1, name
        assert expect[name] in _error_line(capsys), name


def test_info_takes_the_architecture_class_count_of_a_json(tmp_path, capsys, tiny_arch):
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(tiny_arch()))
    assert main(["info", str(arch), "--size", "64x64", "--json"]) == 0
    assert _last_json(capsys)["output_shape"] == [1, 3, 64, 64]
    assert main(["predict", str(arch), str(_png(tmp_path / "a.png", _rgb(0))), "-o",
                 str(tmp_path / "o"), "--json"]) == 0
    assert len(_last_json(capsys)["class_pixel_counts"]) == 3
