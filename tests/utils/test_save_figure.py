"""Figures are saved atomically: never a truncated PNG after an error or a kill mid-save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fasterseg.utils.io import TEMP_NAME, save_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig


def _broken_savefig(self, fname, *a, **k):
    """Half a PNG into whatever savefig was given (a path or a file object), then fail."""
    if hasattr(fname, "write"):
        fname.write(PNG[:4])
    else:
        Path(fname).write_bytes(PNG[:4])
    raise KeyboardInterrupt  # a Ctrl-C or SIGTERM in the middle of the save


def test_save_figure_writes_the_image_and_no_temp_file(tmp_path):
    fig = _figure()
    path = save_figure(fig, tmp_path / "plot.png", dpi=50)
    assert path == tmp_path / "plot.png"
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    save_figure(fig, tmp_path / "plot.svg")  # format from the suffix
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:1000]


def test_an_error_during_save_keeps_the_previous_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    fig = _figure()
    (tmp_path / "plot.png").write_bytes(b"previous")
    temps = []

    def broken(self, fname, *a, **k):
        temps.extend(p.name for p in tmp_path.iterdir() if p.name != "plot.png")
        return _broken_savefig(self, fname, *a, **k)

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # the temp file is gone
    assert TEMP_NAME.match(temps[0])["target"] == "plot.png"  # beside the target, recognisable


def _training_curves(tmp_path: Path) -> Path:
    from fasterseg.pipeline.report import plot_training_curves
    from fasterseg.pipeline.stages import TrainRun

    (tmp_path / "teacher").mkdir()
    rows = [{"type": "iter", "step": s, "loss": 1.0 / s} for s in (1, 2)]
    rows.append({"type": "epoch", "epoch": 1, "val_miou": 0.3})
    (tmp_path / "teacher" / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    (tmp_path / "training_curves.png").write_bytes(b"previous")
    return plot_training_curves(tmp_path, [TrainRun("teacher", "t", "teacher", "arch.json")])


def _latency_ablation(tmp_path: Path) -> Path:
    from fasterseg.pipeline.ablate import plot_latency_ablation

    (tmp_path / "search").mkdir()
    rows = [{"type": "epoch", "stage": "search", "epoch": e, "student_best_miou": 0.1 * e,
             "student_latency_ms": 3.0 / e} for e in (1, 2)]
    (tmp_path / "search" / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    (tmp_path / "ablate").mkdir()
    (tmp_path / "ablate" / "latency_regularisation.png").write_bytes(b"previous")
    return plot_latency_ablation(tmp_path)


def _accuracy_latency(tmp_path: Path) -> Path:
    from fasterseg.pipeline.results import plot_accuracy_latency

    results = {"searched": {"latency_ms": 3.0, "val_miou": 0.5},
               "teacher": {"latency_ms": 9.0, "val_miou": 0.6}, "input_size": [32, 64]}
    (tmp_path / "accuracy_latency.png").write_bytes(b"previous")
    return plot_accuracy_latency(results, tmp_path / "accuracy_latency.png")


PLOTS = {"training_curves.png": _training_curves,
         "ablate/latency_regularisation.png": _latency_ablation,
         "accuracy_latency.png": _accuracy_latency}


@pytest.mark.parametrize("name", list(PLOTS))
def test_pipeline_plots_are_written_whole(tmp_path, name):
    path = PLOTS[name](tmp_path)
    assert path == tmp_path / name and path.read_bytes()[:8] == PNG
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", list(PLOTS))
def test_an_interrupted_pipeline_plot_keeps_the_previous_file(tmp_path, monkeypatch, name):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", _broken_savefig)
    with pytest.raises(KeyboardInterrupt):
        PLOTS[name](tmp_path)
    assert (tmp_path / name).read_bytes() == b"previous"  # not a truncated PNG
    assert not [p for p in (tmp_path / name).parent.iterdir() if p.name.endswith(".tmp")]
