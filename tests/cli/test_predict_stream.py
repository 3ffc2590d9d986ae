"""Issue 12 item 4: ``predict`` as a stream (reader thread, model, writer thread) over folders and
videos, ``--fast``/``--deploy``, its timing keys, and a clean stop on errors and Ctrl-C.

A tiny architecture, 64x96 generated images and a 5-frame generated video: seconds on CPU.
"""

from __future__ import annotations

import json
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasterseg.cli.main import main


def _rgb(seed: int, h: int = 64, w: int = 96) -> np.ndarray:
    """A smooth random scene (not noise), so a video codec keeps it recognisable."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


@pytest.fixture
def ckpt(tmp_path, tiny_arch) -> Path:
    from fasterseg.engine.checkpoint import arch_to_dict, save_checkpoint
    from fasterseg.models import build_model

    torch.manual_seed(0)
    model = build_model(tiny_arch())
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return save_checkpoint({"model": model.state_dict(), "arch": arch_to_dict(model.arch),
                            "num_classes": model.num_classes}, tmp_path / "run" / "best.pt")


@pytest.fixture
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for k in range(4):
        Image.fromarray(_rgb(k)).save(d / f"f{k}.png")
    Image.fromarray(_rgb(9, 70, 90)).save(d / "odd.jpg")  # another size: padded to 96x96
    return d


def _video(path: Path, frames: int = 5) -> Path:
    from fasterseg.data.video import VideoWriter

    with VideoWriter(path, fps=10) as w:
        for k in range(frames):
            w.write(_rgb(k))
    return path


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "--debug" not in err[0], err  # a user error, not an internal one
    return err[0]


def _pngs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("predict-")]


def test_predict_folder_writes_every_output_and_reports_stream_timing(ckpt, photos, tmp_path,
                                                                      capsys):
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(photos), "-o", str(out), "--overlay", "--threads", "1",
                 "--json"]) == 0
    res = _last_json(capsys)
    assert res["images"] == 5
    for key in ("fps_end_to_end", "model_ms", "decode_ms", "write_ms"):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert set(res["stage_ms"]) == {"decode", "normalize", "model", "argmax", "write"}
    assert res["path"] == "eager-fp32" and res["threads"] == 1
    assert res["bottleneck"] in ("read", "model", "write")
    assert sum(res["class_pixel_counts"]) == 4 * 64 * 96 + 70 * 90
    names = ["f0", "f1", "f2", "f3", "odd"]
    assert _pngs(out) == sorted(f"{d}/{n}.png" for d in ("color", "labels", "overlay")
                                for n in names)
    labels = np.asarray(Image.open(out / "labels" / "odd.png"))
    assert labels.shape == (70, 90)  # cropped back from the 96x96 padded input
    color = Image.open(out / "color" / "odd.png")
    assert color.mode == "P"  # a palette PNG: one byte per pixel, viewers show the colours
    from fasterseg.data.labels import default_palette

    pal = np.array(default_palette(3))  # a checkpoint without a label set: the default colours
    assert (np.asarray(color.convert("RGB")) == pal[labels]).all()
    overlay = np.asarray(Image.open(out / "overlay" / "odd.png")).astype(int)
    rgb = np.asarray(Image.open(photos / "odd.jpg").convert("RGB")).astype(int)  # as decoded
    expect = (rgb + pal[labels]) / 2
    assert np.abs(overlay - expect).max() <= 1
    assert not list(out.rglob("*.tmp")) and not _stream_threads()


def test_predict_matches_the_evaluation_path(ckpt, photos, tmp_path):
    """The stream's predictions are those of ``infer_image`` (pad, forward, crop, argmax)."""
    from fasterseg.data.io import read_image
    from fasterseg.data.transforms import normalize
    from fasterseg.evaluation import infer_image
    from fasterseg.models import load_model

    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(photos / "odd.jpg"), "-o", str(out)]) == 0
    model, _ = load_model(ckpt)
    x = normalize(read_image(photos / "odd.jpg"), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    expect = infer_image(model, x).argmax(0).numpy()
    assert (np.asarray(Image.open(out / "labels" / "odd.png")) == expect).all()


def test_normalizer_pads_like_the_evaluation(tmp_path):
    from fasterseg.data.transforms import normalize
    from fasterseg.deploy.stream import Normalizer, padded_size
    from fasterseg.evaluation.inference import MIN_SIZE, pad_to_multiple

    rgb = _rgb(3, 37, 101)
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    ref, _ = pad_to_multiple(normalize(rgb, mean, std)[None], min_size=MIN_SIZE)
    for cl in (False, True):
        x = Normalizer(mean, std, channels_last=cl)(rgb)
        assert x.shape == ref.shape and torch.equal(x, ref)
        assert x.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    for h, w in ((1, 1), (64, 64), (65, 200), (360, 480)):
        assert padded_size(h, w) == pad_to_multiple(torch.zeros(1, h, w), min_size=MIN_SIZE)[0] \
            .shape[-2:]


def test_predict_fast_gives_the_eager_predictions(ckpt, photos, tmp_path, capsys):
    pytest.importorskip("fasterseg.deploy.paths")
    eager, fast = tmp_path / "eager", tmp_path / "fast"
    assert main(["predict", str(ckpt), str(photos), "-o", str(eager), "--json"]) == 0
    assert _last_json(capsys)["path"] == "eager-fp32"
    assert main(["predict", str(ckpt), str(photos), "-o", str(fast), "--fast", "--json"]) == 0
    res = _last_json(capsys)
    assert res["path"] == "jit-fp32" and res["images"] == 5 and res["prepare_s"] > 0
    for name in _pngs(eager / "labels"):
        a = np.asarray(Image.open(eager / "labels" / name))
        b = np.asarray(Image.open(fast / "labels" / name))
        assert (a == b).all(), name
    # test-time augmentation runs the eager model and says so
    assert main(["predict", str(ckpt), str(photos / "f0.png"), "-o", str(tmp_path / "tta"),
                 "--fast", "--flip"]) == 0
    assert "--flip/--scales/--window run the eager model" in capsys.readouterr().out


def test_predict_deploy_runs_the_chosen_path_per_padded_size(ckpt, photos, tmp_path, capsys,
                                                             monkeypatch):
    from fasterseg.deploy.stream import EagerPredictor

    built = []

    class Chosen(EagerPredictor):
        name, backend, dtype = "fake-int8", "fake", "int8"

    def build_from_choice(model, choice, size):
        built.append(tuple(size))
        return Chosen(model, "cpu")

    fake = types.ModuleType("fasterseg.deploy.auto")
    fake.load_choice = lambda path: {"chosen": {"name": "fake-int8"}, "path": str(path)}
    fake.build_from_choice = build_from_choice
    monkeypatch.setitem(sys.modules, "fasterseg.deploy.auto", fake)
    choice = tmp_path / "choice.json"
    choice.write_text("{}")
    assert main(["predict", str(ckpt), str(photos), "-o", str(tmp_path / "o"), "--deploy",
                 str(choice), "--json"]) == 0
    res = _last_json(capsys)
    assert res["path"] == "fake-int8" and res["images"] == 5
    assert sorted(built) == [(64, 96), (96, 96)]  # one prepared path per padded size, once
    assert main(["predict", str(ckpt), str(photos), "-o", str(tmp_path / "o2"), "--deploy",
                 str(choice), "--fast"]) == 1
    assert "--fast and --deploy" in _error_line(capsys)


def _fake_choice(monkeypatch, tmp_path, name: str, backend: str, build) -> Path:
    """A choice file whose path ``build(model, choice, size)`` makes (no measuring, no calibration)."""
    fake = types.ModuleType("fasterseg.deploy.auto")
    fake.load_choice = lambda path: {"chosen": {"name": name, "backend": backend}, "threads": 2}
    fake.build_from_choice = build
    monkeypatch.setitem(sys.modules, "fasterseg.deploy.auto", fake)
    choice = tmp_path / "choice.json"
    choice.write_text("{}")
    return choice


def test_predict_deploy_honours_threads(ckpt, photos, tmp_path, capsys, monkeypatch):
    """``--threads`` means the same with ``--deploy`` as on the other paths (it was ignored for
    the choice's own count), split among ``--workers``; without it the choice's count runs."""
    from fasterseg.deploy.stream import EagerPredictor

    built = []

    class Chosen(EagerPredictor):
        name, backend, dtype = "fake-fp32", "torch", "fp32"

    def build_from_choice(model, choice, size):
        built.append(choice["threads"])
        return Chosen(model, "cpu")

    choice = _fake_choice(monkeypatch, tmp_path, "fake-fp32", "torch", build_from_choice)
    one = photos / "f0.png"
    runs = {("--threads", "1", "--workers", "1"): (1, 1, 1), ("--threads", "4", "--workers", "2"):
            (2, 4, 2), ("--workers", "1"): (2, 2, 1), ("--threads", "1"): (1, 1, 1)}
    for k, (extra, (per_call, total, workers)) in enumerate(runs.items()):
        built.clear()
        assert main(["predict", str(ckpt), str(one), "-o", str(tmp_path / f"o{k}"), "--deploy",
                     str(choice), *extra, "--json"]) == 0
        out = capsys.readouterr().out
        res = json.loads(out.strip().splitlines()[-1])
        assert built == [per_call], extra
        assert (res["threads"], res["threads_per_call"], res["workers"]) == (
            total, per_call, workers), extra
        assert ("measured with 2 threads" in out) == (total != 2), extra


def test_predict_video_writes_every_frame_and_an_overlay_video(ckpt, tmp_path, capsys):
    pytest.importorskip("av")
    from fasterseg.data.video import probe

    clip = _video(tmp_path / "clips" / "drive.mp4", frames=5)
    out, vid = tmp_path / "out", tmp_path / "clips" / "drive_overlay.mp4"
    argv = ["predict", str(ckpt), str(tmp_path / "clips" / "*.mp4"), "-o", str(out),
            "--video-out", str(vid), "--json"]
    assert main(argv) == 0
    res = _last_json(capsys)
    assert res["images"] == 5 and res["videos"][0]["frames"] == 5
    assert res["videos"][0]["fps"] == pytest.approx(10)
    assert _pngs(out / "labels") == [f"drive_{k:06d}.png" for k in range(5)]
    assert Image.open(out / "labels" / "drive_000004.png").size == (96, 64)
    info = probe(vid)
    assert (info.width, info.height, info.frames) == (96, 64, 5)
    assert res["video_out"] == str(vid)
    # a rerun would replace the frames and the video: refused without --overwrite
    assert main(argv) == 1
    assert "--overwrite" in _error_line(capsys)
    assert main([*argv, "--overwrite"]) == 0  # the glob does not pick up the overlay video
    assert _last_json(capsys)["images"] == 5
    assert clip.is_file()


def test_predict_without_pyav_is_one_line_with_the_install_hint(ckpt, tmp_path, capsys,
                                                                monkeypatch):
    clip = tmp_path / "drive.mp4"
    clip.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(clip), "-o", str(out)]) == 1
    line = _error_line(capsys)
    assert "PyAV" in line and "pip install 'fasterseg[video]'" in line
    assert not out.exists()


def test_an_error_in_the_writer_stops_everything_without_partial_files(ckpt, photos, tmp_path,
                                                                      capsys, monkeypatch):
    from fasterseg.deploy import stream
    from fasterseg.utils.io import atomic_write

    calls = []
    real = stream.StreamWriter._save

    def failing_save(self, path, img, *rest):
        calls.append(path)
        if len(calls) == 3:  # fails half-way through writing a file
            def half(f):
                f.write(b"\x89PNG partial")
                raise OSError(5, "Input/output error")

            atomic_write(path, half, mode="wb", fsync=False)
        real(self, path, img, *rest)

    monkeypatch.setattr(stream.StreamWriter, "_save", failing_save)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(photos), "-o", str(out)]) == 1
    line = _error_line(capsys)
    assert "cannot write predictions" in line and "Input/output error" in line
    assert len(calls) == 3  # nothing was written after the error
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))  # no temp files left
    assert len(_pngs(out)) == 2
    for p in out.rglob("*.png"):
        Image.open(p).load()  # every file left is complete
    assert not _stream_threads()  # reader and writer joined


def test_ctrl_c_stops_the_stream_and_drops_a_partial_video(ckpt, photos, tmp_path, capsys,
                                                           monkeypatch):
    pytest.importorskip("av")
    from fasterseg.deploy import stream

    real = stream.Segmenter.__call__
    seen = []

    def interrupt(self, x, size):
        seen.append(size)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(self, x, size)

    monkeypatch.setattr(stream.Segmenter, "__call__", interrupt)
    out, vid = tmp_path / "out", tmp_path / "v.mp4"
    assert main(["predict", str(ckpt), str(photos), "-o", str(out), "--video-out", str(vid)]) \
        == 130
    assert not vid.exists() and not list(tmp_path.glob(".v*"))  # no video, no temp video
    assert not list(out.rglob(".*")) and len(_pngs(out / "labels")) <= 2
    assert not _stream_threads()


def test_predict_deploy_openvino_honours_workers(ckpt, photos, tmp_path, capsys, monkeypatch):
    """An OpenVINO choice runs ``--workers 2``: one model compiled for two streams sharing the
    threads, two frames at once, the same labels as one worker (it used to run one at a time)."""
    pytest.importorskip("openvino")
    from fasterseg.deploy.openvino import OpenVINOPredictor, compile_openvino

    built = []

    def build_from_choice(model, choice, size, streams=1):
        pred = compile_openvino(model, size, "fp32", threads=choice["threads"], streams=streams)
        built.append(pred)
        return pred

    compiles = []
    real_compile = OpenVINOPredictor._compile
    monkeypatch.setattr(OpenVINOPredictor, "_compile",
                        lambda self, n: compiles.append(n) or real_compile(self, n))

    choice = _fake_choice(monkeypatch, tmp_path, "openvino-fp32", "openvino", build_from_choice)
    labels = {}
    for k in (1, 2):
        built.clear()
        compiles.clear()
        assert main(["predict", str(ckpt), str(photos), "-o", str(tmp_path / f"w{k}"),
                     "--deploy", str(choice), "--workers", str(k), "--json"]) == 0
        out = capsys.readouterr().out
        res = json.loads(out.strip().splitlines()[-1])
        assert (res["workers"], res["threads"], res["threads_per_call"]) == (k, 2, 2 // k)
        assert "runs one frame at a time" not in out
        assert [(p.streams, p.info["threads"]) for p in built] == [(k, 2)] * 2  # 2 padded sizes
        assert compiles == [k, k]  # each size compiled once, for its streams
        labels[k] = {n: np.asarray(Image.open(tmp_path / f"w{k}" / "labels" / n))
                     for n in _pngs(tmp_path / f"w{k}" / "labels")}
    assert len(labels[1]) == 5 and labels[1].keys() == labels[2].keys()
    assert all(np.array_equal(labels[1][n], labels[2][n]) for n in labels[1])
