"""No file or stdout line this package writes may contain ``NaN``/``Infinity`` (invalid JSON)."""

import json
import math

import numpy as np
import pytest

from fasterseg.cli.common import emit_json
from fasterseg.utils.io import write_json


def strict_loads(text: str):
    """``json.loads`` that rejects the NaN/Infinity tokens, as jq or a browser would."""
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=bad)


NASTY = {
    "miou": float("nan"),
    "per_class": [0.5, float("inf"), -float("inf")],
    "nested": {"t": (1.0, float("nan")), "np": np.float64("nan"), "ok": 0.25},
}
CLEAN = {"miou": None, "per_class": [0.5, None, None],
         "nested": {"t": [1.0, None], "np": None, "ok": 0.25}}


def test_write_json_turns_non_finite_into_null(tmp_path):
    p = write_json(tmp_path / "best.json", NASTY)
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert strict_loads(text) == CLEAN


def test_json_safe_and_dumps():
    from fasterseg.utils.io import json_dumps, json_safe

    assert json_safe(NASTY) == CLEAN
    assert strict_loads(json_dumps(NASTY)) == CLEAN
    # a default= converter (numpy float32 is not a float subclass) is made safe too
    assert strict_loads(json_dumps({"x": np.float32("nan")}, default=float)) == {"x": None}
    assert json_safe(3) == 3 and json_safe("nan") == "nan" and math.isnan(NASTY["miou"])


def test_write_json_failure_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "x.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_emit_json_is_strict(capsys):
    emit_json(NASTY)
    assert strict_loads(capsys.readouterr().out.strip()) == CLEAN


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os
    import stat

    from fasterseg.utils.io import write_json

    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
