"""search.png is written atomically: no temp file is left next to it, even when saving fails."""

from __future__ import annotations

import pytest

from fasterseg.engine.rundir import stale_temp_files
from fasterseg.utils.io import TEMP_NAME


def _history() -> list[dict]:
    rows = []
    for e in (1, 2):
        row = {"global_epoch": e, "val_miou_student_8": 0.1 * e, "student_latency_ms": 3.0 / e,
               "teacher_latency_ms": 5.0, "student_skip_share": 0.2, "teacher_skip_share": 0.0}
        for arch in ("student", "teacher"):
            for name in ("alpha", "beta", "gamma"):
                row[f"{arch}_entropy_{name}"] = 0.9 / e
        rows.append(row)
    return rows


def test_plot_leaves_only_search_png(tmp_path):
    from fasterseg.engine.search_monitor import plot_history

    out = plot_history(_history(), tmp_path / "search.png")
    assert out == tmp_path / "search.png"
    assert [p.name for p in tmp_path.iterdir()] == ["search.png"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_plot_removes_its_temp_file_and_keeps_the_old_png(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from fasterseg.engine.search_monitor import plot_history

    (tmp_path / "search.png").write_bytes(b"old")
    seen = []

    def broken(self, fname, *a, **k):
        seen.extend(p.name for p in tmp_path.iterdir() if p.name != "search.png")  # the temp file
        if not hasattr(fname, "write"):
            seen.append(str(fname).rsplit("/", 1)[-1])
        if hasattr(fname, "write"):  # half a file
            fname.write(b"\x89PNG")
        else:
            with open(fname, "wb") as f:
                f.write(b"\x89PNG")
        raise OSError("disk error (simulated)")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError):
        plot_history(_history(), tmp_path / "search.png")
    assert [p.name for p in tmp_path.iterdir()] == ["search.png"]
    assert (tmp_path / "search.png").read_bytes() == b"old"
    # a write killed mid-way leaves a name the run directory's stale-temp cleanup recognises
    name = seen[0]
    assert TEMP_NAME.match(name) and TEMP_NAME.match(name)["target"] == "search.png"
    (tmp_path / name).write_bytes(b"x")
    assert stale_temp_files(tmp_path) == [tmp_path / name]
